import {
  ChecksumMismatchError,
  InvalidSettingsError,
  NotFoundError,
  ObjectLockedError,
  RepositoryKeyError,
} from '../errors/drkit-error.js';
import type { SnapshotConsistency } from '../spec/v2/index.js';
import { sleep } from '../util/abort.js';
import type { ChunkWorkerPool } from '../workers/chunk-worker-pool.js';
import { beginBackupSession } from './backup-session.js';
import { chunkIdFromHash } from './chunk-id.js';
import { loadChunk } from './chunk-loader.js';
import { checkEncryption, type RepositoryEncryption, type RepositoryKeys, rewrapKey } from './keyring.js';
import { createLedger } from './ledger.js';
import { indexKey, pointKey } from './point-metadata.js';
import { pruneRepository } from './prune.js';
import { type ImmutabilityPolicy, loadRepositoryConfig } from './repository-config.js';
import { RepositoryContext } from './repository-context.js';
import { DEFAULT_LOCK_STALE_AFTER_MS, tryAcquireHostLock } from './repository-lock.js';
import { restorePoint } from './restore.js';
import { planRetention } from './retention.js';
import { SealedStore } from './sealed-store.js';
import type { Store } from './store.js';
import type { DiskLineage, HostPoint, ImmutabilityOptions, RecoveryPoint, Repository } from './types.js';
import { verifyPoints } from './verify.js';

/** Settings of {@link openRepository}. */
export interface OpenRepositoryOptions {
  /** Where the repository lives. */
  readonly store: Store;
  /** Initialise the repository when the store holds none (default false). Opening an existing one is fine. */
  readonly create?: boolean;
  /**
   * The passphrase (or 32-byte master key) of an encrypted repository. With `create` on an empty store, the new
   * repository is encrypted: a random data key, wrapped by this one, seals every blob (AES-256-GCM) and keys
   * every chunk id (HMAC-SHA-256). Opening an encrypted repository needs it; giving it for one that is not
   * encrypted is an error. Never logged or stored: keep it safe, without it the repository cannot be read.
   */
  readonly encryption?: RepositoryEncryption;
  /**
   * Immutable recovery points, chosen at creation and recorded in the repository (feature `object-lock`), so
   * every writer behaves the same: each point, and every blob it references, is locked in the store (S3 Object
   * Lock) until at least `period` after its commit; retention and prune never delete a locked blob and report it.
   * The store must support it ({@link Store.immutability}: an S3 bucket created with Object Lock). Opening an
   * existing repository needs no value (the recorded one applies); a different one is refused.
   */
  readonly immutability?: ImmutabilityOptions;
  /**
   * The wall clock of lock dates (ms since the epoch), for tests. Default `Date.now`.
   *
   * @internal
   */
  readonly clock?: () => number;
  /**
   * The worker pool that decodes and hashes chunks. Leave it out: the repository then starts its own on first
   * use and stops it on {@link Repository.close}. A pool passed in (a `ChunkWorkerPool` of
   * `@drkit/core/internal`, for drkit's own tests) is left running.
   *
   * @internal
   */
  readonly workers?: ChunkWorkerPool;
  /**
   * Age of a lock's heartbeat after which other processes ignore it and a prune removes it (default 10 minutes).
   * Every process using the repository should use the same value; clocks must agree within half of it.
   */
  readonly lockStaleAfterMs?: number;
  readonly signal?: AbortSignal;
}

const DAY_MS = 24 * 3600 * 1000;

/** The policy of {@link ImmutabilityOptions}, checked. */
function immutabilityPolicy(options: ImmutabilityOptions): ImmutabilityPolicy {
  const field = 'immutability';
  if (typeof options !== 'object' || options === null)
    throw new InvalidSettingsError(field, 'must be an object');
  if (options.mode !== 'governance' && options.mode !== 'compliance') {
    throw new InvalidSettingsError(`${field}.mode`, 'must be "governance" or "compliance"');
  }
  if ((options.periodDays === undefined) === (options.periodMs === undefined)) {
    throw new InvalidSettingsError(field, 'give exactly one of periodDays and periodMs');
  }
  const periodMs = options.periodMs ?? Math.round((options.periodDays as number) * DAY_MS);
  const windowMs = options.windowMs ?? periodMs;
  for (const [name, ms] of [
    ['period', periodMs],
    ['windowMs', windowMs],
  ] as const) {
    if (!Number.isSafeInteger(ms) || ms < 1000 || ms > 100 * 365 * DAY_MS) {
      throw new InvalidSettingsError(`${field}.${name}`, 'must be from 1 second to 100 years (integer ms)');
    }
  }
  return { mode: options.mode, periodMs, windowMs };
}

function matches(point: RecoveryPoint, filter: Partial<DiskLineage> | undefined): boolean {
  if (filter === undefined) return true;
  return (
    (filter.platformId === undefined || point.platformId === filter.platformId) &&
    (filter.hostId === undefined || point.hostId === filter.hostId) &&
    (filter.diskId === undefined || point.diskId === filter.diskId)
  );
}

/** Groups points (in their order) per platform, host and job; a point without a job is a group of its own. */
function groupHostPoints(points: readonly RecoveryPoint[]): HostPoint[] {
  const groups = new Map<
    string,
    { platformId: string; hostId: string; jobId?: string; points: RecoveryPoint[] }
  >();
  const ordered: { platformId: string; hostId: string; jobId?: string; points: RecoveryPoint[] }[] = [];
  for (const point of points) {
    const key =
      point.jobId === undefined ? undefined : JSON.stringify([point.platformId, point.hostId, point.jobId]);
    const group = key === undefined ? undefined : groups.get(key);
    if (group) {
      group.points.push(point);
      continue;
    }
    const created = {
      platformId: point.platformId,
      hostId: point.hostId,
      ...(point.jobId === undefined ? {} : { jobId: point.jobId }),
      points: [point],
    };
    ordered.push(created);
    if (key !== undefined) groups.set(key, created);
  }
  return ordered.map((group) => ({
    ...group,
    snapshotAt: group.points
      .map((p) => p.snapshotAt)
      .reduce((a, b) => (Date.parse(b) < Date.parse(a) ? b : a)),
    consistency: weakestConsistency(group.points.map((p) => p.consistency)),
  }));
}

const CONSISTENCY_RANK: Readonly<Record<string, number>> = { none: 0, disk: 1, host: 2, application: 3 };

/** The weakest of some consistencies; a word this drkit does not know counts as `none`. */
function weakestConsistency(values: readonly SnapshotConsistency[]): SnapshotConsistency {
  let weakest: SnapshotConsistency = 'application';
  for (const value of values) {
    const rank = CONSISTENCY_RANK[value] ?? 0;
    if (rank < (CONSISTENCY_RANK[weakest] ?? 0)) weakest = rank === 0 ? 'none' : value;
  }
  return weakest;
}

/**
 * Opens (or, with `create`, initialises) the drkit repository on a store (format version 2): content-addressed
 * chunks, content-addressed index segments, one manifest and one metadata blob per recovery point, locks that keep a prune from deleting what a running backup needs,
 * and the side-effect ledger. The format is in `docs/repository-format.md`.
 *
 * @throws {@link NotFoundError} when the store holds no repository and `create` is not set;
 * {@link RepositoryVersionError} (a {@link RepositoryCorruptError}) when it is of another format version (a
 * version 1 repository: its message says what to do); {@link RepositoryCorruptError} when its configuration is
 * damaged;
 * {@link InvalidSettingsError} when `lockStaleAfterMs` is not a positive number, or (field `immutability`) when
 * `immutability` is invalid, differs from the policy the repository recorded, or the store cannot lock blobs (it
 * has no {@link Store.immutability}, or its check fails: an S3 bucket without Object Lock), for a new repository
 * before anything is written.
 *
 * @example
 * ```ts
 * await using repository = await openRepository({
 *   store: createLocalFolderStore({ path: '/srv/drkit' }),
 *   create: true,
 * });
 * for (const point of await repository.points({ hostId: 'vm-42' })) console.log(point.id, point.createdAt);
 * for (const bad of await repository.unreadablePoints()) console.warn(bad.id, bad.problem, bad.detail);
 * const [latest] = (await repository.points()).slice(-1);
 * if (latest) await repository.restore(latest.id, { path: '/tmp/disk.img' });
 * ```
 */
export async function openRepository(options: OpenRepositoryOptions): Promise<Repository> {
  const {
    store,
    create = false,
    workers,
    lockStaleAfterMs = DEFAULT_LOCK_STALE_AFTER_MS,
    encryption,
    signal,
    clock = Date.now,
  } = options;
  if (typeof store?.get !== 'function') throw new InvalidSettingsError('store', 'must be a Store');
  if (typeof lockStaleAfterMs !== 'number' || !(lockStaleAfterMs > 0) || !Number.isFinite(lockStaleAfterMs)) {
    throw new InvalidSettingsError('lockStaleAfterMs', 'must be a positive number of milliseconds');
  }
  if (encryption !== undefined) checkEncryption(encryption);
  const wanted = options.immutability === undefined ? undefined : immutabilityPolicy(options.immutability);
  const where = `${store.kind} store ${store.location}`;
  const checkLocking = async () => {
    if (store.immutability === undefined) {
      throw new InvalidSettingsError(
        'immutability',
        `the ${where} cannot lock blobs: immutable points need a store with Object Lock (an S3 bucket created with Object Lock enabled)`,
      );
    }
    await store.immutability.check({ signal });
  };
  signal?.throwIfAborted();
  // Checked before anything is written: a repository of immutable points is never created where locks fail.
  if (wanted !== undefined && create) await checkLocking();
  const loaded = await loadRepositoryConfig(store, create, signal, encryption, wanted);
  const { config } = loaded;
  const recorded = config.immutability;
  if (wanted !== undefined && JSON.stringify(wanted) !== JSON.stringify(recorded)) {
    throw new InvalidSettingsError(
      'immutability',
      recorded === undefined
        ? `the repository in the ${where} was created without immutable points; it is chosen at creation (use a new, Object Lock-enabled bucket)`
        : `the repository in the ${where} records ${JSON.stringify(recorded)}; leave immutability out to use it`,
    );
  }
  if (recorded !== undefined && wanted === undefined) await checkLocking();
  let keys: RepositoryKeys | undefined = loaded.keys;
  const context = new RepositoryContext(
    keys === undefined ? store : new SealedStore(store, keys.sealKey),
    config,
    lockStaleAfterMs,
    workers,
    keys?.idKey,
    clock,
  );
  const ledger = createLedger(context);

  const repository: Repository = {
    id: config.id,
    store,
    encrypted: keys !== undefined,
    ...(recorded === undefined ? {} : { immutability: recorded }),
    ledger,

    async changePassphrase(next, callOptions = {}) {
      context.checkOpen();
      if (keys === undefined) {
        throw new RepositoryKeyError(
          `the repository in the ${context.where} is not encrypted: it has no passphrase to change`,
        );
      }
      keys = await rewrapKey(store, config.id, keys, next, callOptions.signal);
    },

    async points(filter, callOptions = {}) {
      return (await context.listPoints(callOptions.signal)).filter((point) => matches(point, filter));
    },

    async hostPoints(filter, callOptions = {}) {
      const lineage = { platformId: filter?.platformId, hostId: filter?.hostId };
      return groupHostPoints(
        (await context.listPoints(callOptions.signal)).filter((point) => matches(point, lineage)),
      );
    },

    async unreadablePoints(callOptions = {}) {
      return (await context.scanPoints(callOptions.signal)).unreadable;
    },

    point(id, callOptions = {}) {
      return context.getPoint(id, callOptions.signal);
    },

    openIndex(point, callOptions = {}) {
      return context.openIndex(point, callOptions.signal);
    },

    async readChunk(hash, plainLength, callOptions = {}) {
      const id = chunkIdFromHash(hash);
      const loaded = await loadChunk(
        context.store,
        context.workers(),
        hash,
        plainLength,
        callOptions.signal,
        context.idKey,
      );
      if (loaded.ok) return loaded.plain;
      if (loaded.problem === 'missing') throw new NotFoundError(`chunk ${id} is not in the ${context.where}`);
      throw new ChecksumMismatchError(`chunk ${id} is damaged: ${loaded.detail}; run verify`, {
        cause: loaded.cause,
      });
    },

    beginBackup(backupOptions) {
      return beginBackupSession(context, backupOptions);
    },

    async lockHost(host, lockOptions = {}) {
      const pollMs = lockOptions.pollIntervalMs ?? 5000;
      let told = false;
      for (;;) {
        lockOptions.signal?.throwIfAborted();
        const attempt = await tryAcquireHostLock(
          context.store,
          context.config.id,
          host,
          lockStaleAfterMs,
          lockOptions.signal,
        );
        if ('lock' in attempt) {
          const { lock } = attempt;
          return {
            confirm: (confirmOptions) => lock.confirm(confirmOptions?.signal),
            release: () => lock.release(),
            [Symbol.asyncDispose]: () => lock.release(),
          };
        }
        if (!told) lockOptions.onWait?.(attempt.heldBy);
        told = true;
        await sleep(pollMs, lockOptions.signal);
      }
    },

    async restore(pointId, target, restoreOptions = {}) {
      const point = await context.getPoint(pointId, restoreOptions.signal);
      const index = await context.openIndex(point, restoreOptions.signal);
      return restorePoint(context, point, index, target, restoreOptions);
    },

    verify(verifyOptions = {}) {
      context.checkOpen();
      return verifyPoints(context, verifyOptions);
    },

    damagedChunks(callOptions = {}) {
      return context.damagedChunks(callOptions.signal);
    },

    async applyRetention(policy, retentionOptions = {}) {
      const { signal: retentionSignal, dryRun = false } = retentionOptions;
      // Unreadable points are left out of the plan: never counted by a rule, never removed.
      const { points, unreadable } = await context.scanPoints(retentionSignal);
      const plan = planRetention(points, policy);
      // A point whose lock date has not passed is kept, and said so: the store would refuse its deletion.
      const locked: { point: RecoveryPoint; lockedUntil: string }[] = [];
      const due = plan.removed.filter((point) => {
        if (point.lockedUntil === undefined || Date.parse(point.lockedUntil) <= context.now()) return true;
        locked.push({ point, lockedUntil: point.lockedUntil });
        return false;
      });
      const removed: RecoveryPoint[] = [];
      if (!dryRun) {
        for (const point of due) {
          retentionSignal?.throwIfAborted();
          // Metadata first: once it is gone the point no longer exists, and its index is an orphan.
          try {
            await context.store.delete(pointKey(point.id), { signal: retentionSignal });
          } catch (error) {
            // The store's clock, not ours, decides: a point it still keeps is reported locked.
            if (!ObjectLockedError.isInstance(error)) throw error;
            const until = error.retainUntil?.toISOString() ?? point.lockedUntil ?? point.createdAt;
            locked.push({ point, lockedUntil: until });
            continue;
          }
          removed.push(point);
          context.forgetPoint(point.id);
          // A manifest still locked stays an orphan; a later prune removes it once its date has passed.
          await context.store.delete(indexKey(point.id), { signal: retentionSignal }).catch((error) => {
            if (!ObjectLockedError.isInstance(error)) throw error;
          });
        }
        // The removals made durable before anything relies on them: a point that came back after a crash while a
        // later prune's deletions of its chunks stuck would name chunks that are gone.
        if (removed.length > 0 && context.store.sync !== undefined) {
          await context.store.sync(
            removed.flatMap((point) => [pointKey(point.id), indexKey(point.id)]),
            { signal: retentionSignal },
          );
        }
      } else removed.push(...due);
      return { kept: plan.kept, removed, unreadable, locked };
    },

    prune(pruneOptions = {}) {
      return pruneRepository(context, pruneOptions);
    },

    close() {
      return context.close();
    },

    [Symbol.asyncDispose]() {
      return context.close();
    },
  };
  return repository;
}
