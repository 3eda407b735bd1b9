import { SourceProtocolError } from '@drkit/core';
import { child, children, childText, vimType, type XmlElement } from './soap/xml-tree.js';
import type { ManagedObjectReference } from './soap/xml-writer.js';
import { readRef } from './vmware-session.js';

/** The backing of a virtual device, as far as drkit reads it. */
export interface VirtualDeviceBacking {
  /** The backing's vim25 type, e.g. `VirtualDiskFlatVer2BackingInfo`, `VirtualDiskRawDiskMappingVer1BackingInfo`. */
  readonly type: string;
  /** `[datastore] folder/disk.vmdk`. */
  readonly fileName: string | undefined;
  readonly datastore: ManagedObjectReference | undefined;
  /** `persistent`, `independent_persistent`, `independent_nonpersistent`, ... */
  readonly diskMode: string | undefined;
  /** The CBT change id of the disk at this configuration (set once change tracking ran a stun). */
  readonly changeId: string | undefined;
  /** `sharingNone` or `sharingMultiWriter`. */
  readonly sharing: string | undefined;
  /** RDM: `physicalMode` or `virtualMode`. */
  readonly compatibilityMode: string | undefined;
  readonly thinProvisioned: boolean | undefined;
  readonly uuid: string | undefined;
}

/** One virtual device of `config.hardware.device`, as far as drkit reads it. */
export interface VirtualDeviceInfo {
  /** The device's vim25 type (`VirtualDisk`, `ParaVirtualSCSIController`). */
  readonly type: string;
  readonly key: number;
  /** `Hard disk 1`. */
  readonly label: string | undefined;
  readonly controllerKey: number | undefined;
  readonly unitNumber: number | undefined;
  /** Disks: `capacityInBytes` when the server sends it, else `capacityInKB` × 1024. */
  readonly capacityBytes: number | undefined;
  readonly backing: VirtualDeviceBacking | undefined;
  /** SCSI controllers: `noSharing`, `virtualSharing` or `physicalSharing`. */
  readonly sharedBus: string | undefined;
}

/** An xsd:int / xsd:long as a safe integer. @internal */
export function readInteger(text: string | undefined, what: string): number | undefined {
  if (text === undefined || text === '') return undefined;
  if (!/^-?\d+$/.test(text))
    throw new SourceProtocolError(`${what} is not an integer: ${JSON.stringify(text)}`);
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new SourceProtocolError(`${what} is too large: ${text}`);
  return value;
}

/** An xsd:boolean. @internal */
export function readBoolean(text: string | undefined): boolean | undefined {
  if (text === undefined || text === '') return undefined;
  return text === 'true' || text === '1';
}

function readBacking(element: XmlElement | undefined): VirtualDeviceBacking | undefined {
  if (!element) return undefined;
  return {
    type: vimType(element) ?? 'VirtualDeviceBackingInfo',
    fileName: childText(element, 'fileName'),
    datastore: readRef(child(element, 'datastore')),
    diskMode: childText(element, 'diskMode'),
    changeId: childText(element, 'changeId') || undefined,
    sharing: childText(element, 'sharing'),
    compatibilityMode: childText(element, 'compatibilityMode'),
    thinProvisioned: readBoolean(childText(element, 'thinProvisioned')),
    uuid: childText(element, 'uuid'),
  };
}

/**
 * Reads an `ArrayOfVirtualDevice` (the `val` of `config.hardware.device`): every device with its subtype from
 * `xsi:type`, resolved by namespace.
 * @internal
 */
export function readVirtualDevices(val: XmlElement): VirtualDeviceInfo[] {
  return children(val, 'VirtualDevice').map((device) => {
    const type = vimType(device) ?? 'VirtualDevice';
    const key = readInteger(childText(device, 'key'), `the key of a ${type}`);
    if (key === undefined) throw new SourceProtocolError(`a ${type} of config.hardware.device has no key`);
    const capacityInBytes = readInteger(
      childText(device, 'capacityInBytes'),
      `capacityInBytes of device ${key}`,
    );
    const capacityInKB = readInteger(childText(device, 'capacityInKB'), `capacityInKB of device ${key}`);
    const info = child(device, 'deviceInfo');
    return {
      type,
      key,
      label: info ? childText(info, 'label') : undefined,
      controllerKey: readInteger(childText(device, 'controllerKey'), `controllerKey of device ${key}`),
      unitNumber: readInteger(childText(device, 'unitNumber'), `unitNumber of device ${key}`),
      capacityBytes:
        capacityInBytes !== undefined && capacityInBytes > 0
          ? capacityInBytes
          : capacityInKB === undefined
            ? undefined
            : capacityInKB * 1024,
      backing: readBacking(child(device, 'backing')),
      sharedBus: childText(device, 'sharedBus'),
    };
  });
}

/** The datastore name of `[name] path`, if the path has one. @internal */
export function datastoreName(fileName: string | undefined): string | undefined {
  const match = fileName === undefined ? null : /^\[([^\]]*)\]/.exec(fileName);
  return match ? match[1] : undefined;
}

/** Backings of ordinary VMDK disks: snapshots cover them, CBT tracks them. */
const VMDK_BACKINGS = new Set([
  'VirtualDiskFlatVer2BackingInfo',
  'VirtualDiskFlatVer1BackingInfo',
  'VirtualDiskSparseVer2BackingInfo',
  'VirtualDiskSparseVer1BackingInfo',
  'VirtualDiskSeSparseBackingInfo',
]);

/** Backings that pass a LUN or a host disk through. */
const RAW_BACKINGS = new Set([
  'VirtualDiskRawDiskMappingVer1BackingInfo',
  'VirtualDiskRawDiskVer2BackingInfo',
  'VirtualDiskPartitionedRawDiskVer2BackingInfo',
]);

/** The reason words of a disk drkit does not protect. */
export type VmwareDiskSkipReason =
  | 'raw-device-mapping'
  | 'independent-disk'
  | 'vmware-shared-disk'
  | 'unsupported-disk';

/**
 * Whether drkit can protect a disk, and if not why: RDMs (no VMware snapshot covers a physical-mode RDM; drkit
 * reads no LUN), independent disks (snapshots skip them), disks shared between VMs (multi-writer, or on a SCSI
 * controller with bus sharing: VMware cannot snapshot them), and backings drkit does not know.
 * @internal
 */
export function classifyDisk(
  disk: VirtualDeviceInfo,
  controllers: ReadonlyMap<number, VirtualDeviceInfo>,
): { readonly reason: VmwareDiskSkipReason; readonly detail: string } | undefined {
  const backing = disk.backing;
  if (!backing) {
    return { reason: 'unsupported-disk', detail: 'the disk has no backing: nothing to read' };
  }
  if (RAW_BACKINGS.has(backing.type)) {
    const mode = backing.compatibilityMode ? ` in ${backing.compatibilityMode}` : '';
    return {
      reason: 'raw-device-mapping',
      detail:
        `a raw device mapping${mode} (${backing.type}): drkit reads virtual disks only` +
        (backing.compatibilityMode === 'physicalMode'
          ? ' (no VMware snapshot covers a physical-mode RDM)'
          : '') +
        '; protect the LUN on its storage, or install the drkit agent in the guest',
    };
  }
  if (!VMDK_BACKINGS.has(backing.type)) {
    return {
      reason: 'unsupported-disk',
      detail: `the disk's backing ${backing.type} is not a VMDK drkit can read`,
    };
  }
  if (backing.diskMode?.startsWith('independent')) {
    return {
      reason: 'independent-disk',
      detail:
        `an independent disk (${backing.diskMode}): VMware snapshots do not include it; change its mode to ` +
        'dependent (persistent) to protect it',
    };
  }
  if (backing.sharing === 'sharingMultiWriter') {
    return {
      reason: 'vmware-shared-disk',
      detail:
        'a disk shared between VMs (multi-writer sharing): VMware cannot snapshot it; protect it from inside ' +
        'the guest with the drkit agent',
    };
  }
  const controller = disk.controllerKey === undefined ? undefined : controllers.get(disk.controllerKey);
  if (controller?.sharedBus !== undefined && controller.sharedBus !== 'noSharing') {
    return {
      reason: 'vmware-shared-disk',
      detail:
        `the disk's SCSI controller shares its bus (${controller.sharedBus}, e.g. a guest cluster): VMware ` +
        'cannot snapshot it; protect it from inside the guest with the drkit agent',
    };
  }
  return undefined;
}
