import { randomUUID } from 'node:crypto';
import PQueue from 'p-queue';
import { InvalidSettingsError, NotFoundError } from '../errors/drkit-error.js';
import { type Placement, SyncProxyRegistry } from '../proxy/sync-proxy-registry.js';
import { chunkIdFromHash } from '../repository/chunk-id.js';
import { MAX_CHUNK_SIZE, MIN_CHUNK_SIZE } from '../repository/point-metadata.js';
import type { LedgerEntry, RecoveryPoint, Repository, UnreadablePoint } from '../repository/types.js';
import type { FullReadReason } from '../spec/v1/change-set.js';
import type { DiskTaskProgress, DiskTaskResult } from '../spec/v1/disk-task.js';
import type { Host } from '../spec/v1/host.js';
import type { Platform } from '../spec/v1/platform.js';
import type { DiskTask } from '../spec/v1/sync-proxy.js';
import { ChunkWorkerPool } from '../workers/chunk-worker-pool.js';
import { createInProcessSyncProxy, type InProcessSyncProxy } from './in-process-sync-proxy.js';
import { createRecordedSnapshot, releaseRecordedSnapshot, snapshotsInUse } from './side-effects.js';
import { resolveStallTimeoutSeconds } from './stall-watchdog.js';

/** Default chunk size, 1 MiB. */
export const DEFAULT_CHUNK_SIZE = 1024 * 1024;

/** Options of {@link createBackupEngine}. */
export interface BackupEngineOptions {
  /** Where points go. The engine does not close it. */
  readonly repository: Repository;
  /** The source platforms. */
  readonly platforms: readonly Platform[];
  /**
   * The Sync Proxies and their bindings. Default: one in-process proxy bound to every platform, with
   * `maxMountedDisks` equal to `concurrency`.
   */
  readonly proxies?: SyncProxyRegistry;
  /** Disk tasks running at once across all proxies. Default 4. */
  readonly concurrency?: number;
  /** Chunk size of new lineages (existing lineages keep theirs). Default 1 MiB. */
  readonly chunkSize?: number;
  /**
   * Seconds a disk task may go without progress (no byte read from its source, no chunk completed) before it
   * fails with a {@link TaskStalledError}: a hung source or chunk worker then cannot hold the task, its proxy slot
   * and the repository's lock forever. Given to every proxy's `run`. Default 600, a Sync Proxy's default
   * `httpTimeoutSeconds`.
   */
  readonly stallTimeoutSeconds?: number;
}

/** Options of {@link BackupEngine.backup}. */
export interface BackupJobOptions {
  /** Host ids or names to back up; default every host of the platforms. */
  readonly hosts?: readonly string[];
  /** Only hosts of this platform. */
  readonly platformId?: string;
  /** Read every disk in full (validity `full`, reason `requested`). */
  readonly full?: boolean;
  readonly signal?: AbortSignal;
  /** Progress of each disk task. */
  readonly onProgress?: (progress: DiskTaskProgress) => void;
  /** Called when a task is placed on a proxy or has to wait. */
  readonly onPlacement?: (placement: Placement) => void;
}

/** How one disk task ended. */
export type DiskTaskOutcome =
  | {
      readonly status: 'succeeded';
      readonly taskId: string;
      readonly hostId: string;
      readonly diskId: string;
      readonly proxyId: string;
      readonly result: DiskTaskResult;
    }
  | {
      readonly status: 'failed';
      readonly taskId: string;
      readonly hostId: string;
      readonly diskId: string;
      readonly proxyId: string | undefined;
      /** The error; a {@link DrkitError} unless something unexpected broke. */
      readonly error: unknown;
    };

/** The result of a backup job: one outcome per disk. A failed disk does not fail its siblings. */
export interface BackupJobResult {
  readonly jobId: string;
  readonly tasks: readonly DiskTaskOutcome[];
  /**
   * Points whose metadata could not be read when the job planned its tasks (see
   * {@link Repository.unreadablePoints}). Such a point's disk is unknown, so it may have been a disk's newest
   * point: a disk whose newest readable point is older than an unreadable one was read in full (validity `full`,
   * reason `parent-point-damaged`, the detail naming the points), never incrementally against an older point.
   * Their base snapshots are kept. Empty when every point is readable.
   */
  readonly unreadablePoints: readonly UnreadablePoint[];
  readonly succeeded: number;
  readonly failed: number;
}

/** What {@link BackupEngine.reconcile} did. */
export interface ReconcileReport {
  /** Side effects released on their source and removed from the ledger. */
  readonly released: readonly LedgerEntry[];
  /** Entries kept: snapshots still needed as the base of an incremental, or of a running job. */
  readonly kept: readonly LedgerEntry[];
  /** Entries whose release failed; they stay in the ledger for the next reconcile. */
  readonly failed: readonly { entry: LedgerEntry; error: unknown }[];
}

/** Length of the time stamp that starts a point id (`yyyymmddThhmmssSSS`): ids compare by time on it. */
const POINT_STAMP = 18;

/** The backup engine. Create it with {@link createBackupEngine}. */
export interface BackupEngine extends AsyncDisposable {
  /** The proxy registry the engine schedules on. */
  readonly proxies: SyncProxyRegistry;
  /**
   * Backs up hosts: one consistent snapshot per host (where the platform takes them), one disk task per disk,
   * placed on the Sync Proxies bound to the platform. Resolves when every task ended; inspect the outcomes.
   *
   * @throws {@link NotFoundError} when a named host does not exist; `signal.reason` when aborted.
   */
  backup(options?: BackupJobOptions): Promise<BackupJobResult>;
  /** Dry run of the placement of a job's disk tasks on the proxies, with the reason for each. */
  explain(options?: Pick<BackupJobOptions, 'hosts' | 'platformId' | 'signal'>): Promise<Placement[]>;
  /**
   * Releases source-side snapshots that an earlier crash or a lost proxy left behind (ledger entries of jobs
   * not running in this engine), and retained base snapshots no newest point needs any more.
   */
  reconcile(options?: { signal?: AbortSignal }): Promise<ReconcileReport>;
  /** Stops the default proxy's worker threads. Does not close the repository. */
  close(): Promise<void>;
}

function validateChunkSize(size: number): number {
  if (
    !Number.isInteger(size) ||
    size < MIN_CHUNK_SIZE ||
    size > MAX_CHUNK_SIZE ||
    (size & (size - 1)) !== 0
  ) {
    throw new InvalidSettingsError('chunkSize', `must be a power of two from 256 KiB to 4 MiB, got ${size}`);
  }
  return size;
}

/**
 * Creates the backup engine.
 *
 * @throws {@link InvalidSettingsError} for an invalid chunk size, concurrency or stall timeout.
 * @example
 * ```ts
 * const repository = await openRepository({ store: createLocalFolderStore({ path: './repo' }), create: true });
 * const engine = createBackupEngine({ repository, platforms: [createLocalDiskPlatform({ disks: [{ path }] })] });
 * const job = await engine.backup({ onProgress: (p) => console.log(p.diskId, p.bytesDone) });
 * await engine.close();
 * ```
 */
export function createBackupEngine(options: BackupEngineOptions): BackupEngine {
  const { repository } = options;
  const concurrency = options.concurrency ?? 4;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new InvalidSettingsError('concurrency', `must be a positive whole number, got ${concurrency}`);
  }
  const chunkSize = validateChunkSize(options.chunkSize ?? DEFAULT_CHUNK_SIZE);
  const stallTimeoutSeconds = resolveStallTimeoutSeconds(options.stallTimeoutSeconds, 'stallTimeoutSeconds');
  const platforms = new Map<string, Platform>();
  for (const [i, p] of options.platforms.entries()) {
    if (platforms.has(p.id))
      throw new InvalidSettingsError(`platforms[${i}].id`, `duplicate platform id ${p.id}`);
    platforms.set(p.id, p);
  }
  let defaultProxy: InProcessSyncProxy | undefined;
  let proxies = options.proxies;
  if (!proxies) {
    proxies = new SyncProxyRegistry();
    defaultProxy = createInProcessSyncProxy({
      platforms: options.platforms,
      repository,
      workers: new ChunkWorkerPool(),
      settings: { maxMountedDisks: Math.min(150, concurrency) },
    });
    proxies.register(defaultProxy);
    for (const id of platforms.keys()) proxies.bind(defaultProxy.id, id);
  }
  const registry = proxies;
  const queue = new PQueue({ concurrency });
  const runningJobs = new Set<string>();

  async function selectHosts(job: Pick<BackupJobOptions, 'hosts' | 'platformId' | 'signal'>) {
    const wanted = job.hosts ? new Set(job.hosts) : undefined;
    const found = new Set<string>();
    const selected: { platform: Platform; host: Host }[] = [];
    if (job.platformId !== undefined && !platforms.has(job.platformId)) {
      throw new NotFoundError(`no platform ${job.platformId} is configured`);
    }
    for (const platform of platforms.values()) {
      if (job.platformId !== undefined && platform.id !== job.platformId) continue;
      for await (const host of platform.hosts({ signal: job.signal })) {
        const match = !wanted || wanted.has(host.id) || wanted.has(host.name);
        if (!match) continue;
        if (wanted) {
          found.add(host.id);
          found.add(host.name);
        }
        selected.push({ platform, host });
      }
    }
    const missing = wanted ? [...wanted].filter((h) => !found.has(h)) : [];
    if (missing.length > 0) {
      throw new NotFoundError(`no host named ${missing.join(', ')} on the configured platforms`);
    }
    return selected;
  }

  async function planTask(
    jobId: string,
    platform: Platform,
    host: Host,
    diskIndex: number,
    full: boolean,
    damaged: Set<string> | undefined,
    unreadable: readonly UnreadablePoint[],
    signal: AbortSignal | undefined,
  ): Promise<DiskTask> {
    const disk = host.disks[diskIndex]!;
    const lineage = await repository.points(
      { platformId: platform.id, hostId: host.id, diskId: disk.id },
      { signal },
    );
    const parent: RecoveryPoint | undefined = lineage[lineage.length - 1];
    // An unreadable point taken at or after the parent may be this disk's real newest point (its lineage is in
    // the unreadable blob). An incremental against the older parent could then miss changes, with a source whose
    // tracking moved on when that point committed: read in full instead, and say why.
    const shadowing = parent
      ? unreadable.filter((u) => u.id.slice(0, POINT_STAMP) >= parent.id.slice(0, POINT_STAMP))
      : [];
    let fullReason: FullReadReason | undefined;
    let fullReadDetail: string | undefined;
    if (!parent) fullReason = 'first-backup';
    else if (full) fullReason = 'requested';
    else if (!parent.checkpoint) fullReason = 'tracking-disabled';
    else if (shadowing.length > 0) {
      fullReason = 'parent-point-damaged';
      fullReadDetail = `the metadata of point(s) ${shadowing.map((u) => `${u.id} (${u.problem})`).join(', ')}, not older than the newest readable point ${parent.id}, cannot be read; one may be this disk's newest point`;
    } else if (damaged && damaged.size > 0 && (await referencesDamaged(parent, damaged, signal))) {
      fullReason = 'parent-point-damaged';
    }
    return {
      id: `${jobId}/${host.id}/${disk.id}`,
      jobId,
      platformId: platform.id,
      host,
      disk,
      base: fullReason === undefined ? parent?.checkpoint : undefined,
      fullReason,
      ...(fullReadDetail === undefined ? {} : { fullReadDetail }),
      parentPointId: parent?.id,
      chunkSize: parent?.chunkSize ?? chunkSize,
    };
  }

  async function referencesDamaged(point: RecoveryPoint, damaged: Set<string>, signal?: AbortSignal) {
    const index = await repository.readIndex(point, { signal });
    for (let i = 0; i < index.chunkCount; i++) {
      if (!index.isZero(i) && damaged.has(chunkIdFromHash(index.idAt(i)))) return true;
    }
    return false;
  }

  async function runTask(task: DiskTask, job: BackupJobOptions): Promise<DiskTaskOutcome> {
    const ids = { taskId: task.id, hostId: task.host.id, diskId: task.disk.id };
    let proxyId: string | undefined;
    try {
      return await queue.add(
        async () => {
          const lease = await registry.acquire(task, { signal: job.signal, onWait: job.onPlacement });
          proxyId = lease.proxy.id;
          job.onPlacement?.(lease.placement);
          try {
            const result = await lease.proxy.run(task, {
              signal: job.signal,
              onProgress: job.onProgress,
              stallTimeoutSeconds,
            });
            return { status: 'succeeded' as const, ...ids, proxyId: lease.proxy.id, result };
          } finally {
            lease.release();
          }
        },
        { signal: job.signal },
      );
    } catch (error) {
      if (job.signal?.aborted) throw job.signal.reason;
      return { status: 'failed', ...ids, proxyId, error };
    }
  }

  async function backupHost(
    jobId: string,
    platform: Platform,
    host: Host,
    job: BackupJobOptions,
    damaged: Set<string>,
    unreadable: readonly UnreadablePoint[],
  ): Promise<DiskTaskOutcome[]> {
    const signal = job.signal;
    const tasks: DiskTask[] = [];
    for (let i = 0; i < host.disks.length; i++) {
      tasks.push(await planTask(jobId, platform, host, i, job.full ?? false, damaged, unreadable, signal));
    }
    if (platform.capabilities.snapshots !== 'host') {
      return Promise.all(tasks.map((t) => runTask(t, job)));
    }
    let snapshot: Awaited<ReturnType<typeof createRecordedSnapshot>>;
    try {
      snapshot = await createRecordedSnapshot(platform, repository, host, jobId, signal);
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      return tasks.map((t) => ({
        status: 'failed' as const,
        taskId: t.id,
        hostId: host.id,
        diskId: t.disk.id,
        proxyId: undefined,
        error,
      }));
    }
    try {
      return await Promise.all(tasks.map((t) => runTask({ ...t, snapshot: snapshot.ref }, job)));
    } finally {
      await settleSnapshots(platform, host.id, snapshot.entry, unreadable.length > 0, signal);
    }
  }

  /** After a host's tasks: keep the snapshots newest points need as a base, release the others. */
  async function settleSnapshots(
    platform: Platform,
    hostId: string,
    fresh: LedgerEntry,
    keepRetained: boolean,
    signal?: AbortSignal,
  ) {
    if (!platform.capabilities.retainsSnapshotAsBase) {
      await releaseRecordedSnapshot(platform, repository, fresh, signal);
      return;
    }
    const inUse = await snapshotsInUse(repository, platform.id, hostId, signal);
    for (const entry of await repository.ledger.list({ signal })) {
      if (entry.platformId !== platform.id || entry.hostId !== hostId) continue;
      if (entry.id !== fresh.id && entry.state === 'pending') continue; // another job's snapshot
      // While some point is unreadable, a retained base may be its base: keep it until that point is repaired.
      if (keepRetained && entry.id !== fresh.id && entry.state === 'retained') continue;
      if (inUse.has(entry.name)) {
        if (entry.state !== 'retained')
          await repository.ledger.update({ ...entry, state: 'retained' }, { signal });
      } else {
        await releaseRecordedSnapshot(platform, repository, entry, signal);
      }
    }
  }

  return {
    proxies: registry,

    async backup(job: BackupJobOptions = {}): Promise<BackupJobResult> {
      job.signal?.throwIfAborted();
      const jobId = randomUUID();
      runningJobs.add(jobId);
      try {
        const hosts = await selectHosts(job);
        const damaged = await repository.damagedChunks({ signal: job.signal });
        const unreadablePoints = await repository.unreadablePoints({ signal: job.signal });
        const perHost = await Promise.all(
          hosts.map(({ platform, host }) =>
            backupHost(jobId, platform, host, job, damaged, unreadablePoints),
          ),
        );
        const tasks = perHost.flat();
        const succeeded = tasks.filter((t) => t.status === 'succeeded').length;
        return { jobId, tasks, succeeded, failed: tasks.length - succeeded, unreadablePoints };
      } finally {
        runningJobs.delete(jobId);
      }
    },

    async explain(job = {}): Promise<Placement[]> {
      const hosts = await selectHosts(job);
      const tasks = hosts.flatMap(({ platform, host }) =>
        host.disks.map((disk) => ({ id: `${host.id}/${disk.id}`, platformId: platform.id })),
      );
      return registry.plan(tasks);
    },

    async reconcile({ signal } = {}): Promise<ReconcileReport> {
      const released: LedgerEntry[] = [];
      const kept: LedgerEntry[] = [];
      const failed: { entry: LedgerEntry; error: unknown }[] = [];
      const inUseCache = new Map<string, Set<string>>();
      // While some point is unreadable, a retained base may be its base: keep every retained entry.
      const keepRetained = (await repository.unreadablePoints({ signal })).length > 0;
      for (const entry of await repository.ledger.list({ signal })) {
        const platform = platforms.get(entry.platformId);
        if (!platform) {
          failed.push({
            entry,
            error: new NotFoundError(`platform ${entry.platformId} is not configured in this engine`),
          });
          continue;
        }
        if (
          (entry.state === 'pending' && runningJobs.has(entry.jobId)) ||
          (keepRetained && entry.state === 'retained')
        ) {
          kept.push(entry);
          continue;
        }
        const key = `${entry.platformId}\n${entry.hostId}`;
        let inUse = inUseCache.get(key);
        if (!inUse) {
          inUse = platform.capabilities.retainsSnapshotAsBase
            ? await snapshotsInUse(repository, entry.platformId, entry.hostId, signal)
            : new Set();
          inUseCache.set(key, inUse);
        }
        if (inUse.has(entry.name)) {
          if (entry.state !== 'retained')
            await repository.ledger.update({ ...entry, state: 'retained' }, { signal });
          kept.push(entry);
          continue;
        }
        try {
          await releaseRecordedSnapshot(platform, repository, entry, signal);
          released.push(entry);
        } catch (error) {
          if (signal?.aborted) throw signal.reason;
          failed.push({ entry, error });
        }
      }
      return { released, kept, failed };
    },

    async close() {
      await queue.onIdle();
      await defaultProxy?.close();
    },

    async [Symbol.asyncDispose]() {
      await this.close();
    },
  };
}
