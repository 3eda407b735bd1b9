import type { Disk, Host, SkippedDisk } from '@drkit/core';
import { children, type XmlElement } from './soap/xml-tree.js';
import type { ManagedObjectReference } from './soap/xml-writer.js';
import {
  classifyDisk,
  datastoreName,
  readBoolean,
  readVirtualDevices,
  type VirtualDeviceInfo,
} from './vmware-devices.js';
import type { ObjectContent } from './vmware-property-collector.js';
import { readRef } from './vmware-session.js';

/** The VM properties the inventory reads (one PropertyCollector round trip per page of VMs). @internal */
export const VM_PROPERTIES = [
  'name',
  'config.instanceUuid',
  'config.uuid',
  'config.guestFullName',
  'config.guestId',
  'config.version',
  'config.template',
  'config.changeTrackingEnabled',
  'config.hardware.device',
  'runtime.powerState',
  'runtime.host',
  'runtime.consolidationNeeded',
  'guest.toolsRunningStatus',
] as const;

/** A virtual machine as the inventory read it. */
export interface VmwareVirtualMachine {
  readonly ref: ManagedObjectReference;
  readonly name: string;
  /** vCenter's instance UUID (`config.instanceUuid`): the host id drkit files points under. */
  readonly instanceUuid: string | undefined;
  /** The BIOS UUID (`config.uuid`). */
  readonly biosUuid: string | undefined;
  /** `poweredOn`, `poweredOff` or `suspended`. */
  readonly powerState: string | undefined;
  readonly guestFullName: string | undefined;
  readonly guestId: string | undefined;
  /** `vmx-19`. */
  readonly hardwareVersion: string | undefined;
  readonly template: boolean;
  readonly changeTrackingEnabled: boolean;
  readonly consolidationNeeded: boolean;
  /** `guestToolsRunning`, `guestToolsNotRunning`, ... */
  readonly toolsRunningStatus: string | undefined;
  readonly esxiHost: ManagedObjectReference | undefined;
  readonly devices: readonly VirtualDeviceInfo[];
}

function text(properties: ReadonlyMap<string, XmlElement>, path: string): string | undefined {
  const val = properties.get(path);
  return val === undefined ? undefined : val.text.trim();
}

/** Reads one VirtualMachine ObjectContent. @internal */
export function readVirtualMachine(content: ObjectContent): VmwareVirtualMachine {
  const p = content.properties;
  const devices = p.get('config.hardware.device');
  return {
    ref: content.obj,
    name: text(p, 'name') ?? content.obj.value,
    instanceUuid: text(p, 'config.instanceUuid') || undefined,
    biosUuid: text(p, 'config.uuid') || undefined,
    powerState: text(p, 'runtime.powerState'),
    guestFullName: text(p, 'config.guestFullName'),
    guestId: text(p, 'config.guestId'),
    hardwareVersion: text(p, 'config.version'),
    template: readBoolean(text(p, 'config.template')) ?? false,
    changeTrackingEnabled: readBoolean(text(p, 'config.changeTrackingEnabled')) ?? false,
    consolidationNeeded: readBoolean(text(p, 'runtime.consolidationNeeded')) ?? false,
    toolsRunningStatus: text(p, 'guest.toolsRunningStatus'),
    esxiHost: readRef(p.get('runtime.host')),
    devices: devices ? readVirtualDevices(devices) : [],
  };
}

/** The host id of a VM: its instance UUID, else its BIOS UUID, else its managed object id. @internal */
export function hostIdOf(vm: Pick<VmwareVirtualMachine, 'instanceUuid' | 'biosUuid' | 'ref'>): string {
  return vm.instanceUuid ?? vm.biosUuid ?? `moref:${vm.ref.value}`;
}

/** The disk id of a VM's disk: `<host id>:<device key>` (the key is stable for the disk's life in the VM). */
export function diskIdOf(hostId: string, deviceKey: number): string {
  return `${hostId}:${deviceKey}`;
}

/** Parses a disk id back to its host id and device key. @internal */
export function parseDiskId(diskId: string): { hostId: string; deviceKey: number } | undefined {
  const colon = diskId.lastIndexOf(':');
  if (colon <= 0) return undefined;
  const deviceKey = Number(diskId.slice(colon + 1));
  return Number.isSafeInteger(deviceKey) ? { hostId: diskId.slice(0, colon), deviceKey } : undefined;
}

/**
 * Maps a VM to a drkit host: its protectable disks in device order, and the others in `skippedDisks` with the
 * reason (`raw-device-mapping`, `independent-disk`, `vmware-shared-disk`, `unsupported-disk`).
 * @internal
 */
export function virtualMachineToHost(vm: VmwareVirtualMachine, platformId: string): Host {
  const hostId = hostIdOf(vm);
  const controllers = new Map<number, VirtualDeviceInfo>();
  for (const device of vm.devices) if (device.type !== 'VirtualDisk') controllers.set(device.key, device);
  const disks: Disk[] = [];
  const skippedDisks: SkippedDisk[] = [];
  for (const device of vm.devices) {
    if (device.type !== 'VirtualDisk') continue;
    const id = diskIdOf(hostId, device.key);
    const name = device.label ?? `disk ${device.key}`;
    const skip = classifyDisk(device, controllers);
    if (skip) {
      skippedDisks.push({ id, name, reason: skip.reason, detail: skip.detail });
      continue;
    }
    const backing = device.backing!;
    const attributes: Record<string, string> = { 'vmware.deviceKey': String(device.key) };
    if (backing.fileName !== undefined) attributes['vmware.fileName'] = backing.fileName;
    const datastore = datastoreName(backing.fileName);
    if (datastore !== undefined) attributes['vmware.datastore'] = datastore;
    if (backing.datastore) attributes['vmware.datastoreId'] = backing.datastore.value;
    attributes['vmware.backing'] = backing.type;
    if (backing.diskMode !== undefined) attributes['vmware.diskMode'] = backing.diskMode;
    if (backing.sharing !== undefined) attributes['vmware.sharing'] = backing.sharing;
    if (backing.thinProvisioned !== undefined)
      attributes['vmware.thinProvisioned'] = String(backing.thinProvisioned);
    if (backing.changeId !== undefined) attributes['vmware.changeId'] = backing.changeId;
    if (device.controllerKey !== undefined) attributes['vmware.controllerKey'] = String(device.controllerKey);
    if (device.unitNumber !== undefined) attributes['vmware.unitNumber'] = String(device.unitNumber);
    disks.push({ id, hostId, name, capacityBytes: device.capacityBytes ?? 0, attributes });
  }
  const attributes: Record<string, string> = { 'vmware.moref': vm.ref.value };
  if (vm.powerState !== undefined) attributes['vmware.powerState'] = vm.powerState;
  if (vm.guestFullName !== undefined) attributes['vmware.guestOs'] = vm.guestFullName;
  if (vm.guestId !== undefined) attributes['vmware.guestId'] = vm.guestId;
  if (vm.hardwareVersion !== undefined) attributes['vmware.hardwareVersion'] = vm.hardwareVersion;
  attributes['vmware.changeTracking'] = vm.changeTrackingEnabled ? 'enabled' : 'disabled';
  if (vm.toolsRunningStatus !== undefined) attributes['vmware.toolsRunningStatus'] = vm.toolsRunningStatus;
  if (vm.consolidationNeeded) attributes['vmware.consolidationNeeded'] = 'true';
  if (vm.biosUuid !== undefined) attributes['vmware.biosUuid'] = vm.biosUuid;
  if (vm.esxiHost) attributes['vmware.esxiHost'] = vm.esxiHost.value;
  return {
    id: hostId,
    name: vm.name,
    platformId,
    disks,
    ...(skippedDisks.length > 0 ? { skippedDisks } : {}),
    attributes,
  };
}

/** A datacenter, a cluster or an ESXi host of the platform. */
export interface VmwareInventoryObject {
  readonly id: string;
  readonly name: string;
}

/** What `VmwarePlatform.inventory()` lists besides the VMs. */
export interface VmwareInventory {
  readonly datacenters: readonly VmwareInventoryObject[];
  /** Clusters with the number of ESXi hosts in each. */
  readonly clusters: readonly (VmwareInventoryObject & { readonly hostCount: number })[];
  /** ESXi hosts with their connection state (`connected`, `disconnected`, `notResponding`). */
  readonly esxiHosts: readonly (VmwareInventoryObject & { readonly connectionState: string | undefined })[];
}

/** The object types and properties `inventory()` reads through one container view. @internal */
export const INVENTORY_SELECTIONS = [
  { type: 'Datacenter', paths: ['name'] },
  { type: 'ClusterComputeResource', paths: ['name', 'host'] },
  { type: 'HostSystem', paths: ['name', 'runtime.connectionState'] },
] as const;

/** Sorts one page of inventory objects into the inventory. @internal */
export function addInventoryObject(
  inventory: {
    datacenters: VmwareInventoryObject[];
    clusters: (VmwareInventoryObject & { hostCount: number })[];
    esxiHosts: (VmwareInventoryObject & { connectionState: string | undefined })[];
  },
  content: ObjectContent,
): void {
  const name = text(content.properties, 'name') ?? content.obj.value;
  const id = content.obj.value;
  if (content.obj.type === 'Datacenter') inventory.datacenters.push({ id, name });
  else if (content.obj.type === 'ClusterComputeResource') {
    const hosts = content.properties.get('host');
    const hostCount = hosts ? children(hosts, 'ManagedObjectReference').length : 0;
    inventory.clusters.push({ id, name, hostCount });
  } else if (content.obj.type === 'HostSystem') {
    inventory.esxiHosts.push({
      id,
      name,
      connectionState: text(content.properties, 'runtime.connectionState'),
    });
  }
}
