const marker = Symbol.for('drkit.error');

/** Stable machine-readable codes of every drkit error. */
export type DrkitErrorCode =
  | 'AUTHENTICATION_FAILED'
  | 'UNREACHABLE'
  | 'PERMISSION_DENIED'
  | 'NOT_FOUND'
  | 'CHANGE_TRACKING_UNAVAILABLE'
  | 'CHECKPOINT_INVALID'
  | 'THROTTLED'
  | 'CHECKSUM_MISMATCH'
  | 'PROXY_BUSY'
  | 'PROXY_BOUND'
  | 'INVALID_SETTINGS'
  | 'INVALID_ARGUMENT'
  | 'REPOSITORY_CORRUPT'
  | 'REPOSITORY_LOCKED'
  | 'REPOSITORY_KEY'
  | 'OBJECT_LOCKED'
  | 'SOURCE_PROTOCOL'
  | 'TIMEOUT'
  | 'WORKER_CRASHED'
  | 'TASK_STALLED'
  | 'QUIESCE_FAILED';

/** Options every drkit error accepts. */
export interface DrkitErrorOptions {
  /** The lower-level error that caused this one. */
  cause?: unknown;
  /** Overrides the default of the subclass: whether trying the same operation again may succeed. */
  retryable?: boolean;
}

/**
 * Base class of every error drkit throws on purpose. Each has a stable {@link DrkitError.code}, says whether a
 * retry may succeed, and keeps the underlying `cause`. Use the static `isInstance` rather than `instanceof`:
 * it also recognises errors from another copy of the package.
 *
 * @example
 * ```ts
 * try { await platform.verify(); } catch (error) {
 *   if (AuthenticationError.isInstance(error)) console.error('check the credentials:', error.message);
 * }
 * ```
 */
export class DrkitError extends Error {
  /** Stable code, safe to switch on. */
  readonly code: DrkitErrorCode;
  /** Whether the same operation may succeed when tried again unchanged. */
  readonly retryable: boolean;
  constructor(
    code: DrkitErrorCode,
    message: string,
    options: DrkitErrorOptions & { defaultRetryable?: boolean } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retryable = options.retryable ?? options.defaultRetryable ?? false;
    Object.defineProperty(this, marker, { value: true });
  }

  /** True for any drkit error, across duplicate copies of the package. */
  static isInstance(error: unknown): error is DrkitError {
    return typeof error === 'object' && error !== null && (error as Record<symbol, unknown>)[marker] === true;
  }

  /** A plain object for logs and JSON output; never contains secrets. */
  toJSON(): { name: string; code: DrkitErrorCode; message: string; retryable: boolean } {
    return { name: this.name, code: this.code, message: this.message, retryable: this.retryable };
  }
}

function hasCode(error: unknown, code: DrkitErrorCode): boolean {
  return DrkitError.isInstance(error) && error.code === code;
}

/** The credentials were refused (wrong password, expired or revoked key). Not retryable. */
export class AuthenticationError extends DrkitError {
  constructor(message: string, options?: DrkitErrorOptions) {
    super('AUTHENTICATION_FAILED', message, options);
  }
  static override isInstance(error: unknown): error is AuthenticationError {
    return hasCode(error, 'AUTHENTICATION_FAILED');
  }
}

/** A host, endpoint or monitor could not be reached in time. Retryable. */
export class UnreachableError extends DrkitError {
  constructor(message: string, options?: DrkitErrorOptions) {
    super('UNREACHABLE', message, { ...options, defaultRetryable: true });
  }
  static override isInstance(error: unknown): error is UnreachableError {
    return hasCode(error, 'UNREACHABLE');
  }
}

/** The credentials are valid but lack a permission the operation needs. */
export class PermissionError extends DrkitError {
  constructor(message: string, options?: DrkitErrorOptions) {
    super('PERMISSION_DENIED', message, options);
  }
  static override isInstance(error: unknown): error is PermissionError {
    return hasCode(error, 'PERMISSION_DENIED');
  }
}

/** A named object (host, disk, snapshot, point, chunk, blob) does not exist. */
export class NotFoundError extends DrkitError {
  constructor(message: string, options?: DrkitErrorOptions) {
    super('NOT_FOUND', message, options);
  }
  static override isInstance(error: unknown): error is NotFoundError {
    return hasCode(error, 'NOT_FOUND');
  }
}

/** Change tracking is off, unsupported or was reset on the source; an incremental cannot be computed. */
export class ChangeTrackingUnavailableError extends DrkitError {
  constructor(message: string, options?: DrkitErrorOptions) {
    super('CHANGE_TRACKING_UNAVAILABLE', message, options);
  }
  static override isInstance(error: unknown): error is ChangeTrackingUnavailableError {
    return hasCode(error, 'CHANGE_TRACKING_UNAVAILABLE');
  }
}

/** The base checkpoint can no longer be used (its snapshot is gone, the disk was recreated). Read in full. */
export class CheckpointInvalidError extends DrkitError {
  constructor(message: string, options?: DrkitErrorOptions) {
    super('CHECKPOINT_INVALID', message, options);
  }
  static override isInstance(error: unknown): error is CheckpointInvalidError {
    return hasCode(error, 'CHECKPOINT_INVALID');
  }
}

/** The source or store asked us to slow down. Retryable after {@link ThrottledError.retryAfterMs}. */
export class ThrottledError extends DrkitError {
  /** How long the peer asked to wait, when it said so. */
  readonly retryAfterMs: number | undefined;
  constructor(message: string, options?: DrkitErrorOptions & { retryAfterMs?: number }) {
    super('THROTTLED', message, { ...options, defaultRetryable: true });
    this.retryAfterMs = options?.retryAfterMs;
  }
  static override isInstance(error: unknown): error is ThrottledError {
    return hasCode(error, 'THROTTLED');
  }
}

/** Data does not match its recorded SHA-256: a corrupt chunk, a damaged transfer. */
export class ChecksumMismatchError extends DrkitError {
  constructor(message: string, options?: DrkitErrorOptions) {
    super('CHECKSUM_MISMATCH', message, options);
  }
  static override isInstance(error: unknown): error is ChecksumMismatchError {
    return hasCode(error, 'CHECKSUM_MISMATCH');
  }
}

/** The Sync Proxy runs a task that forbids the operation (unbinding while it works for that platform). */
export class ProxyBusyError extends DrkitError {
  constructor(message: string, options?: DrkitErrorOptions) {
    super('PROXY_BUSY', message, { ...options, defaultRetryable: true });
  }
  static override isInstance(error: unknown): error is ProxyBusyError {
    return hasCode(error, 'PROXY_BUSY');
  }
}

/** The Sync Proxy is still bound to a platform (it cannot be deleted until unbound). */
export class ProxyBoundError extends DrkitError {
  constructor(message: string, options?: DrkitErrorOptions) {
    super('PROXY_BOUND', message, options);
  }
  static override isInstance(error: unknown): error is ProxyBoundError {
    return hasCode(error, 'PROXY_BOUND');
  }
}

/** A configuration or settings value is invalid; {@link InvalidSettingsError.field} names it. */
export class InvalidSettingsError extends DrkitError {
  /** The dotted path of the offending field, e.g. `proxies[0].maxMountedDisks`. */
  readonly field: string;
  constructor(field: string, message: string, options?: DrkitErrorOptions) {
    super('INVALID_SETTINGS', `${field}: ${message}`, options);
    this.field = field;
  }
  static override isInstance(error: unknown): error is InvalidSettingsError {
    return hasCode(error, 'INVALID_SETTINGS');
  }
}

/** A call argument is invalid (not a configuration field): a bad path, an out-of-range extent. */
export class InvalidArgumentError extends DrkitError {
  constructor(message: string, options?: DrkitErrorOptions) {
    super('INVALID_ARGUMENT', message, options);
  }
  static override isInstance(error: unknown): error is InvalidArgumentError {
    return hasCode(error, 'INVALID_ARGUMENT');
  }
}

/** Repository data is damaged or inconsistent (missing chunk, bad index, unknown format). */
export class RepositoryCorruptError extends DrkitError {
  constructor(message: string, options?: DrkitErrorOptions) {
    super('REPOSITORY_CORRUPT', message, options);
  }
  static override isInstance(error: unknown): error is RepositoryCorruptError {
    return hasCode(error, 'REPOSITORY_CORRUPT');
  }
}

/**
 * The repository's key cannot be unlocked: a wrong passphrase or key, a passphrase given for a repository that is
 * not encrypted, none given for one that is. Raised before anything is written. Not retryable with the same
 * secret.
 *
 * @example
 * ```ts
 * try { await openRepository({ store, encryption: { passphrase } }); } catch (error) {
 *   if (RepositoryKeyError.isInstance(error)) console.error('check the passphrase:', error.message);
 * }
 * ```
 */
export class RepositoryKeyError extends DrkitError {
  constructor(message: string, options?: DrkitErrorOptions) {
    super('REPOSITORY_KEY', message, options);
  }
  static override isInstance(error: unknown): error is RepositoryKeyError {
    return hasCode(error, 'REPOSITORY_KEY');
  }
}

const unreadablePointsMarker = Symbol.for('drkit.error.unreadable-points');

/** One point metadata blob that could not be read, as {@link UnreadablePointsError} names it. */
export interface UnreadablePointSummary {
  /** The point id, from the blob's key. */
  readonly id: string;
  /** `corrupt`: not JSON or a field fails its checks; `unsupported-version`: written by a newer drkit. */
  readonly problem: 'corrupt' | 'unsupported-version';
  readonly detail: string;
}

/**
 * An operation that must see every point refused because some point metadata cannot be read: prune, which would
 * otherwise delete the chunks such a point references (data a newer drkit, or a repaired blob, could still
 * restore). A {@link RepositoryCorruptError} (code `REPOSITORY_CORRUPT`); not retryable until the points are
 * repaired or removed.
 *
 * @example
 * ```ts
 * try { await repository.prune(); } catch (error) {
 *   if (UnreadablePointsError.isInstance(error)) for (const p of error.points) console.error(p.id, p.problem);
 * }
 * ```
 */
export class UnreadablePointsError extends RepositoryCorruptError {
  /** The points that could not be read, by id. */
  readonly points: readonly UnreadablePointSummary[];
  constructor(message: string, points: readonly UnreadablePointSummary[], options?: DrkitErrorOptions) {
    super(message, { retryable: false, ...options });
    this.points = points.map(({ id, problem, detail }) => ({ id, problem, detail }));
    Object.defineProperty(this, unreadablePointsMarker, { value: true });
  }
  static override isInstance(error: unknown): error is UnreadablePointsError {
    return (
      RepositoryCorruptError.isInstance(error) &&
      (error as unknown as Record<symbol, unknown>)[unreadablePointsMarker] === true
    );
  }
  override toJSON(): ReturnType<DrkitError['toJSON']> & { points: UnreadablePointSummary[] } {
    return { ...super.toJSON(), points: [...this.points] };
  }
}

const repositoryVersionMarker = Symbol.for('drkit.error.repository-version');

/**
 * The repository on the store is of a format version this drkit does not read: an older one (version 1, before
 * the segmented index) or a newer one. A {@link RepositoryCorruptError} (code `REPOSITORY_CORRUPT`), never
 * retryable; its message says what to do (for version 1: restore its points with the drkit that wrote it, and back up into a
 * new repository).
 *
 * @example
 * ```ts
 * try { await openRepository({ store }); } catch (error) {
 *   if (RepositoryVersionError.isInstance(error)) console.error(error.foundVersion, error.message);
 * }
 * ```
 */
export class RepositoryVersionError extends RepositoryCorruptError {
  /** The version the repository's `config` records. */
  readonly foundVersion: number;
  /** The version this drkit reads and writes. */
  readonly supportedVersion: number;
  constructor(message: string, foundVersion: number, supportedVersion: number, options?: DrkitErrorOptions) {
    super(message, { retryable: false, ...options });
    this.foundVersion = foundVersion;
    this.supportedVersion = supportedVersion;
    Object.defineProperty(this, repositoryVersionMarker, { value: true });
  }
  static override isInstance(error: unknown): error is RepositoryVersionError {
    return (
      RepositoryCorruptError.isInstance(error) &&
      (error as unknown as Record<symbol, unknown>)[repositoryVersionMarker] === true
    );
  }
}

/** Another operation holds a conflicting repository lock (a prune while a backup runs, or the reverse). */
export class RepositoryLockedError extends DrkitError {
  constructor(message: string, options?: DrkitErrorOptions) {
    super('REPOSITORY_LOCKED', message, { ...options, defaultRetryable: true });
  }
  static override isInstance(error: unknown): error is RepositoryLockedError {
    return hasCode(error, 'REPOSITORY_LOCKED');
  }
}

const pointWithdrawnMarker = Symbol.for('drkit.error.point-withdrawn');

/** What a withdrawn point named that the store no longer held, as {@link PointWithdrawnError} reports it. */
export interface WithdrawnPointMissing {
  /** Whether the point's manifest (`indexes/<point id>`) was gone. */
  readonly manifest: boolean;
  /** Keys of missing index segments (`segments/<h2>/<id>`), at most the first few. */
  readonly segments: readonly string[];
  /** Ids (hex) of missing chunks, at most the first few. */
  readonly chunks: readonly string[];
  /** How many distinct blobs were found missing in all (manifest, segments and chunks). */
  readonly total: number;
}

/**
 * A backup session's commit wrote its point metadata, then found by its own clocks that it had been paused (or
 * starved) long enough for its lock to be judged stale, waited for any prune to finish, and found that a sweep had
 * deleted chunks or segments the point names. It withdrew the point (deleted its metadata, then its manifest):
 * no point was committed. A {@link RepositoryLockedError} (code `REPOSITORY_LOCKED`), retryable: the next backup
 * of the disk writes the missing chunks again.
 *
 * @example
 * ```ts
 * try { await session.commit(point, index); } catch (error) {
 *   if (PointWithdrawnError.isInstance(error)) console.error(error.pointId, error.missing.chunks);
 * }
 * ```
 */
export class PointWithdrawnError extends RepositoryLockedError {
  /** The id the withdrawn point had. */
  readonly pointId: string;
  /** What the store no longer held. */
  readonly missing: WithdrawnPointMissing;
  constructor(message: string, pointId: string, missing: WithdrawnPointMissing, options?: DrkitErrorOptions) {
    super(message, { retryable: true, ...options });
    this.pointId = pointId;
    this.missing = {
      manifest: missing.manifest,
      segments: [...missing.segments],
      chunks: [...missing.chunks],
      total: missing.total,
    };
    Object.defineProperty(this, pointWithdrawnMarker, { value: true });
  }
  static override isInstance(error: unknown): error is PointWithdrawnError {
    return (
      RepositoryLockedError.isInstance(error) &&
      (error as unknown as Record<symbol, unknown>)[pointWithdrawnMarker] === true
    );
  }
  override toJSON(): ReturnType<DrkitError['toJSON']> & { pointId: string; missing: WithdrawnPointMissing } {
    return { ...super.toJSON(), pointId: this.pointId, missing: this.missing };
  }
}

const objectLockedMarker = Symbol.for('drkit.error.object-locked');

/**
 * A blob could not be deleted because the store keeps it locked (S3 Object Lock, governance or compliance mode)
 * until a date: the data is still there and readable. drkit never tries to bypass a lock; try again after
 * `retainUntil` (not retryable before it). Code `OBJECT_LOCKED`.
 *
 * @example
 * ```ts
 * try { await store.delete(key); } catch (error) {
 *   if (ObjectLockedError.isInstance(error)) console.log(`${error.key} is locked until ${error.retainUntil?.toISOString()}`);
 * }
 * ```
 */
export class ObjectLockedError extends DrkitError {
  /** The store key of the locked blob. */
  readonly key: string;
  /** Until when the store keeps it, when the store said (undefined when it did not). */
  readonly retainUntil: Date | undefined;
  constructor(message: string, key: string, retainUntil: Date | undefined, options?: DrkitErrorOptions) {
    super('OBJECT_LOCKED', message, options);
    this.key = key;
    this.retainUntil = retainUntil;
    Object.defineProperty(this, objectLockedMarker, { value: true });
  }
  static override isInstance(error: unknown): error is ObjectLockedError {
    return (
      hasCode(error, 'OBJECT_LOCKED') &&
      (error as unknown as Record<symbol, unknown>)[objectLockedMarker] === true
    );
  }
  override toJSON(): ReturnType<DrkitError['toJSON']> & { key: string; retainUntil?: string } {
    return {
      ...super.toJSON(),
      key: this.key,
      ...(this.retainUntil === undefined ? {} : { retainUntil: this.retainUntil.toISOString() }),
    };
  }
}

/** A source broke its contract: a malformed or truncated stream, unsorted extents, data past the disk's end. */
export class SourceProtocolError extends DrkitError {
  constructor(message: string, options?: DrkitErrorOptions) {
    super('SOURCE_PROTOCOL', message, options);
  }
  static override isInstance(error: unknown): error is SourceProtocolError {
    return hasCode(error, 'SOURCE_PROTOCOL');
  }
}

/** An operation did not finish within its time limit. Retryable. */
export class TimeoutError extends DrkitError {
  constructor(message: string, options?: DrkitErrorOptions) {
    super('TIMEOUT', message, { ...options, defaultRetryable: true });
  }
  static override isInstance(error: unknown): error is TimeoutError {
    return hasCode(error, 'TIMEOUT');
  }
}

/**
 * A chunk worker thread died (it exited, threw an uncaught exception, ran out of memory, or was stopped after a
 * call timed out) while it held this call: says nothing about the data. The pool has replaced the worker, so
 * the call may be tried again (retryable), unless workers kept dying at startup and the pool stopped replacing
 * them (then not retryable: the message says so).
 */
export class WorkerCrashedError extends DrkitError {
  /** The worker operation the call was: `encode`, `decode` or `hash`. */
  readonly operation: string;
  /** The worker's exit code, when it exited with one. */
  readonly exitCode: number | undefined;
  constructor(
    message: string,
    options: DrkitErrorOptions & { operation: string; exitCode?: number | undefined },
  ) {
    super('WORKER_CRASHED', message, { ...options, defaultRetryable: true });
    this.operation = options.operation;
    this.exitCode = options.exitCode;
  }
  static override isInstance(error: unknown): error is WorkerCrashedError {
    return hasCode(error, 'WORKER_CRASHED');
  }
}

/**
 * A disk task made no progress (no byte read, no chunk completed) for longer than its stall timeout: a hung
 * source or chunk worker. The task was stopped and its backup session released. Retryable.
 */
export class TaskStalledError extends DrkitError {
  /** The task's id. */
  readonly taskId: string;
  /** The stall timeout that was exceeded, in seconds. */
  readonly stallTimeoutSeconds: number;
  constructor(message: string, options: DrkitErrorOptions & { taskId: string; stallTimeoutSeconds: number }) {
    super('TASK_STALLED', message, { ...options, defaultRetryable: true });
    this.taskId = options.taskId;
    this.stallTimeoutSeconds = options.stallTimeoutSeconds;
  }
  static override isInstance(error: unknown): error is TaskStalledError {
    return hasCode(error, 'TASK_STALLED');
  }
}

/**
 * The guest could not be quiesced (VMware Tools not running, a VSS writer failed, fsfreeze refused) and the job
 * required an application-consistent snapshot (`quiesce: 'required'`). Nothing of the host was backed up; the
 * snapshot, if one was created, was removed. Retryable: a writer may be healthy on the next attempt.
 */
export class QuiesceFailedError extends DrkitError {
  constructor(message: string, options?: DrkitErrorOptions) {
    super('QUIESCE_FAILED', message, { ...options, defaultRetryable: true });
  }
  static override isInstance(error: unknown): error is QuiesceFailedError {
    return hasCode(error, 'QUIESCE_FAILED');
  }
}
