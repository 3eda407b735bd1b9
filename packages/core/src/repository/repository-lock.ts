import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import { NotFoundError, RepositoryCorruptError, RepositoryLockedError } from '../errors/drkit-error.js';
import type { Store } from './store.js';
import type { DiskLineage } from './types.js';

/** Key prefix of the shared locks of backup sessions (`locks/backup-<session id>.json`). */
export const BACKUP_LOCK_PREFIX = 'locks/backup-';
/** Key of the exclusive prune lock. */
export const PRUNE_LOCK_KEY = 'locks/prune.json';
/** Key prefix of host locks: one per host being backed up (`locks/host-<32 hex>.json`). */
export const HOST_LOCK_PREFIX = 'locks/host-';
/** Default age of a heartbeat after which a lock is stale: 10 minutes. */
export const DEFAULT_LOCK_STALE_AFTER_MS: number = 10 * 60 * 1000;

/** The JSON content of a lock blob. */
export interface LockRecord {
  readonly formatVersion: 1;
  readonly kind: 'backup' | 'prune' | 'host';
  /** Random id of the session or prune run (16 lowercase hex digits). */
  readonly sessionId: string;
  readonly repositoryId: string;
  readonly hostname: string;
  readonly pid: number;
  /** When the lock was taken (ISO 8601). */
  readonly startedAt: string;
  /** Last heartbeat (ISO 8601); the lock is stale when this is older than the stale threshold. */
  readonly heartbeatAt: string;
  /** The disk a backup session writes (backup locks only). */
  readonly lineage?: DiskLineage;
  /**
   * Where `pid` means something: the boot id and the pid namespace of the holder (Linux only). A process that
   * finds the same scope and no process `pid` knows the holder is gone, without waiting for its heartbeat to age.
   */
  readonly scope?: string;
  /** The host a job backs up (host locks only). */
  readonly host?: { readonly platformId: string; readonly hostId: string };
}

/** A lock blob as another process sees it. */
interface ObservedLock {
  readonly key: string;
  readonly record: LockRecord | undefined;
  /** Heartbeat time in ms since the epoch (the blob's modification time when the record is unreadable). */
  readonly heartbeatMs: number;
  readonly live: boolean;
  readonly description: string;
}

function parseLock(bytes: Uint8Array): LockRecord | undefined {
  try {
    const value = JSON.parse(new TextDecoder().decode(bytes)) as Partial<LockRecord> | null;
    if (
      typeof value === 'object' &&
      value !== null &&
      (value.kind === 'backup' || value.kind === 'prune' || value.kind === 'host') &&
      typeof value.sessionId === 'string' &&
      typeof value.heartbeatAt === 'string' &&
      !Number.isNaN(Date.parse(value.heartbeatAt))
    ) {
      return value as LockRecord;
    }
  } catch {
    // Unreadable: judged by the blob's modification time.
  }
  return undefined;
}

function describe(record: LockRecord | undefined, key: string, heartbeatMs: number): string {
  if (record === undefined) {
    return `an unreadable lock ${key} (last modified ${new Date(heartbeatMs).toISOString()})`;
  }
  const what = record.lineage
    ? `backing up disk ${record.lineage.diskId} of host ${record.lineage.hostId} (platform ${record.lineage.platformId})`
    : record.host
      ? `backing up host ${record.host.hostId} (platform ${record.host.platformId})`
      : record.kind;
  return `${record.kind} session ${record.sessionId} on ${record.hostname} (pid ${record.pid}) ${what}, since ${record.startedAt}, last heartbeat ${record.heartbeatAt}`;
}

async function modifiedAt(store: Store, key: string, signal: AbortSignal | undefined): Promise<number> {
  for await (const entry of store.list(key, { signal }))
    if (entry.key === key) return entry.modifiedAt.getTime();
  return Date.now();
}

/** Reads one lock blob; undefined when it does not exist. */
async function observeLock(
  store: Store,
  key: string,
  staleAfterMs: number,
  signal: AbortSignal | undefined,
): Promise<ObservedLock | undefined> {
  let bytes: Uint8Array | undefined;
  try {
    bytes = await store.get(key, { signal });
  } catch (error) {
    if (NotFoundError.isInstance(error)) return undefined;
    // A sealed lock that does not authenticate is unreadable, like one that is not JSON.
    if (!RepositoryCorruptError.isInstance(error) || signal?.aborted) throw error;
  }
  const record = bytes === undefined ? undefined : parseLock(bytes);
  const heartbeatMs = record ? Date.parse(record.heartbeatAt) : await modifiedAt(store, key, signal);
  const gone = record !== undefined && holderIsGone(record);
  return {
    key,
    record,
    heartbeatMs,
    live: !gone && Date.now() - heartbeatMs <= staleAfterMs,
    description: `${describe(record, key, heartbeatMs)}${gone ? ' (its process no longer exists)' : ''}`,
  };
}

let localScope: string | null | undefined;

/**
 * This process's scope (see {@link LockRecord.scope}): the kernel's boot id and the pid namespace, on Linux; null
 * elsewhere or when they cannot be read.
 */
export function processScope(): string | null {
  if (localScope !== undefined) return localScope;
  try {
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const namespace = readlinkSync('/proc/self/ns/pid');
    localScope = boot && namespace ? `${boot}/${namespace}` : null;
  } catch {
    localScope = null;
  }
  return localScope;
}

/** Whether the lock's holder is known to be dead: same boot and pid namespace, and no such process. */
function holderIsGone(record: LockRecord): boolean {
  const scope = processScope();
  if (scope === null || record.scope !== scope || record.hostname !== hostname()) return false;
  if (!Number.isSafeInteger(record.pid) || record.pid <= 0 || record.pid === process.pid) return false;
  try {
    process.kill(record.pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(3)} s`;
}

/**
 * A lock this process holds. A timer (unref'd) rewrites the blob with a fresh `heartbeatAt` every fifth of the
 * stale threshold. The holder fences itself: once it has gone half the stale threshold without a successful
 * heartbeat, or finds its blob gone, the lock is broken for good and {@link HeldLock.checkLive} throws. Another
 * process judges the lock stale only after the full threshold, so (with clocks within half the threshold of
 * each other) a holder never acts on a lock that another process already removed, and a heartbeat never
 * recreates a removed lock.
 *
 * "Gone half the threshold" is measured on two clocks, and either one suffices: the monotonic clock
 * (`performance.now()`), which a wall-clock step cannot fool, and the wall clock (`Date.now()`), which keeps
 * running while the machine or VM is suspended (Linux's monotonic clock stops then). A process paused by
 * SIGSTOP, a debugger or a suspended VM thus learns at its first check after the pause that its lock may have
 * been broken, before it does anything destructive.
 *
 * @internal
 */
export class HeldLock {
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;
  /** `performance.now()` when the last successful write of the blob started. */
  private lastWrite: number;
  /** `Date.now()` at the same moment. */
  private lastWriteWall: number;
  private brokenReason: string | undefined;
  private released = false;

  constructor(
    private readonly store: Store,
    readonly key: string,
    private record: LockRecord,
    private readonly staleAfterMs: number,
    writeStartedAt: { readonly monotonic: number; readonly wall: number },
  ) {
    this.lastWrite = writeStartedAt.monotonic;
    this.lastWriteWall = writeStartedAt.wall;
  }

  /** Starts the heartbeat. */
  start(): void {
    const interval = Math.max(5, Math.floor(this.staleAfterMs / 5));
    this.timer = setInterval(() => {
      this.refreshing ??= this.refresh().finally(() => {
        this.refreshing = undefined;
      });
    }, interval);
    this.timer.unref();
  }

  /** Whether half the stale threshold passed since the last successful write, by either clock. */
  private fenced(): boolean {
    const limit = this.staleAfterMs / 2;
    return performance.now() - this.lastWrite > limit || Date.now() - this.lastWriteWall > limit;
  }

  private async refresh(): Promise<void> {
    if (this.brokenReason !== undefined || this.released) return;
    if (this.fenced()) {
      this.brokenReason = `its heartbeat could not be written for more than ${seconds(this.staleAfterMs / 2)}`;
      return;
    }
    const started = clocks();
    try {
      if (!(await this.store.has(this.key))) {
        this.brokenReason = 'its lock blob was removed (judged stale by another process)';
        return;
      }
      if (this.released) return;
      const record: LockRecord = { ...this.record, heartbeatAt: new Date().toISOString() };
      await this.store.put(this.key, encodeLock(record));
      this.record = record;
      this.lastWrite = started.monotonic;
      this.lastWriteWall = started.wall;
    } catch {
      // A failed heartbeat is retried at the next tick; the self-fence above bounds how long that may last.
    }
  }

  /**
   * Throws when the lock is broken or the heartbeat lapsed (no I/O).
   *
   * @throws {@link RepositoryLockedError}
   */
  checkLive(): void {
    if (this.brokenReason === undefined && this.fenced()) {
      this.brokenReason = `its heartbeat could not be written for more than ${seconds(this.staleAfterMs / 2)}`;
    }
    if (this.brokenReason !== undefined) {
      throw new RepositoryLockedError(
        `the ${this.record.kind} lock ${this.key} (session ${this.record.sessionId}) is no longer held: ${this.brokenReason}`,
        { retryable: false },
      );
    }
  }

  /**
   * Whether another process may have judged this lock stale at some moment since its last heartbeat that reached
   * the store (no I/O): the lock is broken, or half the stale threshold has passed since that write started, by
   * either clock. Others judge a lock stale only after the full threshold by their own wall clock, which agrees
   * with ours within half of it; the other half is the margin. A heartbeat in flight counts only once it is
   * written, and what counts is when it started, so a write that spanned a pause (and may have recreated a
   * removed blob) does not hide the pause.
   */
  mayHaveLapsed(): boolean {
    return this.brokenReason !== undefined || this.fenced();
  }

  /**
   * Re-reads the lock blob and checks it is still this holder's.
   *
   * @throws {@link RepositoryLockedError}
   */
  async confirm(signal?: AbortSignal): Promise<void> {
    this.checkLive();
    let bytes: Uint8Array | undefined;
    let unreadable = false;
    try {
      bytes = await this.store.get(this.key, { signal });
    } catch (error) {
      unreadable = RepositoryCorruptError.isInstance(error) && !signal?.aborted;
      if (!NotFoundError.isInstance(error) && !unreadable) throw error;
    }
    if (unreadable) this.brokenReason = 'its lock blob is unreadable (damaged, or not sealed with this key)';
    else if (bytes === undefined)
      this.brokenReason = 'its lock blob was removed (judged stale by another process)';
    else if (parseLock(bytes)?.sessionId !== this.record.sessionId) {
      this.brokenReason = 'its lock blob now belongs to another session';
    }
    this.checkLive();
  }

  /** Stops the heartbeat and deletes the lock blob (unless it now belongs to someone else). Idempotent. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    await this.refreshing;
    if (this.brokenReason === undefined && !this.fenced()) {
      await this.store.delete(this.key);
      return;
    }
    // Possibly taken over (the prune lock's key is shared): delete the blob only if it is still this holder's.
    let bytes: Uint8Array;
    try {
      bytes = await this.store.get(this.key);
    } catch (error) {
      if (NotFoundError.isInstance(error) || RepositoryCorruptError.isInstance(error)) return; // not this holder's
      throw error;
    }
    if (parseLock(bytes)?.sessionId === this.record.sessionId) await this.store.delete(this.key);
  }
}

/** Both clocks, read together. */
function clocks(): { monotonic: number; wall: number } {
  return { monotonic: performance.now(), wall: Date.now() };
}

function encodeLock(record: LockRecord): Uint8Array {
  return new TextEncoder().encode(`${JSON.stringify(record, null, 2)}\n`);
}

function newRecord(
  kind: 'backup' | 'prune' | 'host',
  repositoryId: string,
  lineage?: DiskLineage,
  host?: { platformId: string; hostId: string },
): LockRecord {
  const now = new Date().toISOString();
  return {
    formatVersion: 1,
    kind,
    sessionId: randomBytes(8).toString('hex'),
    repositoryId,
    hostname: hostname(),
    pid: process.pid,
    ...(processScope() === null ? {} : { scope: processScope() as string }),
    startedAt: now,
    heartbeatAt: now,
    ...(lineage === undefined
      ? {}
      : { lineage: { platformId: lineage.platformId, hostId: lineage.hostId, diskId: lineage.diskId } }),
    ...(host === undefined ? {} : { host: { platformId: host.platformId, hostId: host.hostId } }),
  };
}

function where(store: Store): string {
  return `${store.kind} store ${store.location}`;
}

/**
 * Takes a shared backup lock: writes `locks/backup-<id>.json` create-only, then reads `locks/prune.json`. If a
 * live prune lock exists, deletes its own lock and refuses. A stale prune lock (its holder crashed, or is paused
 * past the threshold and will find out at its next check) is broken: deleted if it is still the blob judged stale.
 *
 * @throws {@link RepositoryLockedError} naming the prune that holds the repository and since when.
 */
export async function acquireBackupLock(
  store: Store,
  repositoryId: string,
  lineage: DiskLineage,
  staleAfterMs: number,
  signal: AbortSignal | undefined,
): Promise<HeldLock> {
  let record: LockRecord;
  let key: string;
  let started: { monotonic: number; wall: number };
  do {
    record = newRecord('backup', repositoryId, lineage);
    key = `${BACKUP_LOCK_PREFIX}${record.sessionId}.json`;
    started = clocks();
  } while (!(await store.put(key, encodeLock(record), { ifAbsent: true, signal })));
  const lock = new HeldLock(store, key, record, staleAfterMs, started);
  try {
    const prune = await observeLock(store, PRUNE_LOCK_KEY, staleAfterMs, signal);
    if (prune?.live) {
      throw new RepositoryLockedError(
        `cannot start a backup: the repository in the ${where(store)} is being pruned by ${prune.description}; retry when the prune has finished (a prune lock whose heartbeat is older than ${seconds(staleAfterMs)} is ignored)`,
      );
    }
    if (prune !== undefined) await breakStaleLock(store, prune, staleAfterMs, signal);
  } catch (error) {
    await lock.release().catch(() => undefined);
    throw error;
  }
  lock.start();
  return lock;
}

/**
 * Deletes a lock judged stale, if a second read finds the same stale blob (a holder that came back and wrote a
 * heartbeat, or a new holder, keeps it). Returns whether it deleted it.
 */
async function breakStaleLock(
  store: Store,
  stale: ObservedLock,
  staleAfterMs: number,
  signal: AbortSignal | undefined,
): Promise<boolean> {
  const again = await observeLock(store, stale.key, staleAfterMs, signal);
  if (again === undefined || again.live || again.record?.sessionId !== stale.record?.sessionId) return false;
  if (again.record !== undefined && again.record.heartbeatAt !== stale.record?.heartbeatAt) return false;
  await store.delete(stale.key, { signal });
  return true;
}

/**
 * Whether `locks/prune.json` exists and is live (a sweep holds the repository, or a paused one has not gone stale
 * yet).
 *
 * @internal
 */
export async function pruneLockLive(
  store: Store,
  staleAfterMs: number,
  signal: AbortSignal | undefined,
): Promise<boolean> {
  return (await observeLock(store, PRUNE_LOCK_KEY, staleAfterMs, signal))?.live === true;
}

/** What {@link acquirePruneLock} found besides the lock it took. */
export interface PruneLockResult {
  readonly lock: HeldLock;
  /** Stale backup locks it removed. */
  readonly staleLocksRemoved: number;
}

/**
 * Takes the exclusive prune lock: writes `locks/prune.json` create-only (replacing a stale one), then lists the
 * backup locks. If any is live, deletes its own lock and refuses; stale ones are removed.
 *
 * @throws {@link RepositoryLockedError} naming the backups (or the other prune) that hold the repository.
 */
export async function acquirePruneLock(
  store: Store,
  repositoryId: string,
  staleAfterMs: number,
  signal: AbortSignal | undefined,
): Promise<PruneLockResult> {
  const record = newRecord('prune', repositoryId);
  let started = clocks();
  let written = await store.put(PRUNE_LOCK_KEY, encodeLock(record), { ifAbsent: true, signal });
  if (!written) {
    const other = await observeLock(store, PRUNE_LOCK_KEY, staleAfterMs, signal);
    if (other?.live) {
      throw new RepositoryLockedError(
        `cannot prune: the repository in the ${where(store)} is already being pruned by ${other.description}; retry when it has finished`,
      );
    }
    // Stale (or just released): take it over, but only if it is still the blob judged stale.
    const again = await observeLock(store, PRUNE_LOCK_KEY, staleAfterMs, signal);
    if (again !== undefined && (again.live || again.record?.sessionId !== other?.record?.sessionId)) {
      throw new RepositoryLockedError(
        `cannot prune: another prune took the lock in the ${where(store)} at the same time; retry later`,
      );
    }
    if (again !== undefined) await store.delete(PRUNE_LOCK_KEY, { signal });
    started = clocks();
    written = await store.put(PRUNE_LOCK_KEY, encodeLock(record), { ifAbsent: true, signal });
    if (!written) {
      throw new RepositoryLockedError(
        `cannot prune: another prune took the lock in the ${where(store)} at the same time; retry later`,
      );
    }
  }
  const lock = new HeldLock(store, PRUNE_LOCK_KEY, record, staleAfterMs, started);
  try {
    const live: ObservedLock[] = [];
    const stale: ObservedLock[] = [];
    for await (const entry of store.list(BACKUP_LOCK_PREFIX, { signal })) {
      if (!entry.key.endsWith('.json')) continue;
      const observed = await observeLock(store, entry.key, staleAfterMs, signal);
      if (observed !== undefined) (observed.live ? live : stale).push(observed);
    }
    if (live.length > 0) {
      const shown = live
        .slice(0, 3)
        .map((l) => l.description)
        .join('; ');
      throw new RepositoryLockedError(
        `cannot prune: ${live.length} backup session(s) hold the repository in the ${where(store)}: ${shown}${live.length > 3 ? '; …' : ''}. Retry when they have finished (a lock whose heartbeat is older than ${seconds(staleAfterMs)} is ignored and removed)`,
      );
    }
    for (const observed of stale) await store.delete(observed.key, { signal });
    lock.start();
    return { lock, staleLocksRemoved: stale.length };
  } catch (error) {
    await lock.release().catch(() => undefined);
    throw error;
  }
}

/** The key of one host's lock: a digest of the platform and host ids (any characters, fixed length). */
export function hostLockKey(platformId: string, hostId: string): string {
  const digest = createHash('sha256').update(`${platformId}\n${hostId}`).digest('hex').slice(0, 32);
  return `${HOST_LOCK_PREFIX}${digest}.json`;
}

/**
 * Tries once to take the lock of one host, held by the job that backs it up so that two jobs (in two processes
 * sharing the repository) never work on one host at once. Writes the blob create-only; a stale one (its heartbeat
 * older than `staleAfterMs`) is taken over, but only if it is still the blob judged stale.
 *
 * @returns the held lock, or the description of the live holder.
 */
export async function tryAcquireHostLock(
  store: Store,
  repositoryId: string,
  host: { platformId: string; hostId: string },
  staleAfterMs: number,
  signal: AbortSignal | undefined,
): Promise<{ lock: HeldLock } | { heldBy: string }> {
  const key = hostLockKey(host.platformId, host.hostId);
  const record = newRecord('host', repositoryId, undefined, host);
  let started = clocks();
  if (!(await store.put(key, encodeLock(record), { ifAbsent: true, signal }))) {
    const other = await observeLock(store, key, staleAfterMs, signal);
    if (other?.live) return { heldBy: other.description };
    const again = await observeLock(store, key, staleAfterMs, signal);
    if (again !== undefined && (again.live || again.record?.sessionId !== other?.record?.sessionId)) {
      return { heldBy: again.description };
    }
    if (again !== undefined) await store.delete(key, { signal });
    started = clocks();
    if (!(await store.put(key, encodeLock(record), { ifAbsent: true, signal }))) {
      const taken = await observeLock(store, key, staleAfterMs, signal);
      return { heldBy: taken?.description ?? 'another job that took it at the same time' };
    }
  }
  const lock = new HeldLock(store, key, record, staleAfterMs, started);
  lock.start();
  return { lock };
}
