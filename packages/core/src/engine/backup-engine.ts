import { randomUUID } from 'node:crypto';
import PQueue from 'p-queue';
import {
  InvalidArgumentError,
  InvalidSettingsError,
  NotFoundError,
  QuiesceFailedError,
} from '../errors/drkit-error.js';
import { type Placement, SyncProxyRegistry } from '../proxy/sync-proxy-registry.js';
import { chunkIdFromHash, isZeroId } from '../repository/chunk-id.js';
import { MAX_CHUNK_SIZE, MIN_CHUNK_SIZE } from '../repository/point-metadata.js';
import type {
  HostLock,
  LedgerEntry,
  RecoveryPoint,
  Repository,
  UnreadablePoint,
} from '../repository/types.js';
import type {
  Disk,
  DiskTask,
  DiskTaskProgress,
  DiskTaskResult,
  FullReadReason,
  Host,
  HostSnapshot,
  Logger,
  Platform,
  QuiesceMode,
  SkipReason,
} from '../spec/v2/index.js';
import { describeError } from '../util/describe-error.js';
import { createInProcessSyncProxy, type InProcessSyncProxy } from './in-process-sync-proxy.js';
import { KeyedMutex } from './keyed-mutex.js';
import {
  LEDGER_LEASE_MARGIN_SECONDS,
  LedgerLeases,
  resolveEngineId,
  resolveLedgerLeaseSeconds,
} from './ledger-leases.js';
import { ProgressTracker } from './progress-tracker.js';
import {
  createRecordedSnapshot,
  releaseRecordedSnapshot,
  resolveReleaseTimeoutSeconds,
  resolveSnapshotTimeoutSeconds,
  snapshotsInUse,
  withDeadline,
} from './side-effects.js';
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
  /**
   * Disk tasks running at once across all proxies. Default 4. It also bounds the hosts that hold a fresh snapshot
   * at once: a host is snapshotted when its first disk task is admitted and released when its last one ends, and
   * no further host is admitted while `concurrency` hosts are in progress (a host with several disks counts once).
   */
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
  /**
   * Seconds one snapshot release may take (the source's `releaseSnapshot` call and the ledger update), also at
   * the end of a job that was aborted: releases never use the job's signal. Past it the release is given up with
   * a {@link TimeoutError}, reported in {@link BackupJobResult.releaseFailures} (or {@link ReconcileReport.failed})
   * and its ledger entry kept for {@link BackupEngine.reconcile}. A number above 0, at most 86400; fractions are
   * allowed. Default 300 ({@link DEFAULT_RELEASE_TIMEOUT_SECONDS}).
   */
  readonly releaseTimeoutSeconds?: number;
  /**
   * Seconds the platform's `createSnapshot` may take (its `deadline`; past it the call is given up with a
   * {@link TimeoutError}, the snapshot released by name and the host's tasks failed). A number above 0, at most
   * 86400; default 14400 ({@link DEFAULT_SNAPSHOT_TIMEOUT_SECONDS}: a first EBS snapshot of a large volume).
   */
  readonly snapshotTimeoutSeconds?: number;
  /**
   * Stable id of this engine instance, recorded as the `owner` of every ledger entry it writes (with the host
   * name and process id, for humans). Default: a random UUID per engine. Give a process a fixed id (e.g. the Sync
   * Proxy's name) so that after a restart it recognises the entries its previous run left and `reconcile()`
   * releases them at once instead of waiting for their lease to expire. It must be unique among the engines that
   * run at the same time on one repository: an engine treats every entry with its id as its own. 1-128
   * printable ASCII characters, no space.
   */
  readonly engineId?: string;
  /**
   * Seconds of the lease on the ledger entries this engine's running jobs hold (`leaseExpiresAt`). The engine
   * renews them every third of it; another engine's {@link BackupEngine.reconcile} releases a pending entry only
   * once its lease has expired (plus {@link LEDGER_LEASE_MARGIN_SECONDS}). A number above 0, at most 86400;
   * default 600 ({@link DEFAULT_LEDGER_LEASE_SECONDS}).
   */
  readonly ledgerLeaseSeconds?: number;
  /**
   * The wall clock of ledger times (`createdAt`, `leaseExpiresAt`, and expiry in `reconcile()`) and of the time a
   * host snapshot's data is from (the points' `snapshotAt`, read just before the snapshot is taken). For tests.
   */
  readonly now?: () => Date;
  /**
   * Milliseconds between attempts to take a host that a job of another engine (process) on the same repository
   * holds ({@link Repository.lockHost}). Default 5000.
   */
  readonly hostLockPollIntervalMs?: number;
  /**
   * Where the engine writes what it does (jobs, snapshots, task outcomes), handed on to the proxies and readers of
   * every task. A pino logger or `console`; default: nothing is logged. No secret is ever logged.
   */
  readonly logger?: Logger;
}

/** Options of {@link BackupEngine.backup}. */
export interface BackupJobOptions {
  /** Host ids or names to back up; default every host of the platforms. */
  readonly hosts?: readonly string[];
  /** Only hosts of this platform. */
  readonly platformId?: string;
  /** Read every disk in full (validity `full`, reason `requested`). */
  readonly full?: boolean;
  /**
   * Whether to quiesce the guests before their snapshots (see {@link QuiesceMode}). Default `preferred`: quiesced
   * where the platform can, crash consistent elsewhere; every point records what was achieved (`consistency`).
   * With `required`, a host whose snapshot cannot be quiesced fails its tasks with a `QuiesceFailedError`
   * (a platform without snapshots too: a live read is never application consistent).
   */
  readonly quiesce?: QuiesceMode;
  readonly signal?: AbortSignal;
  /**
   * Progress of each disk task: `waiting` when the job starts (for the host, which another job may hold, and for
   * a slot), `snapshotting` while its host's snapshot is taken, then `reading`, `committing`, `done`.
   */
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
    }
  | {
      /** A disk the platform lists as one it cannot protect ({@link Host.skippedDisks}): nothing was read. */
      readonly status: 'skipped';
      readonly taskId: string;
      readonly hostId: string;
      readonly diskId: string;
      readonly proxyId: undefined;
      /** Why, as the platform said. */
      readonly reason: SkipReason;
      readonly detail: string;
    };

/**
 * A host snapshot the engine could not settle after its disk tasks: not released (or not recorded as the base of
 * the next incremental). The points its tasks committed are whole; the snapshot may still exist on the source, and
 * its ledger entry stays, so {@link BackupEngine.reconcile} releases it (or keeps it as a base) later.
 */
export interface SnapshotReleaseFailure {
  readonly platformId: string;
  readonly hostId: string;
  /** The snapshot's name on the source (`drkit-<timestamp>-<id>`). */
  readonly snapshot: string;
  /** Its ledger entry, still recorded. */
  readonly entryId: string;
  /** Why: a {@link TimeoutError} past `releaseTimeoutSeconds`, or the source's or the ledger's error. */
  readonly error: unknown;
}

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
  /** Disks not backed up because their platform cannot protect them (outcomes `skipped`). Not a success. */
  readonly skipped: number;
  /**
   * Snapshots of this job's hosts (fresh ones, or older bases no point needs any more) whose release failed.
   * Empty when every snapshot was released or kept as a base. Does not change the outcome of any task.
   */
  readonly releaseFailures: readonly SnapshotReleaseFailure[];
}

/**
 * Why {@link BackupEngine.reconcile} kept an entry:
 * - `base`: a newest point needs the snapshot as the base of the next incremental (the entry is `retained`);
 * - `unreadable-points`: a retained base kept while some point's metadata cannot be read (it may be its base);
 * - `job-running`: a job of this engine holds it;
 * - `held-by-another-engine`: its owner is another engine whose lease on it has not expired.
 */
export type ReconcileKeptReason = 'base' | 'unreadable-points' | 'job-running' | 'held-by-another-engine';

/** An entry {@link BackupEngine.reconcile} kept, and why. */
export interface ReconcileKeptEntry {
  readonly entry: LedgerEntry;
  readonly reason: ReconcileKeptReason;
  /** The reason in words, e.g. the owner and lease expiry of an entry held by another engine. */
  readonly detail: string;
}

/** What {@link BackupEngine.reconcile} did. */
export interface ReconcileReport {
  /** Side effects released on their source and removed from the ledger. */
  readonly released: readonly LedgerEntry[];
  /** Entries kept, each with its reason. */
  readonly kept: readonly ReconcileKeptEntry[];
  /** Entries whose release failed; they stay in the ledger for the next reconcile. */
  readonly failed: readonly { entry: LedgerEntry; error: unknown }[];
}

/** Length of the time stamp that starts a point id (`yyyymmddThhmmssSSS`): ids compare by time on it. */
const POINT_STAMP = 18;

/** What every host of one running job shares. */
interface JobRun {
  readonly id: string;
  readonly options: BackupJobOptions;
  /** Chunks `verify` marked damaged, when the job started. */
  readonly damaged: Set<string>;
  /** Points whose metadata could not be read, when the job started. */
  readonly unreadable: readonly UnreadablePoint[];
  /** Snapshots of the job's hosts that could not be settled (filled as hosts finish). */
  readonly failures: SnapshotReleaseFailure[];
}

/** The backup engine. Create it with {@link createBackupEngine}. */
export interface BackupEngine extends AsyncDisposable {
  /** The engine's id, the `owner.engineId` of the ledger entries it writes (see {@link BackupEngineOptions.engineId}). */
  readonly engineId: string;
  /** The proxy registry the engine schedules on. */
  readonly proxies: SyncProxyRegistry;
  /**
   * Backs up hosts: one disk task per disk, placed on the Sync Proxies bound to the platform, and one consistent
   * snapshot per host (where the platform takes them), taken when the host's first disk task is admitted and
   * settled when its last one ends: released, or kept as the base of the next incremental while a newest point
   * needs it. At most `concurrency` hosts are in progress at once. Jobs of one engine that name the same host
   * take turns on it (the later one plans from the earlier one's points); different hosts run in parallel.
   * Resolves when every task ended and every snapshot was settled; inspect the outcomes and `releaseFailures`.
   *
   * @throws {@link NotFoundError} when a named host does not exist; `signal.reason` when aborted (after the job's
   * snapshots were released, within `releaseTimeoutSeconds` each; a release that fails then is left in the ledger
   * for {@link BackupEngine.reconcile}).
   */
  backup(options?: BackupJobOptions): Promise<BackupJobResult>;
  /** Dry run of the placement of a job's disk tasks on the proxies, with the reason for each. */
  explain(options?: Pick<BackupJobOptions, 'hosts' | 'platformId' | 'signal'>): Promise<Placement[]>;
  /**
   * Releases source-side snapshots that an earlier crash or a lost proxy left behind, snapshots whose release
   * failed after a job, and retained base snapshots no newest point needs any more. Each release is bounded by
   * `releaseTimeoutSeconds`.
   *
   * A `pending` entry is released only when nobody holds it: its owner is this engine and its job is not running,
   * or its lease (`leaseExpiresAt`) expired more than {@link LEDGER_LEASE_MARGIN_SECONDS} ago by this engine's
   * clock, or it has no owner or lease (written by an older drkit). An entry another engine holds is reported in
   * `kept` (`held-by-another-engine`), untouched. Hence the clocks of engines sharing a repository must agree
   * within {@link LEDGER_LEASE_MARGIN_SECONDS}; an engine whose clock runs ahead by more may release snapshots
   * another engine still reads. An entry of a kind this engine cannot release (anything but `snapshot`) is
   * reported in `failed` and left recorded.
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
 * @throws {@link InvalidSettingsError} for an invalid chunk size, concurrency, stall timeout or release timeout.
 * @example
 * ```ts
 * const repository = await openRepository({ store: createLocalFolderStore({ path: './repo' }), create: true });
 * const engine = createBackupEngine({ repository, platforms: [createLocalDiskPlatform({ id: 'local', disks: [{ path }] })] });
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
  const releaseTimeoutSeconds = resolveReleaseTimeoutSeconds(
    options.releaseTimeoutSeconds,
    'releaseTimeoutSeconds',
  );
  const snapshotTimeoutSeconds = resolveSnapshotTimeoutSeconds(
    options.snapshotTimeoutSeconds,
    'snapshotTimeoutSeconds',
  );
  const engineId = resolveEngineId(options.engineId, 'engineId');
  const ledgerLeaseSeconds = resolveLedgerLeaseSeconds(options.ledgerLeaseSeconds, 'ledgerLeaseSeconds');
  const now = options.now ?? (() => new Date());
  const logger = options.logger;
  const hostLockPollIntervalMs = options.hostLockPollIntervalMs ?? 5000;
  if (!Number.isFinite(hostLockPollIntervalMs) || hostLockPollIntervalMs < 1) {
    throw new InvalidSettingsError(
      'hostLockPollIntervalMs',
      `must be a positive number of milliseconds, got ${hostLockPollIntervalMs}`,
    );
  }
  const leases = new LedgerLeases(repository, engineId, ledgerLeaseSeconds, now);
  const platforms = new Map<string, Platform>();
  for (const [i, p] of options.platforms.entries()) {
    if (p.specificationVersion !== 'v2') {
      throw new InvalidSettingsError(
        `platforms[${i}].specificationVersion`,
        `this engine implements specification v2, the platform declares ${String(p.specificationVersion)}`,
      );
    }
    if (typeof p.id !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(p.id)) {
      throw new InvalidSettingsError(
        `platforms[${i}].id`,
        'must be 1-128 printable ASCII characters without spaces, chosen by the user: points are filed under it',
      );
    }
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
      settings: { maxMountedDisks: Math.min(150, concurrency) },
      logger: options.logger,
    });
    proxies.register(defaultProxy);
    for (const id of platforms.keys()) proxies.bind(defaultProxy.id, id);
  }
  const registry = proxies;
  /** Disk tasks: at most `concurrency` run at once. */
  const queue = new PQueue({ concurrency });
  /** Hosts in progress (holding, or about to take, a fresh snapshot): at most `concurrency` at once. */
  const hostSlots = new PQueue({ concurrency });
  /** One job at a time per host. */
  const hostLocks = new KeyedMutex();
  const runningJobs = new Set<string>();

  const taskIdOf = (jobId: string, host: Host, disk: { readonly id: string }) =>
    `${jobId}/${host.id}/${disk.id}`;

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

  async function planTask(run: JobRun, platform: Platform, host: Host, diskIndex: number): Promise<DiskTask> {
    const { id: jobId, damaged, unreadable } = run;
    const { signal, full = false } = run.options;
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
    } else if (damaged.size > 0 && (await referencesDamaged(parent, damaged, signal))) {
      fullReason = 'parent-point-damaged';
    }
    return {
      id: taskIdOf(jobId, host, disk),
      jobId,
      platformId: platform.id,
      host,
      disk,
      base: fullReason === undefined ? parent?.checkpoint : undefined,
      fullReason,
      ...(fullReadDetail === undefined ? {} : { fullReadDetail }),
      parentPointId: parent?.id,
      chunkSize: parent?.chunkSize ?? newLineageChunkSize(platform),
    };
  }

  /**
   * The chunk size of a new lineage: the engine's, or the reader's block size when that is larger (EBS reads
   * 512 KiB blocks); a block size past {@link MAX_CHUNK_SIZE} is left for the task to refuse.
   */
  function newLineageChunkSize(platform: Platform): number {
    const block = platform.changedBlockReader.blockSize;
    return Number.isSafeInteger(block) &&
      block > chunkSize &&
      block <= MAX_CHUNK_SIZE &&
      (block & (block - 1)) === 0
      ? block
      : chunkSize;
  }

  async function referencesDamaged(point: RecoveryPoint, damaged: Set<string>, signal?: AbortSignal) {
    const index = await repository.openIndex(point, { signal });
    for await (const segment of index.segments({ signal })) {
      if (segment.zero) continue;
      for (let at = 0; at < segment.ids.byteLength; at += 32) {
        const id = segment.ids.subarray(at, at + 32);
        if (!isZeroId(id) && damaged.has(chunkIdFromHash(id))) return true;
      }
    }
    return false;
  }

  /** The snapshot of one host for one job, taken by the first of its disk tasks to be admitted. */
  function hostSnapshot(run: JobRun, platform: Platform, host: Host) {
    let taking: Promise<{ snapshot: HostSnapshot; snapshotAt: string }> | undefined;
    let taken: LedgerEntry | undefined;
    return {
      /** Whether a task started taking it. */
      get started(): boolean {
        return taking !== undefined;
      },
      /** Its ledger entry once it exists. */
      get entry(): LedgerEntry | undefined {
        return taken;
      },
      /**
       * Takes it once; every task of the host gets the same reference and time (or the same error). `snapshotAt`
       * is the engine's clock just before the platform was asked.
       */
      take(): Promise<{ snapshot: HostSnapshot; snapshotAt: string }> {
        taking ??= createRecordedSnapshot(platform, repository, host, run.id, {
          signal: run.options.signal,
          quiesce: run.options.quiesce ?? 'preferred',
          snapshotTimeoutSeconds,
          ...(logger === undefined ? {} : { logger }),
          leases,
          releaseTimeoutSeconds,
          onReleaseFailure: (entry, error) => run.failures.push(releaseFailure(entry, error)),
        }).then(({ snapshot, entry, snapshotAt }) => {
          taken = entry;
          logger?.info(
            {
              platformId: platform.id,
              hostId: host.id,
              snapshot: snapshot.name,
              consistency: snapshot.consistency,
            },
            'host snapshot taken',
          );
          return { snapshot, snapshotAt };
        });
        return taking;
      },
    };
  }

  function failedOutcome(run: JobRun, host: Host, disk: Disk, error: unknown): DiskTaskOutcome {
    const ids = { taskId: taskIdOf(run.id, host, disk), hostId: host.id, diskId: disk.id };
    logger?.warn({ ...ids, error: describeError(error) }, 'disk task failed');
    return { status: 'failed', ...ids, proxyId: undefined, error };
  }

  function releaseFailure(entry: LedgerEntry, error: unknown): SnapshotReleaseFailure {
    return {
      platformId: entry.platformId,
      hostId: entry.hostId,
      snapshot: entry.name,
      entryId: entry.id,
      error,
    };
  }

  async function runTask(
    task: DiskTask,
    job: BackupJobOptions,
    snapshot: ReturnType<typeof hostSnapshot> | undefined,
  ): Promise<DiskTaskOutcome> {
    const ids = { taskId: task.id, hostId: task.host.id, diskId: task.disk.id };
    let proxyId: string | undefined;
    try {
      // Without the queue's `signal` option: p-queue would free the slot at the abort while the task still runs.
      return await queue.add(async () => {
        job.signal?.throwIfAborted();
        const lease = await registry.acquire(task, { signal: job.signal, onWait: job.onPlacement });
        proxyId = lease.proxy.id;
        job.onPlacement?.(lease.placement);
        try {
          let taken: { snapshot: HostSnapshot; snapshotAt: string } | undefined;
          if (snapshot) {
            // Admitted: the host's first task takes the snapshot, the others wait for the same one.
            if (!snapshot.started) new ProgressTracker(ids, job.onProgress).setState('snapshotting');
            taken = await snapshot.take();
          }
          const run = taken ? { ...task, snapshot: taken.snapshot, snapshotAt: taken.snapshotAt } : task;
          const result = await lease.proxy.run(run, {
            signal: job.signal,
            ...(logger === undefined ? {} : { logger }),
            onProgress: job.onProgress,
            stallTimeoutSeconds,
          });
          return { status: 'succeeded' as const, ...ids, proxyId: lease.proxy.id, result };
        } finally {
          lease.release();
        }
      });
    } catch (error) {
      if (job.signal?.aborted) throw job.signal.reason;
      logger?.warn({ ...ids, proxyId, error: describeError(error) }, 'disk task failed');
      return { status: 'failed', ...ids, proxyId, error };
    }
  }

  /** Backs up one host: waits for the host (one job at a time) and, for a snapshotted host, for a host slot. */
  async function backupHost(run: JobRun, platform: Platform, host: Host): Promise<DiskTaskOutcome[]> {
    const job = run.options;
    for (const disk of host.disks) {
      const ids = { taskId: taskIdOf(run.id, host, disk), hostId: host.id, diskId: disk.id };
      new ProgressTracker(ids, job.onProgress).setState('waiting');
    }
    // The host first, then a slot: a job never holds a slot while it waits for a host another job holds.
    const skipped: DiskTaskOutcome[] = (host.skippedDisks ?? []).map((disk) => ({
      status: 'skipped',
      taskId: taskIdOf(run.id, host, disk),
      hostId: host.id,
      diskId: disk.id,
      proxyId: undefined,
      reason: disk.reason,
      detail: disk.detail,
    }));
    if (job.quiesce === 'required' && platform.capabilities.snapshots !== 'host') {
      const error = new QuiesceFailedError(
        `host ${host.id}: the job requires a quiesced snapshot, and platform ${platform.id} (${platform.kind}) reads disks live`,
      );
      return [...host.disks.map((disk) => failedOutcome(run, host, disk, error)), ...skipped];
    }
    const unlock = await hostLocks.lock(`${platform.id}\n${host.id}`, job.signal);
    let hostLock: HostLock | undefined;
    try {
      // And across processes: another engine on this repository may be backing up the host.
      hostLock = await repository.lockHost(
        { platformId: platform.id, hostId: host.id },
        {
          signal: job.signal,
          pollIntervalMs: hostLockPollIntervalMs,
          onWait: (heldBy) =>
            logger?.info({ platformId: platform.id, hostId: host.id, heldBy }, 'waiting for the host'),
        },
      );
      if (platform.capabilities.snapshots !== 'host')
        return [...(await runHost(run, platform, host, hostLock)), ...skipped];
      // The slot is held until the host's snapshot is settled, also after an abort (hence no `signal` option).
      const outcomes = await hostSlots.add(() => {
        job.signal?.throwIfAborted();
        return runHost(run, platform, host, hostLock);
      });
      return [...outcomes, ...skipped];
    } finally {
      await hostLock
        ?.release()
        .catch((error: unknown) =>
          logger?.warn(
            { hostId: host.id, error: describeError(error) },
            'the host lock could not be removed',
          ),
        );
      unlock();
    }
  }

  async function runHost(
    run: JobRun,
    platform: Platform,
    host: Host,
    hostLock: HostLock | undefined,
  ): Promise<DiskTaskOutcome[]> {
    const job = run.options;
    const signal = job.signal;
    const tasks: DiskTask[] = [];
    try {
      // Planned under the host's lock: the parent is the newest point, also one an earlier job just committed.
      for (let i = 0; i < host.disks.length; i++) {
        tasks.push(await planTask(run, platform, host, i));
      }
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      return host.disks.map((disk) => failedOutcome(run, host, disk, error));
    }
    const snapshot =
      platform.capabilities.snapshots === 'host' ? hostSnapshot(run, platform, host) : undefined;
    try {
      // Every task ends (also after an abort) before the snapshot they read is settled.
      const settled = await Promise.allSettled(tasks.map((t) => runTask(t, job, snapshot)));
      const outcomes: DiskTaskOutcome[] = [];
      for (const s of settled) {
        if (s.status === 'rejected') throw signal?.aborted ? signal.reason : s.reason;
        outcomes.push(s.value);
      }
      return outcomes;
    } finally {
      if (snapshot?.entry) {
        // No renewal from here on (the lease has at least two thirds left): a renewal must not race the release.
        await leases.drop(snapshot.entry.id);
        // Settle only while this job still holds the host: a job paused past the lock's stale threshold may find
        // another job working on it, and must then leave its snapshot to reconcile().
        let held = true;
        try {
          await withDeadline(releaseTimeoutSeconds, `confirming the lock of host ${host.id}`, (bounded) =>
            hostLock ? hostLock.confirm({ signal: bounded }) : Promise.resolve(),
          );
        } catch (error) {
          held = false;
          run.failures.push(releaseFailure(snapshot.entry, error));
        }
        if (held) {
          await settleSnapshots(platform, host.id, snapshot.entry, run.unreadable.length > 0, run.failures);
        }
      }
    }
  }

  /**
   * After a host's tasks: keep the snapshots newest points need as a base, release the others. Never with the
   * job's signal, each step within `releaseTimeoutSeconds`; what fails is reported and left in the ledger.
   */
  async function settleSnapshots(
    platform: Platform,
    hostId: string,
    fresh: LedgerEntry,
    keepRetained: boolean,
    failures: SnapshotReleaseFailure[],
  ): Promise<void> {
    const release = async (entry: LedgerEntry) => {
      try {
        await releaseRecordedSnapshot(platform, repository, entry, {
          timeoutSeconds: releaseTimeoutSeconds,
          ...(logger === undefined ? {} : { logger }),
        });
      } catch (error) {
        failures.push(releaseFailure(entry, error));
      }
    };
    if (!platform.capabilities.retainsSnapshotAsBase) return release(fresh);
    let inUse: Set<string>;
    let entries: LedgerEntry[];
    try {
      [inUse, entries] = await withDeadline(
        releaseTimeoutSeconds,
        `settling the snapshots of host ${hostId}`,
        async (signal) => [
          await snapshotsInUse(repository, platform.id, hostId, signal),
          await repository.ledger.list({ signal }),
        ],
      );
    } catch (error) {
      failures.push(releaseFailure(fresh, error));
      return;
    }
    for (const entry of entries) {
      if (entry.platformId !== platform.id || entry.hostId !== hostId || entry.kind !== 'snapshot') continue;
      if (entry.id !== fresh.id && entry.state === 'pending') continue; // a crashed run's: reconcile() decides
      // While some point is unreadable, a retained base may be its base: keep it until that point is repaired.
      if (keepRetained && entry.id !== fresh.id && entry.state === 'retained') continue;
      if (!inUse.has(entry.name)) {
        await release(entry);
      } else if (entry.state !== 'retained') {
        try {
          await withDeadline(releaseTimeoutSeconds, `recording snapshot ${entry.name} as a base`, (signal) =>
            repository.ledger.update({ ...entry, state: 'retained' }, { signal }),
          );
        } catch (error) {
          failures.push(releaseFailure(entry, error));
        }
      }
    }
  }

  /** Who holds a pending entry, when someone does. */
  function holder(entry: LedgerEntry, nowMs: number): Omit<ReconcileKeptEntry, 'entry'> | undefined {
    if (runningJobs.has(entry.jobId)) {
      return { reason: 'job-running', detail: `job ${entry.jobId} of this engine is running` };
    }
    if (leases.owns(entry) || entry.owner === undefined || entry.leaseExpiresAt === undefined)
      return undefined;
    const expiresMs = Date.parse(entry.leaseExpiresAt);
    if (nowMs > expiresMs + LEDGER_LEASE_MARGIN_SECONDS * 1000) return undefined;
    const { engineId: other, hostname, pid } = entry.owner;
    return {
      reason: 'held-by-another-engine',
      detail: `held by engine ${other} on ${hostname} (pid ${pid}), lease until ${entry.leaseExpiresAt}`,
    };
  }

  return {
    engineId,
    proxies: registry,

    async backup(job: BackupJobOptions = {}): Promise<BackupJobResult> {
      job.signal?.throwIfAborted();
      const jobId = randomUUID();
      runningJobs.add(jobId);
      try {
        const hosts = await selectHosts(job);
        const run: JobRun = {
          id: jobId,
          options: job,
          damaged: await repository.damagedChunks({ signal: job.signal }),
          unreadable: await repository.unreadablePoints({ signal: job.signal }),
          failures: [],
        };
        // Settled, not all: after an abort every host still releases its snapshot before the job rejects.
        const perHost = await Promise.allSettled(
          hosts.map(({ platform, host }) => backupHost(run, platform, host)),
        );
        if (job.signal?.aborted) throw job.signal.reason;
        const tasks: DiskTaskOutcome[] = [];
        for (const outcome of perHost) {
          if (outcome.status === 'rejected') throw outcome.reason;
          tasks.push(...outcome.value);
        }
        const succeeded = tasks.filter((t) => t.status === 'succeeded').length;
        const skipped = tasks.filter((t) => t.status === 'skipped').length;
        logger?.info(
          { jobId, succeeded, failed: tasks.length - succeeded - skipped, skipped },
          'backup job ended',
        );
        return {
          jobId,
          tasks,
          succeeded,
          failed: tasks.length - succeeded - skipped,
          skipped,
          unreadablePoints: run.unreadable,
          releaseFailures: run.failures,
        };
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
      const kept: ReconcileKeptEntry[] = [];
      const failed: { entry: LedgerEntry; error: unknown }[] = [];
      const inUseCache = new Map<string, Set<string>>();
      // While some point is unreadable, a retained base may be its base: keep every retained entry.
      const keepRetained = (await repository.unreadablePoints({ signal })).length > 0;
      const entries = await repository.ledger.list({ signal });
      const nowMs = now().getTime(); // after the listing: a lease renewed meanwhile is not missed
      for (const entry of entries) {
        const held = entry.state === 'pending' ? holder(entry, nowMs) : undefined;
        if (held) {
          kept.push({ entry, ...held });
          continue;
        }
        const platform = platforms.get(entry.platformId);
        if (!platform) {
          failed.push({
            entry,
            error: new NotFoundError(`platform ${entry.platformId} is not configured in this engine`),
          });
          continue;
        }
        if (entry.kind !== 'snapshot') {
          failed.push({
            entry,
            error: new InvalidArgumentError(
              `ledger entry ${entry.id} records a side effect of kind ${entry.kind}, which this engine cannot release; release ${entry.name} on ${entry.platformId} by hand (then remove the entry) or with a drkit that knows the kind`,
            ),
          });
          continue;
        }
        if (keepRetained && entry.state === 'retained') {
          kept.push({
            entry,
            reason: 'unreadable-points',
            detail: 'a retained base is kept while some point cannot be read (it may be its base)',
          });
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
          kept.push({
            entry,
            reason: 'base',
            detail: 'a newest point needs it as the base of the next incremental',
          });
          continue;
        }
        try {
          await releaseRecordedSnapshot(platform, repository, entry, {
            timeoutSeconds: releaseTimeoutSeconds,
            ...(logger === undefined ? {} : { logger }),
            signal,
          });
          released.push(entry);
        } catch (error) {
          if (signal?.aborted) throw signal.reason;
          failed.push({ entry, error });
        }
      }
      return { released, kept, failed };
    },

    async close() {
      await hostSlots.onIdle();
      await queue.onIdle();
      leases.stop();
      await defaultProxy?.close();
    },

    async [Symbol.asyncDispose]() {
      await this.close();
    },
  };
}
