import {
  abnormalStatus,
  type CallOptions,
  type Host,
  type Logger,
  NotFoundError,
  PermissionError,
  type PlatformStatus,
  type SkippedDisk,
  type SkipReason,
  withCallDeadline,
} from '@drkit/core';
import {
  type CephClusterOptions,
  type CephDiskDefinition,
  type CephHostDefinition,
  requirePlatformId,
} from '../ceph/ceph-rbd-options.js';
import { type CephRbdPlatform, createCephRbdPlatformParts } from '../ceph/ceph-rbd-platform.js';
import {
  type CinderBackendPool,
  type CinderClient,
  type CinderVolume,
  createCinderClient,
} from './cinder-client.js';
import { createKeystoneClient, type KeystoneClient, type OpenStackInterface } from './keystone-client.js';
import { createNovaClient, type NovaClient, type NovaServer } from './nova-client.js';
import {
  checkCephList,
  type OpenStackCephPlatformOptions,
  resolveOpenStackOptions,
  withCephFieldNames,
} from './openstack-ceph-options.js';

/**
 * A disk of a server that the platform does not back up, and why: a {@link @drkit/core!SkippedDisk} with the
 * server and, for a Cinder volume, the volume's facts. Reasons: `backing-missing` (Cinder does not list the volume,
 * or Ceph has no image for it), `backing-unreachable` (its type or its RBD pool belongs to no configured Ceph
 * cluster), `unsupported-disk` (a backend that is not RBD, or Nova's ephemeral root disk),
 * `openstack-ceph-volume-unavailable` (the volume is `error`, `creating`, `deleting`, ...) and
 * `openstack-ceph-cluster-ambiguous` (several clusters without `volumeTypes` could hold it).
 */
export interface OpenStackSkippedDisk extends SkippedDisk {
  readonly serverId: string;
  readonly serverName: string;
  /** The Cinder volume id; undefined for Nova's ephemeral root disk (whose `id` is `<server id>_disk`). */
  readonly volumeId: string | undefined;
  /** The device the server sees it as, when Cinder knows. */
  readonly device: string | undefined;
  readonly volumeType: string | undefined;
}

/** What Nova and Cinder say, mapped to RBD images, before Ceph is asked. */
export interface OpenStackInventory {
  /** One host per Nova server; each disk names the RBD image of a volume; `skippedDisks` what is left out. */
  readonly hosts: readonly CephHostDefinition[];
  /** The disks left out, with the reason, of every server. */
  readonly skipped: readonly OpenStackSkippedDisk[];
}

/** {@link @drkit/core!PlatformStatus} with the disks the listing left out, when it is `normal`. */
export type OpenStackCephPlatformStatus =
  | (Extract<PlatformStatus, { status: 'normal' }> & {
      readonly skippedDisks: readonly OpenStackSkippedDisk[];
    })
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
   * One host per Nova server (all projects), one disk per attached volume that a configured Ceph cluster holds,
   * and in `skippedDisks` every other disk of the server with its reason (see {@link OpenStackSkippedDisk}).
   * `deadline` bounds the whole listing (every Keystone, Nova, Cinder request and rbd command of it; each HTTP
   * request is also bounded by `httpTimeoutSeconds`); `logger` is told at debug level of each HTTP request
   * (method, host, path, status; never headers or bodies) and each rbd command (never the key).
   *
   * @throws {@link @drkit/core!AuthenticationError}, {@link @drkit/core!PermissionError} (the user may not list all
   * projects), {@link @drkit/core!UnreachableError}, {@link @drkit/core!SourceProtocolError};
   * {@link @drkit/core!TimeoutError} past `deadline`.
   */
  hosts(options?: CallOptions): AsyncIterable<Host>;
  /**
   * Authenticates to Keystone, checks every Ceph cluster and counts the servers: `normal` with the host count and
   * the disks left out, or `abnormal` with the reason and the error's code (`TIMEOUT` past `deadline`). Throws only
   * when aborted.
   */
  verify(options?: CallOptions): Promise<OpenStackCephPlatformStatus>;
  /**
   * Lists servers and volumes from Nova and Cinder and maps each attached volume to its RBD image, without
   * asking Ceph: what {@link OpenStackCephPlatform.hosts} will back up, and what it leaves out and why (a volume
   * whose image turns out to be missing in Ceph is only found by `hosts()`).
   *
   * @throws {@link @drkit/core!AuthenticationError}, {@link @drkit/core!PermissionError} (the user may not list all
   * projects), {@link @drkit/core!UnreachableError}, {@link @drkit/core!SourceProtocolError};
   * {@link @drkit/core!TimeoutError} past `deadline`.
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

/** Skip reason of a volume whose Cinder status says its image may not exist (yet, or any more). */
export const SKIP_VOLUME_UNAVAILABLE = 'openstack-ceph-volume-unavailable';
/** Skip reason of a volume several clusters without `volumeTypes` could hold. */
export const SKIP_CLUSTER_AMBIGUOUS = 'openstack-ceph-cluster-ambiguous';

/**
 * Picks the cluster that holds a volume: the one whose `volumeTypes` lists the volume's type, else the one
 * cluster without `volumeTypes`; among several without, the one named like the volume's Cinder backend or pool.
 * @internal
 */
export function chooseCluster(
  volume: Pick<CinderVolume, 'volumeType' | 'host'>,
  clusters: readonly ClusterChoice[],
): { cluster: ClusterChoice } | { reason: SkipReason; detail: string } {
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
      reason: SKIP_CLUSTER_AMBIGUOUS,
      detail:
        `volume type ${JSON.stringify(type ?? null)} could be in several Ceph clusters (${described}) and its ` +
        `backend ${volume.host?.raw ?? '(unknown)'} names none: list the volume types of each cluster`,
    };
  }
  return {
    reason: 'backing-unreachable',
    detail:
      `volume type ${JSON.stringify(type ?? null)} is held by no configured Ceph cluster (${described}): add ` +
      "the cluster that holds it, or its type to a cluster's volumeTypes",
  };
}

/** Sorts devices the way a guest enumerates them: `/dev/vda`, `/dev/vdb`, ..., `/dev/vdaa`; unknown last. */
function compareDevices(a: string | undefined, b: string | undefined): number {
  if (a === b) return 0;
  if (a === undefined) return 1;
  if (b === undefined) return -1;
  return a.length - b.length || a.localeCompare(b, 'en', { numeric: true });
}

/** The pools of Cinder's backends by `host@backend#pool`, when the user may list them. @internal */
export type BackendPools = ReadonlyMap<string, CinderBackendPool>;

/**
 * Maps one Nova server and the Cinder volumes attached to it to a host of RBD images: disk id = volume id, disk
 * name = the device (`/dev/vda`), image `volume-<id>` in the chosen cluster's pool. Every other disk of the server
 * goes to the host's `skippedDisks` with its reason: a volume Cinder does not list (`backing-missing`), one in an
 * unusable state, one on a backend that is not RBD (`unsupported-disk`, known from `pools`), one no configured
 * cluster holds or whose RBD pool is not the cluster's (`backing-unreachable`), and Nova's ephemeral root disk of
 * a server booted from an image (`unsupported-disk`).
 * @internal
 */
export function mapServer(
  server: NovaServer,
  volumes: ReadonlyMap<string, CinderVolume>,
  clusters: readonly ClusterChoice[],
  pools?: BackendPools,
): { host: CephHostDefinition; skipped: OpenStackSkippedDisk[] } {
  const skipped: OpenStackSkippedDisk[] = [];
  const disks: (CephDiskDefinition & { device: string | undefined })[] = [];
  if (server.imageId !== undefined) {
    skipped.push({
      id: `${server.id}_disk`,
      name: 'ephemeral root disk',
      reason: 'unsupported-disk',
      detail:
        `server ${server.name} was booted from image ${server.imageId}: its root disk is Nova's ephemeral disk, ` +
        'not a Cinder volume, and drkit backs up Cinder volumes only (boot from a volume to protect the root disk)',
      serverId: server.id,
      serverName: server.name,
      volumeId: undefined,
      device: undefined,
      volumeType: undefined,
    });
  }
  for (const attached of server.attachedVolumes) {
    const volume = volumes.get(attached.id);
    const device = volume?.attachments.find((a) => a.serverId === server.id)?.device;
    const skip = (reason: SkipReason, detail: string) =>
      skipped.push({
        id: attached.id,
        name: device ?? (volume?.name || attached.id),
        reason,
        detail,
        serverId: server.id,
        serverName: server.name,
        volumeId: attached.id,
        device,
        volumeType: volume?.volumeType,
      });
    if (!volume) {
      skip(
        'backing-missing',
        `Cinder does not list volume ${attached.id} (deleted meanwhile, or not visible to this user)`,
      );
      continue;
    }
    if (UNUSABLE_STATUSES.has(volume.status)) {
      skip(
        SKIP_VOLUME_UNAVAILABLE,
        `the volume is ${volume.status}: its RBD image may not exist; it is backed up once Cinder reports it ` +
          'available or in-use',
      );
      continue;
    }
    const pool = volume.host ? pools?.get(volume.host.raw) : undefined;
    if (pool?.storageProtocol !== undefined && pool.storageProtocol.toLowerCase() !== 'ceph') {
      skip(
        'unsupported-disk',
        `volume type ${JSON.stringify(volume.volumeType ?? null)} lives on Cinder backend ${pool.name} ` +
          `(storage protocol ${pool.storageProtocol}), not on Ceph RBD: drkit reads RBD volumes only`,
      );
      continue;
    }
    const choice = chooseCluster(volume, clusters);
    if ('reason' in choice) {
      const where = pool?.ceph
        ? ` (Cinder keeps it in Ceph pool ${pool.ceph.pool}, fsid ${pool.ceph.fsid})`
        : '';
      skip(choice.reason, `${choice.detail}${where}`);
      continue;
    }
    if (pool?.ceph && pool.ceph.pool !== choice.cluster.pool) {
      skip(
        'backing-unreachable',
        `Cinder keeps the volume in Ceph pool ${pool.ceph.pool} (backend ${pool.name}), but volume type ` +
          `${JSON.stringify(volume.volumeType ?? null)} maps to Ceph cluster ${choice.cluster.name} with pool ` +
          `${choice.cluster.pool}: configure a cluster for pool ${pool.ceph.pool} and give it this volume type`,
      );
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
  return {
    host: {
      id: server.id,
      name: server.name,
      attributes,
      disks: disks.map(({ device: _device, ...disk }) => disk),
      ...(skipped.length > 0
        ? { skippedDisks: skipped.map(({ id, name, reason, detail }) => ({ id, name, reason, detail })) }
        : {}),
    },
    skipped,
  };
}

/**
 * Creates the platform of OpenStack servers whose volumes live in Ceph RBD. It is the Ceph RBD platform
 * (`createCephRbdPlatform`) with Nova and Cinder as its inventory: Keystone v3 password authentication, servers of
 * all projects from Nova, their volumes from Cinder, each volume mapped to its RBD image `volume-<id>` in the pool
 * of the cluster its volume type belongs to. The disks it cannot protect are listed with their reason in each
 * host's `skippedDisks` (and in {@link OpenStackCephPlatform.inventory} and `verify()`): volumes of another
 * backend or of no configured cluster, volumes in an unusable state, Nova's ephemeral root disks. Snapshots,
 * changed blocks and restores are the Ceph platform's. The user needs the admin role (or a policy that lets it
 * list servers and volumes of all projects, and Cinder's backend pools to tell RBD backends from others); the
 * Ceph user needs `profile rbd` on the pools.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming the field (`openstack.authUrl`, `ceph[1].pool`,
 * `httpTimeoutSeconds`, `id` when it is missing or empty) when the options are invalid. The password and keys
 * are never part of a message.
 * @example
 * ```ts
 * import { createBackupEngine, createLocalFolderStore, openRepository } from '@drkit/core';
 * import { createOpenStackCephPlatform } from '@drkit/provider-openstack-ceph';
 *
 * const platform = createOpenStackCephPlatform({
 *   id: 'openstack-prod', // yours to choose, and to keep: points are filed under it
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
 * const status = await platform.verify(); // { status: 'normal', hostCount: 12, skippedDisks: [...] }
 * const repository = await openRepository({ store: createLocalFolderStore({ path: './repo' }), create: true });
 * await using engine = createBackupEngine({ repository, platforms: [platform] });
 * await engine.backup({ hosts: ['8d3c...server id'] });
 * ```
 */
export function createOpenStackCephPlatform(options: OpenStackCephPlatformOptions): OpenStackCephPlatform {
  const settings = resolveOpenStackOptions(options);
  checkCephList(options.ceph);
  const id = requirePlatformId(options.id);
  // The Ceph platform validates the clusters (errors renamed to `ceph[i]...`) and does snapshots and reads; this
  // platform gives it the hosts.
  const parts = withCephFieldNames(() =>
    createCephRbdPlatformParts({
      id,
      kind: 'openstack-ceph',
      clusters: options.ceph,
      listHosts: (call) => definitions(listServers(call)),
      ...(options.rbdPath === undefined ? {} : { rbdPath: options.rbdPath }),
    }),
  );
  const ceph = parts.platform;
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

  type Call = { signal?: AbortSignal | undefined; logger?: Logger | undefined };
  type Listed = { host: CephHostDefinition; skipped: OpenStackSkippedDisk[] };

  /** The backends' pools, or undefined when this user may not list them (only admins may, by default). */
  async function backendPools(call: Call): Promise<BackendPools | undefined> {
    try {
      const pools = await cinder.listBackendPools(call);
      return new Map(pools.map((pool) => [pool.name, pool]));
    } catch (error) {
      if (!PermissionError.isInstance(error) && !NotFoundError.isInstance(error)) throw error;
      call.logger?.debug(
        { code: error.code },
        'Cinder does not show its backend pools to this user: volumes are mapped by volume type alone',
      );
      return undefined;
    }
  }

  async function* listServers(call: Call): AsyncGenerator<Listed> {
    const volumes = new Map<string, CinderVolume>();
    for await (const volume of cinder.listVolumes(call)) volumes.set(volume.id, volume);
    const pools = await backendPools(call);
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
      yield mapServer(server, volumes, clusters, pools);
    }
  }

  async function* definitions(listed: AsyncIterable<Listed>): AsyncGenerator<CephHostDefinition> {
    for await (const { host } of listed) yield host;
  }

  /**
   * The hosts, with the skipped disks of each; `collect` receives them with the server's and volume's facts. A
   * volume the mapping kept but whose image Ceph does not have gets a hint in its detail.
   */
  async function* listHosts(call: Call, collect?: OpenStackSkippedDisk[]): AsyncGenerator<Host> {
    const known = new Map<string, Listed>();
    const source = (async function* () {
      for await (const listed of listServers(call)) {
        known.set(listed.host.id, listed);
        yield listed.host;
      }
    })();
    for await (const host of parts.resolveHosts(source, call)) {
      const listed = known.get(host.id);
      known.delete(host.id);
      const skippedDisks = (host.skippedDisks ?? []).map((disk): OpenStackSkippedDisk => {
        const mapped = listed?.skipped.find((s) => s.id === disk.id);
        if (mapped) return mapped;
        const definition = listed?.host.disks.find((d) => d.id === disk.id);
        const volumeType = definition?.attributes?.['openstack.volumeType'];
        const hint =
          disk.reason === 'backing-missing' && definition
            ? `; Cinder volume ${disk.id} (type ${JSON.stringify(volumeType ?? null)}) was mapped to Ceph ` +
              `cluster ${definition.image.cluster}: if it lives on another backend, list the Ceph volume types ` +
              `in that cluster's volumeTypes`
            : '';
        return {
          ...disk,
          detail: `${disk.detail}${hint}`,
          serverId: host.id,
          serverName: host.name,
          volumeId: definition ? disk.id : undefined,
          device: definition?.attributes?.['openstack.device'],
          volumeType,
        };
      });
      collect?.push(...skippedDisks);
      yield {
        ...host,
        ...(skippedDisks.length > 0
          ? {
              skippedDisks: skippedDisks.map(
                ({ id, name, reason, detail }): SkippedDisk => ({ id, name, reason, detail }),
              ),
            }
          : {}),
      };
    }
  }

  async function* hosts(callOptions: CallOptions = {}): AsyncGenerator<Host> {
    callOptions.signal?.throwIfAborted();
    using scope = withCallDeadline(callOptions, `listing the servers of platform ${id}`);
    yield* listHosts({ signal: scope.signal, logger: callOptions.logger });
  }

  async function verify(callOptions: CallOptions = {}): Promise<OpenStackCephPlatformStatus> {
    const { signal } = callOptions;
    signal?.throwIfAborted();
    using scope = withCallDeadline(callOptions, `verifying platform ${id}`);
    const call: Call = { signal: scope.signal, logger: callOptions.logger };
    try {
      await keystone.authenticate(call);
      // Every cluster answers and its pool can be listed, also those no volume uses.
      await parts.checkClusters(call);
      const skippedDisks: OpenStackSkippedDisk[] = [];
      let hostCount = 0;
      for await (const _host of listHosts(call, skippedDisks)) hostCount++;
      return { status: 'normal', hostCount, skippedDisks, checkedAt: new Date().toISOString() };
    } catch (error) {
      // Past the deadline (the scope's TimeoutError) the platform is abnormal; only the caller's abort throws.
      return abnormalStatus(error, signal ? { signal } : {});
    }
  }

  async function inventory(callOptions: CallOptions = {}): Promise<OpenStackInventory> {
    callOptions.signal?.throwIfAborted();
    using scope = withCallDeadline(callOptions, `listing the inventory of platform ${id}`);
    const hostList: CephHostDefinition[] = [];
    const skipped: OpenStackSkippedDisk[] = [];
    for await (const listed of listServers({ signal: scope.signal, logger: callOptions.logger })) {
      hostList.push(listed.host);
      skipped.push(...listed.skipped);
    }
    return { hosts: hostList, skipped };
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
    hosts,
    verify,
    inventory,
  };
}
