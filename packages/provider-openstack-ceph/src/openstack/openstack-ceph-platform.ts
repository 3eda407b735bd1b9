import { AsyncLocalStorage } from 'node:async_hooks';
import {
  abnormalStatus,
  type CallOptions,
  InvalidSettingsError,
  NotFoundError,
  type PlatformStatus,
} from '@drkit/core';
import type { CephClusterOptions, CephDiskDefinition, CephHostDefinition } from '../ceph/ceph-rbd-options.js';
import { type CephRbdPlatform, createCephRbdPlatform } from '../ceph/ceph-rbd-platform.js';
import { type CinderClient, type CinderVolume, createCinderClient } from './cinder-client.js';
import { createKeystoneClient, type KeystoneClient, type OpenStackInterface } from './keystone-client.js';
import { createNovaClient, type NovaClient, type NovaServer } from './nova-client.js';
import {
  checkCephList,
  type OpenStackCephPlatformOptions,
  resolveOpenStackOptions,
  withCephFieldNames,
} from './openstack-ceph-options.js';

/** A volume attached to a server that the platform does not back up, and why. */
export interface SkippedVolume {
  readonly serverId: string;
  readonly serverName: string;
  readonly volumeId: string;
  /** The device the server sees it as, when Cinder knows. */
  readonly device: string | undefined;
  readonly volumeType: string | undefined;
  /** Why: no configured cluster holds its type, it is not listed by Cinder, it is in error... */
  readonly reason: string;
}

/** What Nova and Cinder say, mapped to RBD images, before Ceph is asked. */
export interface OpenStackInventory {
  /** One host per Nova server; each disk names the RBD image of a volume. */
  readonly hosts: readonly CephHostDefinition[];
  /** The attached volumes left out, with the reason. */
  readonly skipped: readonly SkippedVolume[];
}

/** {@link @drkit/core!PlatformStatus} with the volumes the listing left out, when it is `normal`. */
export type OpenStackCephPlatformStatus =
  | (Extract<PlatformStatus, { status: 'normal' }> & { readonly skippedVolumes: readonly SkippedVolume[] })
  | Extract<PlatformStatus, { status: 'abnormal' }>;

/** The OpenStack connection of a platform, without the password. */
export interface OpenStackConnectionInfo {
  readonly authUrl: string;
  readonly userDomainId: string;
  readonly username: string;
  readonly projectDomainId: string;
  readonly projectName: string;
  readonly regionName: string;
  readonly interface: OpenStackInterface;
}

/**
 * A {@link @drkit/core!Platform} over OpenStack servers whose Cinder volumes are RBD images: the Ceph RBD
 * platform (snapshots, export-diff, several clusters) with Nova and Cinder as its inventory.
 */
export interface OpenStackCephPlatform extends Omit<CephRbdPlatform, 'verify'> {
  readonly kind: 'openstack-ceph';
  /** Where and as whom the platform connects to OpenStack. */
  readonly openstack: OpenStackConnectionInfo;
  /**
   * Authenticates to Keystone, checks every Ceph cluster and counts the servers: `normal` with the host count and
   * the volumes left out, or `abnormal` with the reason and the error's code. Throws only when aborted.
   */
  verify(options?: CallOptions): Promise<OpenStackCephPlatformStatus>;
  /**
   * Lists servers and volumes from Nova and Cinder and maps each attached volume to its RBD image, without
   * asking Ceph: what {@link OpenStackCephPlatform.hosts} will back up, and what it leaves out and why.
   *
   * @throws {@link @drkit/core!AuthenticationError}, {@link @drkit/core!PermissionError} (the user may not list all
   * projects), {@link @drkit/core!UnreachableError}, {@link @drkit/core!SourceProtocolError}.
   */
  inventory(options?: CallOptions): Promise<OpenStackInventory>;
}

/** A cluster as the mapping sees it. @internal */
export interface ClusterChoice {
  readonly name: string;
  readonly pool: string;
  readonly volumeTypes: readonly string[];
}

/** Volume states whose RBD image may not exist (yet, or any more). */
const UNUSABLE_STATUSES = new Set(['creating', 'error', 'deleting', 'error_deleting', 'downloading']);

/**
 * Picks the cluster that holds a volume: the one whose `volumeTypes` lists the volume's type, else the one
 * cluster without `volumeTypes`; among several without, the one named like the volume's Cinder backend or pool.
 * @internal
 */
export function chooseCluster(
  volume: Pick<CinderVolume, 'volumeType' | 'host'>,
  clusters: readonly ClusterChoice[],
): { cluster: ClusterChoice } | { reason: string } {
  const type = volume.volumeType;
  const listed = clusters.find((c) => type !== undefined && c.volumeTypes.includes(type));
  if (listed) return { cluster: listed };
  const open = clusters.filter((c) => c.volumeTypes.length === 0);
  if (open.length === 1) return { cluster: open[0]! };
  const described = clusters
    .map((c) => `${c.name}: ${c.volumeTypes.length ? c.volumeTypes.join(', ') : 'any type'}`)
    .join('; ');
  if (open.length > 1) {
    const { backend, pool } = volume.host ?? {};
    const named = open.filter(
      (c) => c.name === backend || c.name === pool || (pool !== undefined && c.pool === pool),
    );
    if (named.length === 1) return { cluster: named[0]! };
    return {
      reason:
        `volume type ${JSON.stringify(type ?? null)} could be in several Ceph clusters (${described}) and its ` +
        `backend ${volume.host?.raw ?? '(unknown)'} names none: list the volume types of each cluster`,
    };
  }
  return {
    reason: `volume type ${JSON.stringify(type ?? null)} is held by no configured Ceph cluster (${described})`,
  };
}

/** Sorts devices the way a guest enumerates them: `/dev/vda`, `/dev/vdb`, ..., `/dev/vdaa`; unknown last. */
function compareDevices(a: string | undefined, b: string | undefined): number {
  if (a === b) return 0;
  if (a === undefined) return 1;
  if (b === undefined) return -1;
  return a.length - b.length || a.localeCompare(b, 'en', { numeric: true });
}

/**
 * Maps one Nova server and the Cinder volumes attached to it to a host of RBD images: disk id = volume id, disk
 * name = the device (`/dev/vda`), image `volume-<id>` in the chosen cluster's pool.
 * @internal
 */
export function mapServer(
  server: NovaServer,
  volumes: ReadonlyMap<string, CinderVolume>,
  clusters: readonly ClusterChoice[],
): { host: CephHostDefinition; skipped: SkippedVolume[] } {
  const skipped: SkippedVolume[] = [];
  const disks: (CephDiskDefinition & { device: string | undefined })[] = [];
  for (const attached of server.attachedVolumes) {
    const volume = volumes.get(attached.id);
    const skip = (reason: string, extra: Partial<SkippedVolume> = {}) =>
      skipped.push({
        serverId: server.id,
        serverName: server.name,
        volumeId: attached.id,
        device: undefined,
        volumeType: undefined,
        reason,
        ...extra,
      });
    if (!volume) {
      skip('Cinder does not list this volume (deleted meanwhile, or not visible to this user)');
      continue;
    }
    const device = volume.attachments.find((a) => a.serverId === server.id)?.device;
    const facts = { device, volumeType: volume.volumeType };
    if (UNUSABLE_STATUSES.has(volume.status)) {
      skip(`the volume is ${volume.status}`, facts);
      continue;
    }
    const choice = chooseCluster(volume, clusters);
    if ('reason' in choice) {
      skip(choice.reason, facts);
      continue;
    }
    const attributes: Record<string, string> = {
      'openstack.volumeName': volume.name,
      'openstack.sizeGiB': String(volume.sizeGiB),
      'openstack.bootable': String(volume.bootable),
    };
    if (volume.volumeType !== undefined) attributes['openstack.volumeType'] = volume.volumeType;
    if (volume.host) attributes['openstack.backendHost'] = volume.host.raw;
    if (device !== undefined) attributes['openstack.device'] = device;
    disks.push({
      id: volume.id,
      name: device ?? (volume.name || volume.id),
      device,
      attributes,
      image: { cluster: choice.cluster.name, pool: choice.cluster.pool, image: `volume-${volume.id}` },
    });
  }
  disks.sort((a, b) => compareDevices(a.device, b.device));
  const attributes: Record<string, string> = {
    'openstack.projectId': server.projectId,
    'openstack.status': server.status,
  };
  if (server.flavor.name !== undefined) attributes['openstack.flavor'] = server.flavor.name;
  if (server.availabilityZone !== undefined)
    attributes['openstack.availabilityZone'] = server.availabilityZone;
  if (server.imageId !== undefined) {
    attributes['openstack.ephemeralRootDisk'] =
      `booted from image ${server.imageId}: its root disk is Nova's, not a Cinder volume, and is not backed up`;
  }
  if (skipped.length > 0) {
    attributes['openstack.skippedVolumes'] = skipped
      .map((s) => `${s.volumeId}${s.device ? ` (${s.device})` : ''}: ${s.reason}`)
      .join('; ');
  }
  return {
    host: {
      id: server.id,
      name: server.name,
      attributes,
      disks: disks.map(({ device: _device, ...disk }) => disk),
    },
    skipped,
  };
}

/**
 * Creates the platform of OpenStack servers whose volumes live in Ceph RBD. It is the Ceph RBD platform
 * (`createCephRbdPlatform`) with Nova and Cinder as its inventory: Keystone v3 password authentication, servers of
 * all projects from Nova, their volumes from Cinder, each volume mapped to its RBD image `volume-<id>` in the pool
 * of the cluster its volume type belongs to. Volumes no configured cluster holds are left out with the reason
 * (host attribute `openstack.skippedVolumes`, {@link OpenStackCephPlatform.inventory}, `verify()`). Snapshots,
 * changed blocks and restores are the Ceph platform's. The user needs the admin role (or a policy that lets it
 * list servers and volumes of all projects); the Ceph user needs `profile rbd` on the pools.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming the field (`openstack.authUrl`, `ceph[1].pool`,
 * `httpTimeoutSeconds`) when the options are invalid. The password and keys are never part of a message.
 * @example
 * ```ts
 * import { createBackupEngine, createLocalFolderStore, openRepository } from '@drkit/core';
 * import { createOpenStackCephPlatform } from '@drkit/provider-openstack-ceph';
 *
 * const platform = createOpenStackCephPlatform({
 *   openstack: {
 *     authUrl: 'http://192.168.10.201:5000/v3', userDomainId: 'default', username: 'admin',
 *     password: process.env.OS_PASSWORD!, projectDomainId: 'default', projectName: 'admin',
 *     regionName: 'RegionOne',
 *   },
 *   ceph: [{
 *     name: 'ceph-1', monitors: '10.0.0.201,10.0.0.202,10.0.0.203',
 *     cephx: { user: 'cinder', keyring: process.env.CEPH_KEY! }, pool: 'volumes',
 *     incrementalMode: 'exact', volumeTypes: ['ceph'],
 *   }],
 * });
 * const status = await platform.verify(); // { status: 'normal', hostCount: 12, skippedVolumes: [...] }
 * const repository = await openRepository({ store: createLocalFolderStore({ path: './repo' }), create: true });
 * await using engine = createBackupEngine({ repository, platforms: [platform] });
 * await engine.backup({ hosts: ['8d3c...server id'] });
 * ```
 */
export function createOpenStackCephPlatform(options: OpenStackCephPlatformOptions): OpenStackCephPlatform {
  const settings = resolveOpenStackOptions(options);
  checkCephList(options.ceph);
  if (options.id !== undefined && (typeof options.id !== 'string' || options.id.trim() === '')) {
    throw new InvalidSettingsError('id', 'must be a non-empty string when given');
  }
  const id = options.id ?? `openstack-ceph-${new URL(settings.authUrl).host}`;
  // The Ceph platform validates the clusters (errors renamed to `ceph[i]...`) and does snapshots and reads; this
  // platform gives it the hosts.
  const ceph = withCephFieldNames(() =>
    createCephRbdPlatform({
      id,
      kind: 'openstack-ceph',
      clusters: options.ceph,
      listHosts,
      // A volume a cluster claims but does not hold (another backend's) is skipped with its reason, not fatal.
      onMissingImage: ({ host, disk, reason }) => {
        skippedCollector.getStore()?.push({
          serverId: host.id,
          serverName: host.name,
          volumeId: disk.id,
          device: disk.attributes?.['openstack.device'],
          volumeType: disk.attributes?.['openstack.volumeType'],
          reason,
        });
      },
      ...(options.rbdPath === undefined ? {} : { rbdPath: options.rbdPath }),
    }),
  );
  const keystone: KeystoneClient = createKeystoneClient({
    authUrl: settings.authUrl,
    userDomainId: settings.userDomainId,
    username: settings.username,
    password: settings.password,
    projectDomainId: settings.projectDomainId,
    projectName: settings.projectName,
    regionName: settings.regionName,
    interface: settings.interface,
    httpTimeoutSeconds: settings.httpTimeoutSeconds,
    ...(settings.renewBeforeSeconds === undefined ? {} : { renewBeforeSeconds: settings.renewBeforeSeconds }),
    ...(settings.caCertificates ? { caCertificates: settings.caCertificates } : {}),
  });
  const nova: NovaClient = createNovaClient({ keystone, pageSize: settings.pageSize });
  const cinder: CinderClient = createCinderClient({ keystone, pageSize: settings.pageSize });
  const clusters: ClusterChoice[] = options.ceph.map((c: CephClusterOptions) => ({
    name: c.name,
    pool: c.pool,
    volumeTypes: (c.volumeTypes ?? []).map((t) => t.trim()),
  }));
  /** Collects the skipped volumes of the listing a `verify()` runs. */
  const skippedCollector = new AsyncLocalStorage<SkippedVolume[]>();

  async function* listServers(
    signal: AbortSignal | undefined,
  ): AsyncGenerator<{ host: CephHostDefinition; skipped: SkippedVolume[] }> {
    const call = signal ? { signal } : {};
    const volumes = new Map<string, CinderVolume>();
    for await (const volume of cinder.listVolumes(call)) volumes.set(volume.id, volume);
    for await (const server of nova.listServers(call)) {
      for (const attached of server.attachedVolumes) {
        if (volumes.has(attached.id)) continue;
        // Attached after Cinder's list was read: ask for it alone.
        try {
          volumes.set(attached.id, await cinder.getVolume({ id: attached.id, ...call }));
        } catch (error) {
          if (!NotFoundError.isInstance(error)) throw error;
        }
      }
      yield mapServer(server, volumes, clusters);
    }
  }

  async function* listHosts({ signal }: { signal?: AbortSignal }): AsyncGenerator<CephHostDefinition> {
    const collector = skippedCollector.getStore();
    for await (const { host, skipped } of listServers(signal)) {
      collector?.push(...skipped);
      yield host;
    }
  }

  async function verify(callOptions: CallOptions = {}): Promise<OpenStackCephPlatformStatus> {
    const { signal } = callOptions;
    signal?.throwIfAborted();
    try {
      await keystone.authenticate(signal ? { signal } : {});
    } catch (error) {
      return abnormalStatus(error, signal ? { signal } : {});
    }
    const skipped: SkippedVolume[] = [];
    const status = await skippedCollector.run(skipped, () => ceph.verify(signal ? { signal } : {}));
    return status.status === 'normal' ? { ...status, skippedVolumes: skipped } : status;
  }

  async function inventory(callOptions: CallOptions = {}): Promise<OpenStackInventory> {
    const hosts: CephHostDefinition[] = [];
    const skipped: SkippedVolume[] = [];
    for await (const listed of listServers(callOptions.signal)) {
      hosts.push(listed.host);
      skipped.push(...listed.skipped);
    }
    return { hosts, skipped };
  }

  return {
    ...ceph,
    kind: 'openstack-ceph',
    openstack: {
      authUrl: settings.authUrl,
      userDomainId: settings.userDomainId,
      username: settings.username,
      projectDomainId: settings.projectDomainId,
      projectName: settings.projectName,
      regionName: settings.regionName,
      interface: settings.interface,
    },
    verify,
    inventory,
  };
}
