import {
  type CallOptions,
  type CreateSnapshotOptions,
  type DiskSnapshot,
  type HostSnapshot,
  QuiesceFailedError,
  SourceProtocolError,
} from '@drkit/core';
import { child, children, childText, type XmlElement } from './soap/xml-tree.js';
import { escapeXml, type ManagedObjectReference, refElement } from './soap/xml-writer.js';
import { readVirtualDevices } from './vmware-devices.js';
import { vmwareFaultOf } from './vmware-errors.js';
import { parseDiskId } from './vmware-inventory.js';
import { objectSpec, retrieveObjects } from './vmware-property-collector.js';
import { readRef, type ServiceContent, type VmwareSession } from './vmware-session.js';
import { waitForTask } from './vmware-tasks.js';

/** What a {@link @drkit/core!DiskSnapshot.ref} of this provider holds (JSON): enough to query CBT and read the disk. */
export interface VmwareDiskSnapshotRef {
  readonly vm: string;
  readonly snapshot: string;
  readonly deviceKey: number;
  /** The disk's change id at the snapshot, when change tracking had run a stun by then. */
  readonly changeId: string | undefined;
  /** The disk's file at the snapshot (`[ds] vm/disk-000001.vmdk` is the delta the VM writes to after). */
  readonly fileName: string | undefined;
  readonly capacityBytes: number | undefined;
}

/** @internal */
export interface SnapshotContext {
  readonly session: VmwareSession;
  readonly sc: ServiceContent;
  readonly maxWaitSeconds: number;
}

async function readProperty(
  context: SnapshotContext,
  obj: ManagedObjectReference,
  path: string,
  options: CallOptions,
): Promise<XmlElement | undefined> {
  for await (const content of retrieveObjects(
    context.session,
    context.sc,
    objectSpec(obj, { type: obj.type, paths: [path] }),
    1,
    options,
  )) {
    return content.properties.get(path);
  }
  return undefined;
}

async function createOnce(
  context: SnapshotContext,
  vm: ManagedObjectReference,
  name: string,
  quiesce: boolean,
  options: CallOptions,
): Promise<ManagedObjectReference> {
  const answer = await context.session.call(
    'CreateSnapshot_Task',
    refElement('_this', vm) +
      `<name>${escapeXml(name)}</name><description>drkit backup snapshot</description>` +
      `<memory>false</memory><quiesce>${quiesce}</quiesce>`,
    options,
  );
  const task = readRef(child(answer, 'returnval'));
  if (!task) throw new SourceProtocolError('CreateSnapshot_Task answered no task');
  const result = await waitForTask(context.session, context.sc, task, `CreateSnapshot_Task of ${vm.value}`, {
    ...options,
    maxWaitSeconds: context.maxWaitSeconds,
  });
  const snapshot = result && readRef(result);
  if (!snapshot) throw new SourceProtocolError('CreateSnapshot_Task finished without a snapshot');
  return snapshot;
}

/**
 * Snapshots a VM (CreateSnapshot_Task, without memory), quiesced as asked: `required` refuses a VM whose VMware
 * Tools are not running before anything is created, and fails with a QuiesceFailedError when quiescing fails;
 * `preferred` falls back to a crash-consistent snapshot and says why in `detail`. Reads each disk's change id
 * from the snapshot's own configuration.
 * @internal
 */
export async function createVmSnapshot(
  context: SnapshotContext,
  vm: ManagedObjectReference,
  toolsRunningStatus: string | undefined,
  options: CreateSnapshotOptions,
): Promise<HostSnapshot> {
  const toolsRunning = toolsRunningStatus === 'guestToolsRunning';
  let quiesced = false;
  let detail: string | undefined;
  let snapshot: ManagedObjectReference;
  if (options.quiesce === 'none') {
    snapshot = await createOnce(context, vm, options.name, false, options);
  } else if (!toolsRunning) {
    const why = `VMware Tools are not running in ${options.host.name} (${toolsRunningStatus ?? 'status unknown'})`;
    if (options.quiesce === 'required') {
      throw new QuiesceFailedError(`${why}: cannot quiesce it; no snapshot was taken`, { retryable: false });
    }
    detail = `${why}: took a crash-consistent snapshot`;
    snapshot = await createOnce(context, vm, options.name, false, options);
  } else {
    try {
      snapshot = await createOnce(context, vm, options.name, true, options);
      quiesced = true;
    } catch (error) {
      if (options.signal?.aborted) throw error;
      const fault = vmwareFaultOf(error);
      if (!fault) throw error;
      // A failed quiesced snapshot is removed by vSphere itself; make sure nothing of that name is left.
      await releaseVmSnapshot(context, vm, options.name, options).catch(() => undefined);
      if (options.quiesce === 'required') {
        throw new QuiesceFailedError(
          `quiescing ${options.host.name} failed (${fault.type}${fault.message ? `: ${fault.message}` : ''}); ` +
            'no snapshot was left',
          { cause: error },
        );
      }
      detail = `quiescing failed (${fault.type}): took a crash-consistent snapshot`;
      snapshot = await createOnce(context, vm, options.name, false, options);
    }
  }
  const devicesVal = await readProperty(context, snapshot, 'config.hardware.device', options);
  const devices = devicesVal ? readVirtualDevices(devicesVal) : [];
  const disks: DiskSnapshot[] = [];
  for (const disk of options.host.disks) {
    const deviceKey = parseDiskId(disk.id)?.deviceKey;
    const device = devices.find((d) => d.key === deviceKey && d.type === 'VirtualDisk');
    if (deviceKey === undefined || !device) continue;
    const ref: VmwareDiskSnapshotRef = {
      vm: vm.value,
      snapshot: snapshot.value,
      deviceKey,
      changeId: device.backing?.changeId,
      fileName: device.backing?.fileName,
      capacityBytes: device.capacityBytes,
    };
    disks.push({ diskId: disk.id, ref: JSON.stringify(ref) });
  }
  return {
    hostId: options.host.id,
    name: options.name,
    providerId: snapshot.value,
    disks,
    consistency: quiesced ? 'application' : 'host',
    ...(detail === undefined ? {} : { detail }),
  };
}

function collectByName(tree: XmlElement, name: string, found: ManagedObjectReference[]): void {
  if (childText(tree, 'name') === name) {
    const ref = readRef(child(tree, 'snapshot'));
    if (ref) found.push(ref);
  }
  for (const nested of children(tree, 'childSnapshotList')) collectByName(nested, name, found);
}

/**
 * Removes every snapshot of the VM with this name (RemoveSnapshot_Task, children kept, disks consolidated), then
 * consolidates when the VM still reports `consolidationNeeded`. A snapshot already gone is not an error.
 * Returns how many were removed.
 * @internal
 */
export async function releaseVmSnapshot(
  context: SnapshotContext,
  vm: ManagedObjectReference,
  name: string,
  options: CallOptions,
): Promise<number> {
  const info = await readProperty(context, vm, 'snapshot', options);
  const found: ManagedObjectReference[] = [];
  if (info) for (const tree of children(info, 'rootSnapshotList')) collectByName(tree, name, found);
  for (const snapshot of found) {
    const answer = await context.session.call(
      'RemoveSnapshot_Task',
      `${refElement('_this', snapshot)}<removeChildren>false</removeChildren><consolidate>true</consolidate>`,
      options,
    );
    const task = readRef(child(answer, 'returnval'));
    if (task) {
      await waitForTask(context.session, context.sc, task, `RemoveSnapshot_Task of ${snapshot.value}`, {
        ...options,
        maxWaitSeconds: context.maxWaitSeconds,
      });
    }
  }
  const consolidation = await readProperty(context, vm, 'runtime.consolidationNeeded', options);
  if (consolidation?.text.trim() === 'true') {
    const answer = await context.session.call('ConsolidateVMDisks_Task', refElement('_this', vm), options);
    const task = readRef(child(answer, 'returnval'));
    if (task) {
      await waitForTask(context.session, context.sc, task, `ConsolidateVMDisks_Task of ${vm.value}`, {
        ...options,
        maxWaitSeconds: context.maxWaitSeconds,
      });
    }
  }
  return found.length;
}

/**
 * Turns change tracking on (ReconfigVM_Task with `changeTrackingEnabled`) unless it is on. A running VM starts
 * tracking at its next stun (the next snapshot): the first backup after is a full read. Returns whether it changed.
 * @internal
 */
export async function enableVmChangeTracking(
  context: SnapshotContext,
  vm: ManagedObjectReference,
  options: CallOptions,
): Promise<boolean> {
  const current = await readProperty(context, vm, 'config.changeTrackingEnabled', options);
  if (current?.text.trim() === 'true') return false;
  const answer = await context.session.call(
    'ReconfigVM_Task',
    `${refElement('_this', vm)}<spec><changeTrackingEnabled>true</changeTrackingEnabled></spec>`,
    options,
  );
  const task = readRef(child(answer, 'returnval'));
  if (!task) throw new SourceProtocolError('ReconfigVM_Task answered no task');
  await waitForTask(context.session, context.sc, task, `ReconfigVM_Task of ${vm.value}`, {
    ...options,
    maxWaitSeconds: context.maxWaitSeconds,
  });
  return true;
}
