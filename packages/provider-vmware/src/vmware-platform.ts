import {
  abnormalStatus,
  type CallOptions,
  type ChangedBlockReader,
  type CreateSnapshotOptions,
  type Host,
  type HostSnapshot,
  NotFoundError,
  type Platform,
  type PlatformCapabilities,
  type PlatformStatus,
  type ReleaseSnapshotOptions,
} from '@drkit/core';
import { createVimSoapClient } from './soap/vim-soap-client.js';
import { child } from './soap/xml-tree.js';
import { escapeXml, type ManagedObjectReference, refElement } from './soap/xml-writer.js';
import { createVmwareChangedBlockReader } from './vmware-changed-block-reader.js';
import { createConnectionBudget } from './vmware-connection-budget.js';
import {
  addInventoryObject,
  hostIdOf,
  INVENTORY_SELECTIONS,
  readVirtualMachine,
  VM_PROPERTIES,
  type VmwareInventory,
  type VmwareVirtualMachine,
  virtualMachineToHost,
} from './vmware-inventory.js';
import { resolveVmwareOptions, type VmwarePlatformOptions, type VmwareTransport } from './vmware-options.js';
import {
  containerViewSpec,
  objectSpec,
  retrieveObjects,
  withContainerView,
} from './vmware-property-collector.js';
import { createVmwareSession, readRef, type ServiceContent, type VmwareSession } from './vmware-session.js';
import {
  createVmSnapshot,
  enableVmChangeTracking,
  releaseVmSnapshot,
  type SnapshotContext,
} from './vmware-snapshots.js';

/** {@link @drkit/core!PlatformStatus} with what vSphere said about itself, when `normal`. */
export type VmwarePlatformStatus =
  | (Extract<PlatformStatus, { status: 'normal' }> & {
      /** `vcenter` or `esxi`. */
      readonly endpoint: 'vcenter' | 'esxi';
      /** The server's product name and build, e.g. `VMware vCenter Server 8.0.2 build-22617221`. */
      readonly product: string;
      readonly apiVersion: string;
      /** ESXi hosts, connected or not. */
      readonly esxiHostCount: number;
      /** Clusters with the number of hosts in each (the console's "number of cluster hosts"). */
      readonly clusters: VmwareInventory['clusters'];
    })
  | Extract<PlatformStatus, { status: 'abnormal' }>;

/** Where and as whom a platform connects, without the password. */
export interface VmwareConnectionInfo {
  /** The SDK endpoint, `https://host:port/sdk`. */
  readonly url: string;
  readonly username: string;
  readonly transport: VmwareTransport;
}

/** A {@link @drkit/core!Platform} over a vCenter or one ESXi host. */
export interface VmwarePlatform extends Platform, AsyncDisposable {
  readonly kind: 'vmware';
  readonly connection: VmwareConnectionInfo;
  /**
   * Logs in and counts the VMs (drkit's hosts), ESXi hosts and clusters: `normal` with the counts, or `abnormal`
   * with the reason and the error's code (`AUTHENTICATION_FAILED`, `UNREACHABLE`, `PERMISSION_DENIED`). Throws only
   * when aborted.
   */
  verify(options?: CallOptions): Promise<VmwarePlatformStatus>;
  /**
   * Lists the VMs (templates left out) page by page, each with its disks, and the disks drkit cannot protect in
   * `skippedDisks` with the reason.
   *
   * @throws {@link @drkit/core!AuthenticationError}, {@link @drkit/core!UnreachableError},
   * {@link @drkit/core!PermissionError} naming the missing privilege.
   */
  hosts(options?: CallOptions): AsyncIterable<Host>;
  /**
   * One VM by its host id (instance UUID), found through the SearchIndex without listing every VM.
   *
   * @throws {@link @drkit/core!NotFoundError} when no VM has that id; the access errors of {@link VmwarePlatform.hosts}.
   */
  host(hostId: string, options?: CallOptions): Promise<Host>;
  /**
   * Datacenters, clusters with their host counts, and ESXi hosts.
   *
   * @throws the access errors of {@link VmwarePlatform.hosts}.
   */
  inventory(options?: CallOptions): Promise<VmwareInventory>;
  /**
   * Snapshots the VM (without memory) quiesced as asked, and reads each disk's change id from the snapshot.
   *
   * @throws {@link @drkit/core!QuiesceFailedError} when `quiesce` is `required` and VMware Tools are not running
   * (nothing is created) or quiescing failed (nothing is left); {@link @drkit/core!PermissionError} naming
   * `VirtualMachine.State.CreateSnapshot` when the user lacks it.
   */
  createSnapshot(options: CreateSnapshotOptions): Promise<HostSnapshot>;
  /**
   * Removes the VM's snapshots with this name (and consolidates the disks when vSphere asks). Idempotent.
   *
   * @throws {@link @drkit/core!PermissionError} naming `VirtualMachine.State.RemoveSnapshot` when the user lacks it.
   */
  releaseSnapshot(options: ReleaseSnapshotOptions): Promise<void>;
  /**
   * Turns Changed Block Tracking on for a VM when it is off (`changeTrackingEnabled`); resolves with whether it
   * changed anything. A running VM starts tracking at its next snapshot.
   *
   * @throws {@link @drkit/core!PermissionError} naming `VirtualMachine.Config.ChangeTracking`; NotFoundError.
   */
  enableChangeTracking(hostId: string, options?: CallOptions): Promise<{ readonly changed: boolean }>;
  /** Logs out and closes the connections. Idempotent; the platform logs in again if used after. */
  close(options?: CallOptions): Promise<void>;
}

const CAPABILITIES: PlatformCapabilities = {
  snapshots: 'host',
  quiesce: true,
  retainsSnapshotAsBase: false,
  changeTracking: 'exact',
};

/**
 * Creates the platform of a vCenter or of one ESXi host. Nothing connects until a call: `verify()` logs in and
 * counts; `hosts()` lists VMs through a container view and the PropertyCollector, page by page.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming the field (`url`, `tls.thumbprint`, `pageSize`) when the
 * options are invalid. The password is never part of a message.
 * @example
 * ```ts
 * import { createVmwarePlatform } from '@drkit/provider-vmware';
 *
 * await using platform = createVmwarePlatform({
 *   id: 'vcenter-prod',
 *   url: 'https://vcenter.example.com',
 *   username: 'backup@vsphere.local',
 *   password: process.env.VSPHERE_PASSWORD!,
 *   tls: { thumbprint: 'AB:CD:...:EF' },
 * });
 * console.log(await platform.verify()); // { status: 'normal', hostCount: 42, esxiHostCount: 3, ... }
 * for await (const host of platform.hosts()) console.log(host.name, host.disks.length, host.skippedDisks ?? []);
 * ```
 */
export function createVmwarePlatform(options: VmwarePlatformOptions): VmwarePlatform {
  const settings = resolveVmwareOptions(options);
  const client = createVimSoapClient({
    sdkUrl: settings.sdkUrl,
    tls: settings.tls,
    requestTimeoutMs: settings.httpTimeoutSeconds * 1000,
    soapAction: `urn:vim25/${settings.apiVersion}`,
    logger: settings.logger,
  });
  const session: VmwareSession = createVmwareSession(client, settings);
  const budget = createConnectionBudget(settings.limits);
  const reader: ChangedBlockReader = createVmwareChangedBlockReader({ session, client, settings, budget });

  function withLogger(callOptions: CallOptions | undefined): CallOptions {
    return {
      ...callOptions,
      ...(callOptions?.logger || !settings.logger ? {} : { logger: settings.logger }),
    };
  }

  async function* virtualMachines(
    sc: ServiceContent,
    paths: readonly string[],
    callOptions: CallOptions,
  ): AsyncGenerator<VmwareVirtualMachine> {
    yield* withContainerView(
      session,
      sc,
      ['VirtualMachine'],
      async function* (view) {
        for await (const content of retrieveObjects(
          session,
          sc,
          containerViewSpec(view, [{ type: 'VirtualMachine', paths }]),
          settings.pageSize,
          callOptions,
        )) {
          yield readVirtualMachine(content);
        }
      },
      callOptions,
    );
  }

  async function* hosts(callOptions?: CallOptions): AsyncGenerator<Host> {
    const o = withLogger(callOptions);
    const sc = await session.serviceContent(o);
    for await (const vm of virtualMachines(sc, VM_PROPERTIES, o)) {
      if (vm.template) continue;
      yield virtualMachineToHost(vm, settings.id);
    }
  }

  async function findVm(sc: ServiceContent, hostId: string, o: CallOptions): Promise<ManagedObjectReference> {
    if (hostId.startsWith('moref:')) return { type: 'VirtualMachine', value: hostId.slice('moref:'.length) };
    if (!sc.searchIndex)
      throw new NotFoundError(`no VM has the id ${hostId}: this server has no SearchIndex`);
    for (const instanceUuid of [true, false]) {
      const answer = await session.call(
        'FindByUuid',
        `${refElement('_this', sc.searchIndex)}<uuid>${escapeXml(hostId)}</uuid><vmSearch>true</vmSearch>` +
          `<instanceUuid>${instanceUuid}</instanceUuid>`,
        o,
      );
      const ref = readRef(child(answer, 'returnval'));
      if (ref) return ref;
    }
    throw new NotFoundError(`no VM of platform ${settings.id} has the instance or BIOS UUID ${hostId}`);
  }

  async function host(hostId: string, callOptions?: CallOptions): Promise<Host> {
    const o = withLogger(callOptions);
    const sc = await session.serviceContent(o);
    const ref = await findVm(sc, hostId, o);
    for await (const content of retrieveObjects(
      session,
      sc,
      objectSpec(ref, { type: 'VirtualMachine', paths: VM_PROPERTIES }),
      1,
      o,
    )) {
      const vm = readVirtualMachine(content);
      if (hostIdOf(vm) === hostId || hostId === `moref:${vm.ref.value}` || vm.biosUuid === hostId) {
        return virtualMachineToHost(vm, settings.id);
      }
    }
    throw new NotFoundError(`no VM of platform ${settings.id} has the id ${hostId}`);
  }

  async function inventory(callOptions?: CallOptions): Promise<VmwareInventory> {
    const o = withLogger(callOptions);
    const sc = await session.serviceContent(o);
    const result = {
      datacenters: [] as VmwareInventory['datacenters'][number][],
      clusters: [] as VmwareInventory['clusters'][number][],
      esxiHosts: [] as VmwareInventory['esxiHosts'][number][],
    };
    const types = INVENTORY_SELECTIONS.map((s) => s.type);
    for await (const content of withContainerView(
      session,
      sc,
      types,
      (view) =>
        retrieveObjects(session, sc, containerViewSpec(view, INVENTORY_SELECTIONS), settings.pageSize, o),
      o,
    )) {
      addInventoryObject(result, content);
    }
    return result;
  }

  async function verify(callOptions?: CallOptions): Promise<VmwarePlatformStatus> {
    const o = withLogger(callOptions);
    try {
      await session.login(o);
      const sc = await session.serviceContent(o);
      let hostCount = 0;
      for await (const vm of virtualMachines(sc, ['config.template'], o)) if (!vm.template) hostCount += 1;
      const found = await inventory(o);
      return {
        status: 'normal',
        hostCount,
        checkedAt: new Date().toISOString(),
        endpoint: sc.about.apiType === 'HostAgent' ? 'esxi' : 'vcenter',
        product: sc.about.fullName,
        apiVersion: sc.about.apiVersion,
        esxiHostCount: found.esxiHosts.length,
        clusters: found.clusters,
      };
    } catch (error) {
      return abnormalStatus(error, { ...(o.signal ? { signal: o.signal } : {}) });
    }
  }

  function snapshotContext(sc: ServiceContent): SnapshotContext {
    // The server holds a WaitForUpdatesEx this long; the HTTP timeout must outlast it.
    return { session, sc, maxWaitSeconds: Math.max(1, Math.min(60, settings.httpTimeoutSeconds - 5)) };
  }

  async function vmOf(
    sc: ServiceContent,
    target: Pick<Host, 'id'> & { readonly attributes?: Readonly<Record<string, string>> | undefined },
    o: CallOptions,
  ): Promise<ManagedObjectReference> {
    const moref = target.attributes?.['vmware.moref'];
    return moref ? { type: 'VirtualMachine', value: moref } : findVm(sc, target.id, o);
  }

  async function createSnapshot(callOptions: CreateSnapshotOptions): Promise<HostSnapshot> {
    const o = { ...callOptions, ...withLogger(callOptions) };
    const sc = await session.serviceContent(o);
    const vm = await vmOf(sc, callOptions.host, o);
    const current = await host(callOptions.host.id, o);
    return createVmSnapshot(snapshotContext(sc), vm, current.attributes?.['vmware.toolsRunningStatus'], o);
  }

  async function releaseSnapshot(callOptions: ReleaseSnapshotOptions): Promise<void> {
    const o = withLogger(callOptions);
    const sc = await session.serviceContent(o);
    let vm: ManagedObjectReference;
    try {
      vm = await findVm(sc, callOptions.hostId, o);
    } catch (error) {
      if (NotFoundError.isInstance(error)) return; // the VM is gone, and its snapshots with it
      throw error;
    }
    await releaseVmSnapshot(snapshotContext(sc), vm, callOptions.name, o);
  }

  async function enableChangeTracking(
    hostId: string,
    callOptions?: CallOptions,
  ): Promise<{ changed: boolean }> {
    const o = withLogger(callOptions);
    const sc = await session.serviceContent(o);
    const vm = await findVm(sc, hostId, o);
    return { changed: await enableVmChangeTracking(snapshotContext(sc), vm, o) };
  }

  async function close(callOptions?: CallOptions): Promise<void> {
    try {
      await session.logout(withLogger(callOptions));
    } finally {
      client.close();
    }
  }

  return {
    specificationVersion: 'v2',
    id: settings.id,
    kind: 'vmware',
    capabilities: CAPABILITIES,
    changedBlockReader: reader,
    connection: { url: settings.sdkUrl.href, username: settings.username, transport: settings.transport },
    verify,
    hosts,
    host,
    inventory,
    createSnapshot,
    releaseSnapshot,
    enableChangeTracking,
    close,
    [Symbol.asyncDispose]: () => close(),
  };
}
