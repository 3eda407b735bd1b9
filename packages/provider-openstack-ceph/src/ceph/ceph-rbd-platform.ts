import {
  abnormalStatus,
  type CallOptions,
  type CreateSnapshotOptions,
  type Disk,
  type Host,
  InvalidArgumentError,
  NotFoundError,
  type Platform,
  type PlatformCapabilities,
  type PlatformStatus,
  type ReleaseSnapshotOptions,
  type SnapshotRef,
  SourceProtocolError,
} from '@drkit/core';
import {
  assertSnapshotName,
  type CephRbdChangedBlockReader,
  createCephRbdChangedBlockReader,
} from './ceph-rbd-changed-block-reader.js';
import {
  type CephHostDefinition,
  type CephImageRef,
  type CephIncrementalMode,
  type CephRbdPlatformOptions,
  defaultDiskId,
  isValidImageName,
  isValidPoolName,
  type ResolvedCluster,
  resolveCephRbdOptions,
} from './ceph-rbd-options.js';
import { runRbd, runRbdJson } from './rbd-command.js';

/** A configured Ceph cluster as the platform reports it: no secrets. */
export interface CephClusterInfo {
  /** The cluster's name in drkit. */
  readonly name: string;
  /** Ceph's cluster name (`ceph`). */
  readonly cluster: string;
  /** The monitors, as ceph.conf's `mon host`. */
  readonly monitors: string;
  readonly pool: string;
  readonly incrementalMode: CephIncrementalMode;
  readonly volumeTypes: readonly string[];
  /** The CephX user (without `client.`), or `undefined` when CephX is off. */
  readonly user: string | undefined;
}

/** A {@link @drkit/core!Platform} over the RBD images of one or more Ceph clusters. */
export interface CephRbdPlatform extends Platform {
  readonly capabilities: PlatformCapabilities & {
    readonly snapshots: 'host';
    readonly retainsSnapshotAsBase: true;
    readonly changeTracking: 'exact';
  };
  readonly changedBlockReader: CephRbdChangedBlockReader;
  /** The configured clusters, without their keys. */
  readonly clusters: readonly CephClusterInfo[];
  /**
   * Takes an RBD snapshot named `name` of every image of the host, all started at once. RBD has no atomic
   * snapshot across images outside of RBD groups, so the images' snapshots are a few milliseconds apart: the
   * host's point is crash-consistent per disk, and across disks only if the guest is quiet or frozen meanwhile.
   * When one image fails, the snapshots already taken are removed and the error is thrown.
   *
   * @throws {@link @drkit/core!PermissionError} when the user may not create snapshots (its caps lack
   * `osd 'profile rbd'` on the pool); {@link @drkit/core!NotFoundError} for a missing image;
   * {@link @drkit/core!InvalidArgumentError} when a snapshot of that name exists; the errors of the rbd command.
   */
  createSnapshot(options: CreateSnapshotOptions): Promise<SnapshotRef>;
  /**
   * Removes the snapshot `name` from every image of the host. A snapshot or image already gone is fine.
   *
   * @throws {@link @drkit/core!PermissionError} when the snapshot is protected (it has clones) or the user may not
   * remove it; the errors of the rbd command.
   */
  releaseSnapshot(options: ReleaseSnapshotOptions): Promise<void>;
}

/** An image as `rbd ls --long --format json` lists it. */
interface ListedImage {
  readonly id: string;
  readonly size: number;
  readonly snapshots: string[];
}

const ATTRIBUTE_CLUSTER = 'ceph.cluster';
const ATTRIBUTE_POOL = 'ceph.pool';
const ATTRIBUTE_IMAGE = 'ceph.image';
const ATTRIBUTE_IMAGE_ID = 'ceph.imageId';
/** Host attribute: the disks left out because their image is missing, with why (see `onMissingImage`). */
const ATTRIBUTE_SKIPPED_DISKS = 'ceph.skippedDisks';
/** How many rbd commands run at once for one snapshot or release. */
const MAX_PARALLEL = 16;

/**
 * Creates a platform whose disks are Ceph RBD images, read through the `rbd` command (from `ceph-common`; no
 * Node binding to librbd exists). Hosts are the groups of images you name in `hosts`, the hosts another
 * inventory lists through `listHosts` (the OpenStack platform), or by default one host per image of each
 * cluster's pool. Each backup takes an RBD snapshot of every image of the host, reads the changes since the
 * previous drkit snapshot with `rbd export-diff --from-snap` (or whole objects in `fast` mode), and keeps the new
 * snapshot as the next base; the engine releases older ones through its ledger.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming the field (`clusters[0].cephx.keyring`) when the options are
 * invalid. The key is never part of a message.
 *
 * @example
 * ```ts
 * import { createBackupEngine, createLocalFolderStore, openRepository } from '@drkit/core';
 * import { createCephRbdPlatform } from '@drkit/provider-openstack-ceph';
 *
 * const platform = createCephRbdPlatform({
 *   clusters: [{
 *     name: 'ceph-1',
 *     monitors: '10.0.0.201,10.0.0.202,10.0.0.203',
 *     cephx: { user: 'backup', keyring: 'AQBBY9hfBc0+AxAAzyym+6l+MeTpMlgNTbye/A==' },
 *     pool: 'volumes',
 *     incrementalMode: 'exact',
 *   }],
 *   hosts: [{ name: 'db-1', images: ['volumes/db-1-root', 'volumes/db-1-data'] }],
 * });
 * console.log(await platform.verify()); // { status: 'normal', hostCount: 1, ... }
 * const repository = await openRepository({ store: createLocalFolderStore({ path: './repo' }), create: true });
 * await using engine = createBackupEngine({ repository, platforms: [platform] });
 * await engine.backup({ hosts: ['db-1'] });
 * ```
 */
export function createCephRbdPlatform(options: CephRbdPlatformOptions): CephRbdPlatform {
  const resolved = resolveCephRbdOptions(options);
  const { clusters } = resolved;
  const platformId = resolved.id;
  /** Images of the disks and hosts listed so far, so a disk or host id can be resolved later. */
  const diskImages = new Map<string, CephImageRef>();
  const hostImages = new Map<string, CephImageRef[]>();
  /** Images each snapshot taken by this platform object was created on. */
  const snapshotImages = new Map<string, CephImageRef[]>();

  function clusterOf(ref: CephImageRef): ResolvedCluster {
    const cluster = clusters.get(ref.cluster);
    if (!cluster) {
      throw new NotFoundError(
        `no Ceph cluster is named "${ref.cluster}" on platform ${platformId} ` +
          `(clusters: ${[...clusters.keys()].join(', ')})`,
      );
    }
    return cluster;
  }

  function checkedRef(ref: CephImageRef, where: string): CephImageRef {
    clusterOf(ref);
    if (!isValidPoolName(ref.pool) || !isValidImageName(ref.image)) {
      throw new InvalidArgumentError(
        `${where}: "${ref.pool}/${ref.image}" is not a valid RBD pool/image name`,
      );
    }
    return { cluster: ref.cluster, pool: ref.pool, image: ref.image };
  }

  /** Parses `cluster/pool/image` (a default disk or host id). */
  function refFromId(id: string): CephImageRef | undefined {
    const parts = id.split('/');
    if (parts.length !== 3) return undefined;
    const [cluster, pool, image] = parts as [string, string, string];
    if (!clusters.has(cluster) || !isValidPoolName(pool) || !isValidImageName(image)) return undefined;
    return { cluster, pool, image };
  }

  function imageOf(disk: Disk): CephImageRef {
    const a = disk.attributes;
    const cluster = a?.[ATTRIBUTE_CLUSTER];
    const pool = a?.[ATTRIBUTE_POOL];
    const image = a?.[ATTRIBUTE_IMAGE];
    if (cluster !== undefined && pool !== undefined && image !== undefined) {
      return checkedRef({ cluster, pool, image }, `disk ${disk.id}`);
    }
    const ref = diskImages.get(disk.id) ?? refFromId(disk.id);
    if (!ref) {
      throw new NotFoundError(
        `disk ${disk.id} is not an RBD image of platform ${platformId}: take disks from platform.hosts()`,
      );
    }
    return ref;
  }

  async function listImages(
    cluster: ResolvedCluster,
    pool: string,
    signal: AbortSignal | undefined,
  ): Promise<Map<string, ListedImage>> {
    const value = await runRbdJson(cluster.connection, ['ls', '--long', pool], { signal });
    if (!Array.isArray(value)) {
      throw new SourceProtocolError(
        `rbd ls --long ${pool} on Ceph cluster ${cluster.name} did not print a list`,
      );
    }
    const images = new Map<string, ListedImage>();
    const rows = value as { image?: unknown; id?: unknown; size?: unknown; snapshot?: unknown }[];
    for (const row of rows) {
      if (typeof row?.image !== 'string') continue;
      if (row.snapshot !== undefined) {
        if (typeof row.snapshot === 'string') images.get(row.image)?.snapshots.push(row.snapshot);
        continue;
      }
      if (typeof row.id !== 'string' || typeof row.size !== 'number' || !Number.isSafeInteger(row.size)) {
        throw new SourceProtocolError(
          `rbd ls --long ${pool} on Ceph cluster ${cluster.name} lists ${row.image} without an id or size`,
        );
      }
      images.set(row.image, { id: row.id, size: row.size, snapshots: [] });
    }
    return images;
  }

  async function* perImageHosts(signal: AbortSignal | undefined): AsyncGenerator<CephHostDefinition> {
    for (const cluster of clusters.values()) {
      const images = await listImages(cluster, cluster.pool, signal);
      for (const image of [...images.keys()].sort()) {
        if (!isValidImageName(image)) continue;
        const ref = { cluster: cluster.name, pool: cluster.pool, image };
        const id = defaultDiskId(ref);
        yield { id, name: image, disks: [{ id, name: image, image: ref }] };
      }
    }
  }

  async function* hosts(callOptions: CallOptions = {}): AsyncGenerator<Host> {
    const { signal } = callOptions;
    signal?.throwIfAborted();
    const listings = new Map<string, Promise<Map<string, ListedImage>>>();
    const listing = (cluster: ResolvedCluster, pool: string) => {
      const key = `${cluster.name}\n${pool}`;
      let promise = listings.get(key);
      if (!promise) {
        promise = listImages(cluster, pool, signal);
        promise.catch(() => undefined);
        listings.set(key, promise);
      }
      return promise;
    };
    const source: AsyncIterable<CephHostDefinition> | Iterable<CephHostDefinition> = resolved.listHosts
      ? resolved.listHosts(signal ? { signal } : {})
      : (resolved.hosts ?? perImageHosts(signal));
    for await (const definition of source) {
      signal?.throwIfAborted();
      const where = `host ${JSON.stringify(definition?.id)}`;
      if (typeof definition?.id !== 'string' || definition.id === '' || typeof definition.name !== 'string') {
        throw new InvalidArgumentError(`${where}: a listed host needs a string id and name`);
      }
      if (!Array.isArray(definition.disks)) throw new InvalidArgumentError(`${where}: disks must be a list`);
      const disks: Disk[] = [];
      const refs: CephImageRef[] = [];
      const skipped: string[] = [];
      for (const disk of definition.disks) {
        if (typeof disk?.id !== 'string' || disk.id === '' || typeof disk.name !== 'string') {
          throw new InvalidArgumentError(`${where}: every disk needs a string id and name`);
        }
        const ref = checkedRef(disk.image, `${where}, disk ${disk.id}`);
        const cluster = clusterOf(ref);
        const listed = (await listing(cluster, ref.pool)).get(ref.image);
        if (!listed) {
          const reason = `image ${ref.pool}/${ref.image} does not exist on Ceph cluster ${cluster.name}`;
          if (resolved.onMissingImage) {
            resolved.onMissingImage({ host: { id: definition.id, name: definition.name }, disk, reason });
            skipped.push(`${disk.id}: ${reason}`);
            continue;
          }
          throw new NotFoundError(`${where}, disk ${disk.id}: ${reason}`);
        }
        refs.push(ref);
        diskImages.set(disk.id, ref);
        disks.push({
          id: disk.id,
          hostId: definition.id,
          name: disk.name,
          capacityBytes: listed.size,
          attributes: {
            ...disk.attributes,
            [ATTRIBUTE_CLUSTER]: ref.cluster,
            [ATTRIBUTE_POOL]: ref.pool,
            [ATTRIBUTE_IMAGE]: ref.image,
            [ATTRIBUTE_IMAGE_ID]: listed.id,
          },
        });
      }
      hostImages.set(definition.id, refs);
      yield {
        id: definition.id,
        name: definition.name,
        platformId,
        disks,
        ...(definition.attributes || skipped.length > 0
          ? {
              attributes: {
                ...definition.attributes,
                ...(skipped.length > 0 ? { [ATTRIBUTE_SKIPPED_DISKS]: skipped.join('; ') } : {}),
              },
            }
          : {}),
      };
    }
  }

  async function verify(callOptions: CallOptions = {}): Promise<PlatformStatus> {
    const { signal } = callOptions;
    signal?.throwIfAborted();
    try {
      // Every cluster answers and its pool can be listed, also those no host uses.
      await Promise.all(
        [...clusters.values()].map((cluster) => runRbd(cluster.connection, ['ls', cluster.pool], { signal })),
      );
      let hostCount = 0;
      for await (const _host of hosts({ signal })) hostCount++;
      return { status: 'normal', hostCount, checkedAt: new Date().toISOString() };
    } catch (error) {
      return abnormalStatus(error, signal ? { signal } : {});
    }
  }

  async function snapshotCommand(
    verb: 'create' | 'rm',
    ref: CephImageRef,
    name: string,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    await runRbd(
      clusterOf(ref).connection,
      ['snap', verb, '--no-progress', `${ref.pool}/${ref.image}@${name}`],
      {
        signal,
      },
    );
  }

  async function createSnapshot(snapshotOptions: CreateSnapshotOptions): Promise<SnapshotRef> {
    const { host, name, signal } = snapshotOptions;
    signal?.throwIfAborted();
    assertSnapshotName(name);
    const refs = host.disks.map((disk) => imageOf(disk));
    if (refs.length === 0) throw new InvalidArgumentError(`host ${host.id} has no disks to snapshot`);
    // All at once: the snapshots of a host's images should be as close in time as rbd allows.
    const results = await mapLimited(refs, (ref) => snapshotCommand('create', ref, name, signal));
    const failures = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failures.length === 0) {
      snapshotImages.set(name, refs);
      hostImages.set(host.id, refs);
      return { hostId: host.id, name };
    }
    // Remove what was created (without the signal: an aborted job must not leave half a host snapshot).
    const created = refs.filter((_, i) => results[i]?.status === 'fulfilled');
    await mapLimited(created, (ref) => removeSnapshot(ref, name, undefined));
    if (signal?.aborted) throw signal.reason;
    throw failures[0]!.reason;
  }

  async function removeSnapshot(
    ref: CephImageRef,
    name: string,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    try {
      await snapshotCommand('rm', ref, name, signal);
    } catch (error) {
      if (NotFoundError.isInstance(error) && !signal?.aborted) return; // image or snapshot already gone
      throw error;
    }
  }

  /** Images that hold a snapshot of this name, by listing every cluster's pool. */
  async function findSnapshot(name: string, signal: AbortSignal | undefined): Promise<CephImageRef[]> {
    const found: CephImageRef[] = [];
    for (const cluster of clusters.values()) {
      const images = await listImages(cluster, cluster.pool, signal);
      for (const [image, listed] of images) {
        if (listed.snapshots.includes(name)) found.push({ cluster: cluster.name, pool: cluster.pool, image });
      }
    }
    return found;
  }

  async function releaseSnapshot(releaseOptions: ReleaseSnapshotOptions): Promise<void> {
    const { hostId, name, signal } = releaseOptions;
    signal?.throwIfAborted();
    assertSnapshotName(name);
    let refs = snapshotImages.get(name) ?? hostImages.get(hostId);
    if (!refs) {
      const single = resolved.hosts === undefined && !resolved.listHosts ? refFromId(hostId) : undefined;
      refs = single ? [single] : await findSnapshot(name, signal);
    }
    const results = await mapLimited(refs, (ref) => removeSnapshot(ref, name, signal));
    if (signal?.aborted) throw signal.reason;
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure) throw failure.reason;
    snapshotImages.delete(name);
  }

  const changedBlockReader = createCephRbdChangedBlockReader({ clusters, imageOf });

  return {
    specificationVersion: 'v1',
    id: platformId,
    kind: resolved.kind,
    capabilities: { snapshots: 'host', retainsSnapshotAsBase: true, changeTracking: 'exact' },
    changedBlockReader,
    clusters: [...clusters.values()].map((c) => ({
      name: c.name,
      cluster: c.cluster,
      monitors: c.monitors,
      pool: c.pool,
      incrementalMode: c.incrementalMode,
      volumeTypes: c.volumeTypes,
      user: c.connection.auth ? c.connection.auth.user : undefined,
    })),
    verify,
    hosts,
    createSnapshot,
    releaseSnapshot,
  };
}

/** Runs `task` on every item, at most {@link MAX_PARALLEL} at once, and settles them all. */
async function mapLimited<T>(
  items: readonly T[],
  task: (item: T) => Promise<void>,
): Promise<PromiseSettledResult<void>[]> {
  const results: PromiseSettledResult<void>[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      try {
        await task(items[index]!);
        results[index] = { status: 'fulfilled', value: undefined };
      } catch (reason) {
        results[index] = { status: 'rejected', reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(MAX_PARALLEL, items.length) }, worker));
  return results;
}
