import {
  abnormalStatus,
  type CallOptions,
  type CreateSnapshotOptions,
  type Disk,
  type Host,
  type HostSnapshot,
  InvalidArgumentError,
  type Logger,
  NotFoundError,
  type Platform,
  type PlatformCapabilities,
  type PlatformStatus,
  QuiesceFailedError,
  type ReleaseSnapshotOptions,
  type SkippedDisk,
  SourceProtocolError,
  withCallDeadline,
} from '@drkit/core';
import {
  assertSnapshotName,
  type CephRbdChangedBlockReader,
  createCephRbdChangedBlockReader,
  snapshotRef,
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
import { type RbdCallOptions, runRbd, runRbdJson } from './rbd-command.js';

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

/** A {@link @drkit/core!Platform} over the RBD images of one or more Ceph clusters (specification v2). */
export interface CephRbdPlatform extends Platform {
  readonly specificationVersion: 'v2';
  /**
   * Host snapshots kept as the base of the next incremental, exact diffs, and no quiescing: Ceph cannot reach
   * into a guest (the engine then asks `quiesce: 'none'` for a job that prefers quiescing, and fails a job that
   * requires it without calling {@link CephRbdPlatform.createSnapshot}).
   */
  readonly capabilities: PlatformCapabilities & {
    readonly snapshots: 'host';
    readonly quiesce: false;
    readonly retainsSnapshotAsBase: true;
    readonly changeTracking: 'exact';
  };
  readonly changedBlockReader: CephRbdChangedBlockReader;
  /** The configured clusters, without their keys. */
  readonly clusters: readonly CephClusterInfo[];
  /**
   * Lists the hosts with their disks (capacity read from Ceph), and in `skippedDisks` the disks it cannot
   * protect: an image that does not exist (`backing-missing`), an image whose name drkit cannot pass to `rbd`
   * (`unsupported-disk`), and those the host source named (the OpenStack inventory's). `deadline` bounds the whole
   * listing; `logger` is told of every rbd command at debug level.
   *
   * @throws {@link @drkit/core!AuthenticationError}, {@link @drkit/core!UnreachableError},
   * {@link @drkit/core!PermissionError} for access problems; {@link @drkit/core!TimeoutError} past `deadline`;
   * {@link @drkit/core!InvalidArgumentError} for a host source that lists a malformed host.
   */
  hosts(options?: CallOptions): AsyncIterable<Host>;
  /**
   * Takes an RBD snapshot named `name` of every image of the host, all started at once, and returns one
   * {@link @drkit/core!DiskSnapshot} per disk (`ref`: `<cluster>/<pool>/<image>@<name>`). RBD has no atomic
   * snapshot across images outside of RBD groups, so the images' snapshots are a few milliseconds apart:
   * `consistency` is `disk` (each disk crash-consistent on its own; across disks only if the guest is quiet or
   * frozen meanwhile). When one image fails, the snapshots already taken are removed and the error is thrown.
   *
   * `quiesce`: `none` (and `preferred`, which the engine never sends to a platform that cannot quiesce) takes a
   * crash-consistent snapshot; `required` throws a `QuiesceFailedError` before anything is created.
   *
   * @throws {@link @drkit/core!QuiesceFailedError} when `quiesce` is `required`;
   * {@link @drkit/core!PermissionError} when the user may not create snapshots (its caps lack
   * `osd 'profile rbd'` on the pool); {@link @drkit/core!NotFoundError} for a missing image;
   * {@link @drkit/core!InvalidArgumentError} when a snapshot of that name exists; the errors of the rbd command;
   * {@link @drkit/core!TimeoutError} past `deadline`.
   */
  createSnapshot(options: CreateSnapshotOptions): Promise<HostSnapshot>;
  /**
   * Removes the snapshot `name` from every image of the host. A snapshot or image already gone is fine.
   *
   * @throws {@link @drkit/core!PermissionError} when the snapshot is protected (it has clones) or the user may not
   * remove it; the errors of the rbd command; {@link @drkit/core!TimeoutError} past `deadline`.
   */
  releaseSnapshot(options: ReleaseSnapshotOptions): Promise<void>;
}

/**
 * The platform and the parts of it the OpenStack platform builds on.
 *
 * @internal
 */
export interface CephRbdPlatformParts {
  readonly platform: CephRbdPlatform;
  /**
   * Turns host definitions into hosts: each disk's capacity and image id from Ceph, a disk whose image is missing
   * moved to `skippedDisks` (`backing-missing`). `signal` is the call's (deadline included).
   */
  resolveHosts(
    definitions: AsyncIterable<CephHostDefinition> | Iterable<CephHostDefinition>,
    options: { signal?: AbortSignal | undefined; logger?: Logger | undefined },
  ): AsyncGenerator<Host>;
  /** Checks that every cluster answers and its pool can be listed, also those no host uses. */
  checkClusters(options: { signal?: AbortSignal | undefined; logger?: Logger | undefined }): Promise<void>;
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
/** A provider's own skip reason: lowercase letters, digits and `-`. */
const SKIP_REASON_PATTERN = /^[a-z0-9][a-z0-9-]{0,63}$/;
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
 * invalid, or `id` when it is missing or empty. The key is never part of a message.
 *
 * @example
 * ```ts
 * import { createBackupEngine, createLocalFolderStore, openRepository } from '@drkit/core';
 * import { createCephRbdPlatform } from '@drkit/provider-openstack-ceph';
 *
 * const platform = createCephRbdPlatform({
 *   id: 'ceph-prod', // yours to choose, and to keep: points are filed under it
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
  return createCephRbdPlatformParts(options).platform;
}

/**
 * {@link createCephRbdPlatform}, with the parts the OpenStack platform builds on.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} as {@link createCephRbdPlatform}.
 * @internal
 */
export function createCephRbdPlatformParts(options: CephRbdPlatformOptions): CephRbdPlatformParts {
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
    rbd: RbdCallOptions,
  ): Promise<Map<string, ListedImage>> {
    const value = await runRbdJson(cluster.connection, ['ls', '--long', pool], rbd);
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

  async function* perImageHosts(rbd: RbdCallOptions): AsyncGenerator<CephHostDefinition> {
    for (const cluster of clusters.values()) {
      const images = await listImages(cluster, cluster.pool, rbd);
      for (const image of [...images.keys()].sort()) {
        const ref = { cluster: cluster.name, pool: cluster.pool, image };
        const id = defaultDiskId(ref);
        if (!isValidImageName(image)) {
          // Not left out in silence: the host is listed with the disk it cannot protect.
          yield {
            id,
            name: image,
            disks: [],
            skippedDisks: [
              {
                id,
                name: image,
                reason: 'unsupported-disk',
                detail:
                  `the name of image ${cluster.pool}/${JSON.stringify(image)} on Ceph cluster ${cluster.name} ` +
                  'cannot be passed to rbd safely (it starts with "-" or holds whitespace, "/", "@" or "\\"): ' +
                  'rename it with `rbd rename` to back it up',
              },
            ],
          };
          continue;
        }
        yield { id, name: image, disks: [{ id, name: image, image: ref }] };
      }
    }
  }

  /** Checks a host source's skipped disk and copies it (so later changes to the source's object change nothing). */
  function checkedSkippedDisk(disk: SkippedDisk, where: string): SkippedDisk {
    if (
      typeof disk?.id !== 'string' ||
      disk.id === '' ||
      typeof disk.name !== 'string' ||
      typeof disk.reason !== 'string' ||
      !SKIP_REASON_PATTERN.test(disk.reason) ||
      typeof disk.detail !== 'string'
    ) {
      throw new InvalidArgumentError(
        `${where}: every skipped disk needs a string id, name and detail, and a reason of lowercase letters, ` +
          'digits and "-"',
      );
    }
    return { id: disk.id, name: disk.name, reason: disk.reason, detail: disk.detail };
  }

  async function* resolveHosts(
    source: AsyncIterable<CephHostDefinition> | Iterable<CephHostDefinition>,
    callOptions: { signal?: AbortSignal | undefined; logger?: Logger | undefined },
  ): AsyncGenerator<Host> {
    const { signal, logger } = callOptions;
    signal?.throwIfAborted();
    const rbd: RbdCallOptions = { signal, logger };
    const listings = new Map<string, Promise<Map<string, ListedImage>>>();
    const listing = (cluster: ResolvedCluster, pool: string) => {
      const key = `${cluster.name}\n${pool}`;
      let promise = listings.get(key);
      if (!promise) {
        promise = listImages(cluster, pool, rbd);
        promise.catch(() => undefined);
        listings.set(key, promise);
      }
      return promise;
    };
    for await (const definition of source) {
      signal?.throwIfAborted();
      const where = `host ${JSON.stringify(definition?.id)}`;
      if (typeof definition?.id !== 'string' || definition.id === '' || typeof definition.name !== 'string') {
        throw new InvalidArgumentError(`${where}: a listed host needs a string id and name`);
      }
      if (!Array.isArray(definition.disks)) throw new InvalidArgumentError(`${where}: disks must be a list`);
      if (definition.skippedDisks !== undefined && !Array.isArray(definition.skippedDisks)) {
        throw new InvalidArgumentError(`${where}: skippedDisks must be a list`);
      }
      const disks: Disk[] = [];
      const refs: CephImageRef[] = [];
      const skipped: SkippedDisk[] = (definition.skippedDisks ?? []).map((disk) =>
        checkedSkippedDisk(disk, where),
      );
      for (const disk of definition.disks) {
        if (typeof disk?.id !== 'string' || disk.id === '' || typeof disk.name !== 'string') {
          throw new InvalidArgumentError(`${where}: every disk needs a string id and name`);
        }
        const ref = checkedRef(disk.image, `${where}, disk ${disk.id}`);
        const cluster = clusterOf(ref);
        const listed = (await listing(cluster, ref.pool)).get(ref.image);
        if (!listed) {
          skipped.push({
            id: disk.id,
            name: disk.name,
            reason: 'backing-missing',
            detail:
              `the RBD image ${ref.pool}/${ref.image} does not exist on Ceph cluster ${cluster.name} ` +
              `(\`rbd ls ${ref.pool}\` does not list it)`,
          });
          continue;
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
        ...(skipped.length > 0 ? { skippedDisks: skipped } : {}),
        ...(definition.attributes ? { attributes: { ...definition.attributes } } : {}),
      };
    }
  }

  async function* hosts(callOptions: CallOptions = {}): AsyncGenerator<Host> {
    callOptions.signal?.throwIfAborted();
    using scope = withCallDeadline(callOptions, `listing the hosts of platform ${platformId}`);
    const call = { signal: scope.signal, logger: callOptions.logger };
    const source: AsyncIterable<CephHostDefinition> | Iterable<CephHostDefinition> = resolved.listHosts
      ? resolved.listHosts({
          ...(call.signal ? { signal: call.signal } : {}),
          ...(call.logger ? { logger: call.logger } : {}),
        })
      : (resolved.hosts ?? perImageHosts(call));
    yield* resolveHosts(source, call);
  }

  async function checkClusters(callOptions: {
    signal?: AbortSignal | undefined;
    logger?: Logger | undefined;
  }): Promise<void> {
    await Promise.all(
      [...clusters.values()].map((cluster) => runRbd(cluster.connection, ['ls', cluster.pool], callOptions)),
    );
  }

  async function verify(callOptions: CallOptions = {}): Promise<PlatformStatus> {
    const { signal } = callOptions;
    signal?.throwIfAborted();
    using scope = withCallDeadline(callOptions, `verifying platform ${platformId}`);
    const call = { signal: scope.signal, logger: callOptions.logger };
    try {
      // Every cluster answers and its pool can be listed, also those no host uses.
      await checkClusters(call);
      let hostCount = 0;
      for await (const _host of hosts(call)) hostCount++;
      return { status: 'normal', hostCount, checkedAt: new Date().toISOString() };
    } catch (error) {
      // Past the deadline (the scope's TimeoutError) the platform is abnormal; only the caller's abort throws.
      return abnormalStatus(error, signal ? { signal } : {});
    }
  }

  async function snapshotCommand(
    verb: 'create' | 'rm',
    ref: CephImageRef,
    name: string,
    rbd: RbdCallOptions,
  ): Promise<void> {
    await runRbd(
      clusterOf(ref).connection,
      ['snap', verb, '--no-progress', `${ref.pool}/${ref.image}@${name}`],
      rbd,
    );
  }

  async function createSnapshot(snapshotOptions: CreateSnapshotOptions): Promise<HostSnapshot> {
    const { host, name, quiesce } = snapshotOptions;
    snapshotOptions.signal?.throwIfAborted();
    if (quiesce === 'required') {
      // Before anything is created: there is nothing to remove afterwards.
      throw new QuiesceFailedError(
        `host ${host.id}: the job requires a quiesced snapshot, and platform ${platformId} (${resolved.kind}) ` +
          'cannot quiesce a guest (RBD snapshots are crash-consistent): freeze the guest yourself (fsfreeze, the ' +
          "QEMU guest agent) or run the job with quiesce 'preferred' or 'none'",
      );
    }
    assertSnapshotName(name);
    const refs = host.disks.map((disk) => imageOf(disk));
    if (refs.length === 0) throw new InvalidArgumentError(`host ${host.id} has no disks to snapshot`);
    using scope = withCallDeadline(snapshotOptions, `snapshotting host ${host.id}`);
    const signal = scope.signal;
    const logger = snapshotOptions.logger;
    // All at once: the snapshots of a host's images should be as close in time as rbd allows.
    const results = await mapLimited(refs, (ref) => snapshotCommand('create', ref, name, { signal, logger }));
    const failures = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failures.length === 0) {
      snapshotImages.set(name, refs);
      hostImages.set(host.id, refs);
      return {
        hostId: host.id,
        name,
        disks: host.disks.map((disk, i) => ({ diskId: disk.id, ref: snapshotRef(refs[i]!, name) })),
        consistency: 'disk',
      };
    }
    // Remove what was created (without the signal: an aborted job must not leave half a host snapshot).
    const created = refs.filter((_, i) => results[i]?.status === 'fulfilled');
    await mapLimited(created, (ref) => removeSnapshot(ref, name, { logger }));
    if (signal?.aborted) throw signal.reason;
    throw failures[0]!.reason;
  }

  async function removeSnapshot(ref: CephImageRef, name: string, rbd: RbdCallOptions): Promise<void> {
    try {
      await snapshotCommand('rm', ref, name, rbd);
    } catch (error) {
      if (NotFoundError.isInstance(error) && !rbd.signal?.aborted) return; // image or snapshot already gone
      throw error;
    }
  }

  /** Images that hold a snapshot of this name, by listing every cluster's pool. */
  async function findSnapshot(name: string, rbd: RbdCallOptions): Promise<CephImageRef[]> {
    const found: CephImageRef[] = [];
    for (const cluster of clusters.values()) {
      const images = await listImages(cluster, cluster.pool, rbd);
      for (const [image, listed] of images) {
        if (listed.snapshots.includes(name)) found.push({ cluster: cluster.name, pool: cluster.pool, image });
      }
    }
    return found;
  }

  async function releaseSnapshot(releaseOptions: ReleaseSnapshotOptions): Promise<void> {
    const { hostId, name } = releaseOptions;
    releaseOptions.signal?.throwIfAborted();
    assertSnapshotName(name);
    using scope = withCallDeadline(releaseOptions, `releasing snapshot ${name} of host ${hostId}`);
    const rbd: RbdCallOptions = { signal: scope.signal, logger: releaseOptions.logger };
    let refs = snapshotImages.get(name) ?? hostImages.get(hostId);
    if (!refs) {
      const single = resolved.hosts === undefined && !resolved.listHosts ? refFromId(hostId) : undefined;
      refs = single ? [single] : await findSnapshot(name, rbd);
    }
    const results = await mapLimited(refs, (ref) => removeSnapshot(ref, name, rbd));
    if (rbd.signal?.aborted) throw rbd.signal.reason;
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure) throw failure.reason;
    snapshotImages.delete(name);
  }

  const changedBlockReader = createCephRbdChangedBlockReader({ clusters, imageOf });

  const platform: CephRbdPlatform = {
    specificationVersion: 'v2',
    id: platformId,
    kind: resolved.kind,
    capabilities: { snapshots: 'host', quiesce: false, retainsSnapshotAsBase: true, changeTracking: 'exact' },
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
  return { platform, resolveHosts, checkClusters };
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
