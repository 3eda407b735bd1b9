import type { RepositoryCorruptError } from '../errors/drkit-error.js';
import type { ChangeSetValidity, Checkpoint, SnapshotConsistency } from '../spec/v2/index.js';
import type { RepositoryEncryption } from './keyring.js';
import type { Store } from './store.js';

/** Hex SHA-256 of a chunk's plain data (64 lowercase hex digits). */
export type ChunkId = string;

/** The identity of a disk lineage: all points of one disk of one host of one platform. */
export interface DiskLineage {
  readonly platformId: string;
  readonly hostId: string;
  readonly diskId: string;
}

/**
 * Counters of the backup that made a point. Every byte of the disk is in exactly one of `bytesWritten`,
 * `bytesDeduplicated`, `bytesSkippedUnchanged` and `bytesZero` (all plain bytes), so they add up to the point's
 * `capacityBytes`; commit refuses stats that do not, and a reader judges such a point corrupt.
 */
export interface PointStats {
  /** Plain bytes read from the source (its data changes and the reads that completed partial chunks). */
  readonly bytesRead: number;
  /** Plain bytes of the chunks this backup stored (new to the repository). */
  readonly bytesWritten: number;
  /** Plain bytes whose chunk equals the parent point's at the same position: not in the change set, or hashed equal. */
  readonly bytesSkippedUnchanged: number;
  /** Plain bytes of chunks the repository already held (from another point, disk or position). */
  readonly bytesDeduplicated: number;
  /** Plain bytes of all-zero chunks (stored as the zero id). */
  readonly bytesZero: number;
  /** Bytes of the blobs this backup put: chunk blobs, segment blobs and the manifest (after compression). */
  readonly bytesStored: number;
  /** Chunk blobs this backup wrote. */
  readonly chunksWritten: number;
  /** Segment blobs this backup wrote (a segment equal to the parent's, or all zero, is not written). */
  readonly segmentsWritten: number;
  /** Duration of the backup in seconds. */
  readonly seconds: number;
}

/**
 * The counters handed to {@link BackupSession.commit}; the session adds `bytesStored`, `chunksWritten` and
 * `segmentsWritten` from what it wrote itself.
 */
export type NewPointStats = Omit<PointStats, 'bytesStored' | 'chunksWritten' | 'segmentsWritten'>;

/** A committed recovery point: one disk at one point in time, restorable on its own. */
export interface RecoveryPoint extends DiskLineage {
  /** Unique, sortable by creation time. */
  readonly id: string;
  readonly hostName: string;
  readonly diskName: string;
  /**
   * When the point was committed (ISO 8601): the end of its backup, which may be hours after its data is from.
   * The point id starts with this time.
   */
  readonly createdAt: string;
  /**
   * When the point's data is from (ISO 8601): just before the source snapshot was created, for a platform that
   * takes snapshots, else when the disk's read session was opened. Retention buckets points by it. Points written
   * before drkit recorded it read with their `createdAt`.
   */
  readonly snapshotAt: string;
  /** The backup job that made the point (`BackupJobResult.jobId`); absent in points of older drkit. */
  readonly jobId?: string;
  /** The disk task that made the point (`DiskTaskOutcome.taskId`); absent in points of older drkit. */
  readonly taskId?: string;
  /** The name of the source snapshot the data was read from, when there was one (and in points of newer drkit). */
  readonly snapshotName?: string;
  /**
   * What the snapshot achieved (`application`, `host`, `disk`, or `none` for a disk read live); `none` in points
   * of drkit before it was recorded. A word this drkit does not know (a newer one's) counts as no better than
   * `none`.
   */
  readonly consistency: SnapshotConsistency;
  /** Disk size at the snapshot, in bytes. */
  readonly capacityBytes: number;
  /** Chunk size of the lineage, in bytes. */
  readonly chunkSize: number;
  /** Number of chunks (`ceil(capacityBytes / chunkSize)`). */
  readonly chunkCount: number;
  /** The point this one was built on (its unchanged chunks are the parent's), if any. */
  readonly parentId?: string;
  /** How far the change set that built this point could be trusted. */
  readonly validity: ChangeSetValidity;
  /** The source checkpoint the next incremental starts from. */
  readonly checkpoint?: Checkpoint;
  /** Hex SHA-256 of the point's manifest blob (`indexes/<id>`), which lists its index segments. */
  readonly indexDigest: string;
  readonly stats: PointStats;
  /**
   * In a repository of immutable points (feature `object-lock`): until when (ISO 8601) the point's metadata and
   * manifest are locked in the store, its commit plus the repository's period. Retention keeps it until then.
   */
  readonly lockedUntil?: string;
  /**
   * In a repository of immutable points: a date until which every chunk and segment the point references is
   * locked, at least {@link RecoveryPoint.lockedUntil}. A child of this point knows the chunks it inherits are
   * locked until then without asking the store.
   */
  readonly chunksLockedUntil?: string;
}

/**
 * A point whose metadata blob exists but cannot be read: the listing operations skip it and report it here
 * instead of failing the whole repository. Its disk lineage is unknown (it is in the unreadable blob), so it
 * matches no filter. Repair or remove the blob (`points/<id>.json`), or open the repository with the newer
 * drkit that wrote it.
 */
export interface UnreadablePoint {
  /** The point id, from the blob's key. */
  readonly id: string;
  /** The store key of the metadata blob (`points/<id>.json`). */
  readonly key: string;
  /**
   * `corrupt`: not UTF-8 JSON, or a field fails its checks (a damaged or hand-edited blob); `unsupported-version`:
   * its `formatVersion` is newer than this drkit reads (written by a newer drkit; not damaged).
   */
  readonly problem: 'corrupt' | 'unsupported-version';
  /** Why, in words (the error's message). */
  readonly detail: string;
  /** The error reading the blob raised. */
  readonly error: RepositoryCorruptError;
}

/** The new point's description, handed to {@link BackupSession.commit}. */
export interface NewPoint extends DiskLineage {
  readonly hostName: string;
  readonly diskName: string;
  /** The commit time (ISO 8601). */
  readonly createdAt: string;
  /** When the data is from (ISO 8601); default `createdAt`. See {@link RecoveryPoint.snapshotAt}. */
  readonly snapshotAt?: string;
  readonly jobId?: string;
  readonly taskId?: string;
  readonly snapshotName?: string;
  /** What the snapshot achieved; default `none`. See {@link RecoveryPoint.consistency}. */
  readonly consistency?: SnapshotConsistency;
  readonly capacityBytes: number;
  readonly chunkSize: number;
  readonly parentId?: string;
  readonly validity: ChangeSetValidity;
  readonly checkpoint?: Checkpoint;
  readonly stats: NewPointStats;
}

/**
 * One segment of a point's index: the ids of {@link IndexSegment.chunkCount} consecutive positions from
 * {@link IndexSegment.firstPosition}. Position `i` covers bytes `[i * chunkSize, min((i + 1) * chunkSize,
 * capacityBytes))`; an all-zero chunk has the zero id (32 zero bytes) and is not stored.
 */
export interface IndexSegment {
  /** The segment number `s`: positions `s * 1024` to `s * 1024 + chunkCount - 1`. */
  readonly number: number;
  readonly firstPosition: number;
  /** Positions in this segment: 1024, fewer only in the last segment. */
  readonly chunkCount: number;
  /** Whether every position is an all-zero chunk (such a segment is a reference, not a stored blob). */
  readonly zero: boolean;
  /** `32 * chunkCount` bytes: the id of position `firstPosition + k` at `32 * k`. Do not modify. */
  readonly ids: Uint8Array;
}

/**
 * A committed point's chunk ids, read segment by segment: only the manifest (32 bytes per 1024 chunks) is held,
 * segments are read when asked for (a few cached), so memory does not grow with the disk.
 */
export interface PointIndex {
  readonly chunkCount: number;
  readonly segmentCount: number;
  readonly chunkSize: number;
  readonly capacityBytes: number;
  /** Positions in segment `s` (1024, fewer in the last). */
  segmentLength(s: number): number;
  /** The content id of segment `s` (the zero id for an all-zero segment), from the manifest: no read. */
  segmentId(s: number): Uint8Array;
  /** Whether segment `s` is all zero (no read). */
  isZeroSegment(s: number): boolean;
  /** Reads and checks segment `s`. @throws {@link RepositoryCorruptError} naming the blob when it is damaged. */
  segment(s: number, options?: { signal?: AbortSignal }): Promise<IndexSegment>;
  /** The id of position `i` (the zero id for an all-zero chunk); reads its segment unless cached. */
  idAt(i: number, options?: { signal?: AbortSignal }): Promise<Uint8Array>;
  /** Every segment in order, a few read ahead; all-zero segments cost no read. */
  segments(options?: { signal?: AbortSignal }): AsyncIterable<IndexSegment>;
}

/**
 * The index of a point being written ({@link BackupSession.createIndex}). A position never set keeps the base
 * point's id when the base has a chunk of the same length there, else it is an all-zero chunk. Segments are
 * written as the backup goes ({@link PointIndexBuilder.flushBelow}), so memory stays bounded.
 */
export interface PointIndexBuilder {
  readonly chunkCount: number;
  readonly chunkSize: number;
  readonly capacityBytes: number;
  /** Sets the 32-byte id of position `i` (copied); the zero id marks an all-zero chunk. @throws {@link InvalidArgumentError} */
  setId(i: number, id: Uint8Array): void;
  /** Marks position `i` as an all-zero chunk. @throws {@link InvalidArgumentError} */
  setZero(i: number): void;
  /** Marks positions `from` to `to - 1` as all-zero chunks (cheap for whole segments). @throws {@link InvalidArgumentError} */
  setZeroRange(from: number, to: number): void;
  /**
   * Writes the segments wholly below position `end`: call it once no position below `end` will be set again.
   * Setting such a position afterwards throws {@link InvalidArgumentError}.
   */
  flushBelow(end: number, options?: { signal?: AbortSignal }): Promise<void>;
}

/** A chunk ready to store, as the chunk worker pool encoded it. */
export interface EncodedChunkBlob {
  /** 32-byte SHA-256 of the plain data. */
  readonly hash: Uint8Array;
  /** 0 raw, 1 zstd. */
  readonly codec: 0 | 1;
  /** Stored bytes (compressed or raw). */
  readonly payload: Uint8Array;
  /** Length of the plain data. */
  readonly plainLength: number;
  /**
   * The blob-header-sized bytes just before `payload` in its buffer are free to overwrite: the header is written
   * there and the payload is not copied.
   */
  readonly frameInPlace?: boolean;
}

/** A filter of {@link Repository.hostPoints}. */
export interface HostPointFilter {
  readonly platformId?: string;
  readonly hostId?: string;
}

/**
 * The points of one host made by one backup job: the disks of a host backed up together (from one host snapshot,
 * where the platform takes them), what the restore of a multi-disk machine asks for. A point without a `jobId`
 * (written by an older drkit) forms a host point of its own.
 */
export interface HostPoint {
  readonly platformId: string;
  readonly hostId: string;
  /** The job that made the points; absent for a point of an older drkit (then `points` holds just that one). */
  readonly jobId?: string;
  /** The earliest `snapshotAt` of the points (with a host snapshot, all of them have the same). */
  readonly snapshotAt: string;
  /**
   * The weakest consistency of its points (`application` > `host` > `disk` > `none`; an unknown word counts as
   * `none`). A multi-disk restore is consistent across disks only when this is `application` or `host`.
   */
  readonly consistency: SnapshotConsistency;
  /** The points, one per disk backed up successfully, in the order of {@link Repository.points} (oldest first). */
  readonly points: readonly RecoveryPoint[];
}

/** Options of {@link Repository.lockHost}. */
export interface LockHostOptions {
  readonly signal?: AbortSignal;
  /** Milliseconds between attempts while another job holds the host. Default 5000. */
  readonly pollIntervalMs?: number;
  /** Told once, when the host is held by another job (its description: session, machine, pid, since when). */
  readonly onWait?: (heldBy: string) => void;
}

/** A host's lock, held by one backup job; see {@link Repository.lockHost}. */
export interface HostLock extends AsyncDisposable {
  /**
   * Re-reads the lock and checks it is still this job's.
   *
   * @throws {@link RepositoryLockedError} when it was lost: its heartbeat lapsed for half the stale threshold (a
   * paused process) or another job took it over.
   */
  confirm(options?: { signal?: AbortSignal }): Promise<void>;
  /** Stops the heartbeat and removes the lock. Idempotent. */
  release(): Promise<void>;
}

/** Options of {@link Repository.beginBackup}. */
export interface BeginBackupOptions extends DiskLineage {
  readonly signal?: AbortSignal;
}

/** A committed point and its index, as {@link BackupSession.adoptPoint} read them. */
export interface AdoptedPoint {
  readonly point: RecoveryPoint;
  readonly index: PointIndex;
}

/**
 * The write side of one disk task. Holds a shared repository lock (so a prune cannot remove the chunks it relies
 * on) until committed or aborted.
 */
export interface BackupSession extends AsyncDisposable {
  /**
   * Reads a committed point (the parent of the new one) under this session's lock. Its chunks cannot be pruned
   * while the session lives, so commit does not check that they exist (chunks marked damaged excepted).
   *
   * @throws {@link NotFoundError} when the point no longer exists; {@link RepositoryCorruptError} for a bad index.
   */
  adoptPoint(pointId: string, options?: { signal?: AbortSignal }): Promise<AdoptedPoint>;
  /**
   * The key chunk ids are HMAC-SHA-256 under in an encrypted repository (undefined: ids are SHA-256). Whoever
   * hashes the chunks it puts (the engine, in its worker pool) must hash with it.
   *
   * @internal
   */
  readonly chunkIdKey?: Uint8Array;
  /** Whether the repository already holds a healthy copy of the chunk (not listed as damaged). */
  hasChunk(hash: Uint8Array, options?: { signal?: AbortSignal }): Promise<boolean>;
  /**
   * Whether {@link BackupSession.putChunk} alone settles whether a chunk was already stored, as cheaply as
   * {@link BackupSession.hasChunk} would ask (true when the store declares `createOnlyProvesWhole`, as the S3 store
   * does): a writer then calls `putChunk` for each new chunk without asking `hasChunk` first, and counts a `false`
   * as deduplicated. False over the local folder store, where asking first is a cheap stat that spares a write.
   */
  readonly putSettlesPresence: boolean;
  /**
   * Stores a chunk (idempotent; rewrites a chunk listed as damaged). Returns whether bytes were written: `false`
   * when the repository already held it (known to the session, or found present by the create-only write).
   */
  putChunk(chunk: EncodedChunkBlob, options?: { signal?: AbortSignal }): Promise<boolean>;
  /**
   * Starts the new point's index. With `base` (the index {@link BackupSession.adoptPoint} returned), positions
   * never set keep the base's ids: an untouched segment is the base's segment (the same id, not rewritten);
   * with `inherit: false` (a full read) they are zeros, and the base only spares commit the existence check of
   * the ids it shares at the same positions.
   *
   * @throws {@link InvalidArgumentError} when the layout is outside the format's limits (chunk size 256 KiB to
   * 4 MiB, capacity 1 byte to 256 TiB), `base` was not adopted by this session or has another chunk size.
   */
  createIndex(layout: {
    readonly capacityBytes: number;
    readonly chunkSize: number;
    readonly base?: PointIndex;
    readonly inherit?: boolean;
  }): PointIndexBuilder;
  /**
   * Writes the remaining segments, the manifest and the point (manifest first, point metadata last, create-only),
   * releases the lock and returns the committed point. Checks first that every chunk the index names exists. When
   * the session's own clocks show, after the metadata is written, that its lock could have been judged stale since
   * its last heartbeat (the process was paused), it waits for any running prune to finish and checks that every
   * blob the point names still exists; otherwise nothing more is done.
   *
   * @throws {@link RepositoryCorruptError} when a referenced chunk is missing;
   * {@link RepositoryLockedError} when the session's lock was broken (e.g. judged stale by a prune);
   * {@link PointWithdrawnError} (retryable) when, after such a pause, a prune had deleted a blob the point names:
   * the point was withdrawn, and the next backup of the disk writes the blob again.
   */
  commit(
    point: NewPoint,
    index: PointIndexBuilder,
    options?: { signal?: AbortSignal },
  ): Promise<RecoveryPoint>;
  /**
   * Releases the lock without committing. The chunks already written stay for a later resume. Idempotent. Disposing
   * the session (`await using`) aborts it too, but never throws: a lock it cannot delete (the store is down) is left
   * to go stale.
   */
  abort(): Promise<void>;
}

/** Where {@link Repository.restore} writes. */
export type RestoreTarget =
  /** A file path (created or truncated to the point's capacity, written sparse for zero chunks) or a block device. */
  | { readonly path: string }
  /** Any writable stream; zero chunks are written as zeros. */
  | { readonly stream: NodeJS.WritableStream };

/** Options of {@link Repository.restore}. */
export interface RestoreOptions {
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: { bytesDone: number; totalBytes: number }) => void;
}

/** What {@link Repository.verify} found. */
export interface VerifyReport {
  readonly pointsChecked: number;
  readonly chunksChecked: number;
  readonly bytesChecked: number;
  /** Chunks that are missing or do not hash to their id, each with the points that reference it. */
  readonly damaged: readonly {
    chunkId: ChunkId;
    problem: 'missing' | 'checksum' | 'unreadable';
    pointIds: string[];
  }[];
  /**
   * Points whose index blob is missing or fails its checks (their chunks could not be enumerated, so they were
   * not checked): such a point cannot be restored.
   */
  readonly damagedIndexes: readonly { pointId: string; problem: 'missing' | 'corrupt'; detail: string }[];
  /**
   * Points whose metadata blob cannot be read (corrupt, or of a newer format), among all points or the ones
   * named: their chunks could not be enumerated, so they were not checked, and this drkit cannot restore them.
   */
  readonly unreadablePoints: readonly UnreadablePoint[];
  /** True when nothing is damaged (no damaged chunk, no damaged index, no unreadable point). */
  readonly ok: boolean;
}

/** The lock policy of a repository of immutable points, given to `openRepository` at creation. */
export interface ImmutabilityOptions {
  /**
   * S3 Object Lock mode: `governance` (an account with `s3:BypassGovernanceRetention` can still remove a lock: for
   * tests and mistakes) or `compliance` (nobody can before the date, the root account included).
   */
  readonly mode: 'governance' | 'compliance';
  /** How long each point stays locked after its commit, in days (or give `periodMs`). */
  readonly periodDays?: number;
  /** The same in milliseconds (at least 1000). */
  readonly periodMs?: number;
  /**
   * How far past the period new chunks are locked, in milliseconds (default: the period). A larger window means
   * fewer lock extensions of reused chunks (once per window) and data kept longer.
   */
  readonly windowMs?: number;
}

/** What one call of {@link Repository.prune} did: see {@link PruneResult.phase}. */
export interface PruneResult {
  /**
   * `marked`: no mark was pending; this call recorded the candidates (chunks and orphan indexes that no committed
   * point references) and deleted nothing. `pending`: a mark younger than the grace period exists; nothing was
   * done. `swept`: a mark older than the grace period was swept under the exclusive lock (its candidates that are
   * still unreferenced were deleted) and the next mark recorded in the same pass.
   */
  readonly phase: 'marked' | 'pending' | 'swept';
  /** Chunks deleted because no committed point referenced them at the mark nor at the sweep. */
  readonly chunksRemoved: number;
  /** Index segment blobs (`segments/`) deleted because no point's manifest named them at the mark nor at the sweep. */
  readonly indexSegmentsRemoved: number;
  /** Bytes of the deleted chunk, index segment and manifest blobs. */
  readonly bytesFreed: number;
  /** Index blobs deleted because no point metadata named them at the mark nor at the sweep. */
  readonly indexesRemoved: number;
  /** Backup locks deleted because their heartbeat was older than the stale threshold (sweeps only). */
  readonly staleLocksRemoved: number;
  /**
   * Candidates the store still keeps locked (immutable points): not deleted by this sweep, left for a later one.
   * 0 when none was.
   */
  readonly lockedSkipped: number;
  /** The earliest lock date among them (ISO 8601), when the store said; absent when none was skipped. */
  readonly lockedSkippedUntil?: string;
  /** Candidate chunks of the mark pending after this call (0 when none is). */
  readonly candidateChunks: number;
  /** Candidate index segment blobs of the mark pending after this call. */
  readonly candidateIndexSegments: number;
  /** Bytes of those candidate chunks and index segments. */
  readonly candidateBytes: number;
  /** Candidate (orphan) index blobs of the mark pending after this call. */
  readonly candidateIndexes: number;
  /** When the pending mark was recorded (ISO 8601); absent when no mark is pending. */
  readonly markedAt?: string;
  /** From when a prune sweeps the pending mark (`markedAt` + the grace period); absent when none is pending. */
  readonly sweepAfter?: string;
}

/** Options of {@link Repository.prune}. */
export interface PruneOptions {
  /**
   * Wait for the grace period of the mark (the one found, or the one this call records), then sweep it, in this
   * call. Default false: a call marks or sweeps, whichever is due, and returns.
   */
  readonly wait?: boolean;
  /**
   * How old a mark must be before it is swept, in milliseconds: more than the repository's `lockStaleAfterMs`
   * (default twice it: 20 minutes).
   */
  readonly graceMs?: number;
  /** Folder for the sorted runs of chunk ids (up to 32 bytes per chunk; default: the system's temporary folder). */
  readonly scratchDirectory?: string;
  readonly signal?: AbortSignal;
}

/** Which points to keep; points matched by no rule are removed. Every rule applies per disk lineage. */
export interface RetentionPolicy {
  /** Keep the newest N points. */
  readonly keepLast?: number;
  /** Keep the newest point of each of the last N days (UTC, of the points' `snapshotAt`) that have points. */
  readonly keepDaily?: number;
  /** Keep the newest point of each of the last N ISO weeks (of the points' `snapshotAt`) that have points. */
  readonly keepWeekly?: number;
}

/**
 * What a ledger entry records. The core set: `snapshot` (a host snapshot; the only kind the engine creates and
 * releases today), `attached-disk` (a disk attached to a Sync Proxy), `temporary-volume` (a volume created to read
 * from, e.g. a clone), `shadow-copy` (a guest-side shadow copy). Any other non-empty string is allowed, so a
 * provider can record a side effect of its own without a change of the ledger format; an engine that does not know
 * how to release a kind reports the entry as `failed` in `reconcile()` and leaves it recorded.
 */
export type LedgerEntryKind =
  | 'snapshot'
  | 'attached-disk'
  | 'temporary-volume'
  | 'shadow-copy'
  | (string & Record<never, never>);

/** The engine instance that holds a ledger entry. */
export interface LedgerEntryOwner {
  /**
   * Stable id of the engine instance (`createBackupEngine`'s `engineId`, by default a random UUID per engine). An
   * engine recognises its own entries by it.
   */
  readonly engineId: string;
  /** Host name of the engine's machine, for humans. */
  readonly hostname: string;
  /** Process id of the engine, for humans. */
  readonly pid: number;
}

/**
 * A side effect drkit created (or is about to create) on a source, recorded before the call that creates it.
 *
 * Readers ignore fields they do not know, and keep them when they rewrite the entry.
 */
export interface LedgerEntry {
  /** Unique id of the entry. */
  readonly id: string;
  /** What the side effect is; see {@link LedgerEntryKind}. */
  readonly kind: LedgerEntryKind;
  readonly platformId: string;
  readonly hostId: string;
  /** The name drkit gives the side effect on the source. */
  readonly name: string;
  /** `pending`: about to be created or in use by a running job; `retained`: kept as the base of the next incremental. */
  readonly state: 'pending' | 'retained';
  /** The job that created it. */
  readonly jobId: string;
  readonly createdAt: string;
  /** Provider-specific id once known. */
  readonly providerId?: string;
  /**
   * The engine that holds the entry. Absent in entries written before owners were recorded: those count as
   * held by nobody (their lease has expired).
   */
  readonly owner?: LedgerEntryOwner;
  /**
   * Until when (ISO 8601) the owner holds a `pending` entry: its engine renews it while the entry's job runs.
   * Past it (plus a margin for clock skew) another engine's `reconcile()` may release the side effect. Absent
   * in older entries (treated as expired).
   */
  readonly leaseExpiresAt?: string;
}

/** A repository of recovery points on a {@link Store}. */
export interface Repository extends AsyncDisposable {
  /** The repository's id (32 hex digits, from its `config` blob). */
  readonly id: string;
  /** The store it lives in, as given (in an encrypted repository it holds sealed blobs). */
  readonly store: Store;
  /** Whether the repository is encrypted (its blobs sealed with AES-256-GCM, its chunk ids keyed). */
  readonly encrypted: boolean;
  /** The lock policy of a repository of immutable points (feature `object-lock`); absent otherwise. */
  readonly immutability?: {
    readonly mode: 'governance' | 'compliance';
    readonly periodMs: number;
    readonly windowMs: number;
  };
  /**
   * Wraps the data key of an encrypted repository under a new passphrase or key: a new key blob is written
   * (durable) and the one this repository was opened with deleted. No chunk or other blob is rewritten, so it
   * takes the same time whatever the repository holds. Other key blobs (added by another drkit) are left alone.
   *
   * @throws {@link RepositoryKeyError} when the repository is not encrypted; {@link InvalidSettingsError} for an
   * invalid `encryption`.
   *
   * @example
   * ```ts
   * await repository.changePassphrase({ passphrase: await readFile('/etc/drkit/new-passphrase', 'utf8') });
   * ```
   */
  changePassphrase(encryption: RepositoryEncryption, options?: { signal?: AbortSignal }): Promise<void>;
  /**
   * Committed points, oldest first, optionally of one lineage or host. A point whose metadata cannot be read
   * (corrupt, or written by a newer drkit) is skipped, not an error: see {@link Repository.unreadablePoints}.
   */
  points(filter?: Partial<DiskLineage>, options?: { signal?: AbortSignal }): Promise<RecoveryPoint[]>;
  /**
   * The committed points grouped per host and job ({@link HostPoint}), oldest first (by the first point of each
   * group, the order of {@link Repository.points}), optionally of one platform or host. Points whose metadata
   * cannot be read are skipped as in {@link Repository.points}.
   *
   * @example
   * ```ts
   * const [latest] = (await repository.hostPoints({ hostId: 'vm-42' })).slice(-1);
   * for (const point of latest?.points ?? []) console.log(point.diskName, point.snapshotAt, point.id);
   * ```
   */
  hostPoints(filter?: HostPointFilter, options?: { signal?: AbortSignal }): Promise<HostPoint[]>;
  /**
   * The points {@link Repository.points} skips because their metadata blob cannot be read, by id. A console
   * shows them as damaged; `verify` reports them, retention leaves them alone, and `prune` refuses to run
   * while there is any (their chunks are unknown).
   *
   * @example
   * ```ts
   * for (const p of await repository.unreadablePoints()) console.warn(`${p.id}: ${p.problem}: ${p.detail}`);
   * ```
   */
  unreadablePoints(options?: { signal?: AbortSignal }): Promise<UnreadablePoint[]>;
  /** One point. @throws {@link NotFoundError} */
  point(id: string, options?: { signal?: AbortSignal }): Promise<RecoveryPoint>;
  /**
   * Opens the point's index: reads its manifest (checked against the point's digest); segments are read as
   * asked for. @throws {@link RepositoryCorruptError} naming the blob when it is missing or damaged.
   *
   * @example
   * ```ts
   * const index = await repository.openIndex(point);
   * for await (const segment of index.segments()) if (!segment.zero) console.log(segment.firstPosition);
   * ```
   */
  openIndex(point: RecoveryPoint, options?: { signal?: AbortSignal }): Promise<PointIndex>;
  /** The plain bytes of one chunk, hash-checked. @throws {@link ChecksumMismatchError}, {@link NotFoundError} */
  readChunk(hash: Uint8Array, plainLength: number, options?: { signal?: AbortSignal }): Promise<Uint8Array>;
  /** Opens the write side of a backup of one disk (takes a shared lock). @throws {@link RepositoryLockedError} */
  beginBackup(options: BeginBackupOptions): Promise<BackupSession>;
  /**
   * Restores a point byte for byte; every chunk is hash-checked. A stream is not ended. On failure the target
   * holds a partial restore.
   *
   * @throws {@link ChecksumMismatchError} naming the chunk and the point when a chunk is damaged;
   * {@link RepositoryCorruptError} when a chunk or the index is missing; {@link NotFoundError} for an unknown point.
   */
  restore(pointId: string, target: RestoreTarget, options?: RestoreOptions): Promise<{ bytes: number }>;
  /**
   * Re-hashes every chunk of every point (or of the given points) and records damaged chunks. Points whose
   * metadata cannot be read are listed in {@link VerifyReport.unreadablePoints} and make the report not `ok`.
   */
  verify(options?: { pointIds?: readonly string[]; signal?: AbortSignal }): Promise<VerifyReport>;
  /** Ids of chunks that failed verification and have not been rewritten since. */
  damagedChunks(options?: { signal?: AbortSignal }): Promise<Set<ChunkId>>;
  /**
   * Removes the points the policy does not keep. Chunks stay until {@link Repository.prune}. Points whose
   * metadata cannot be read are neither counted by the rules nor removed; they are returned in `unreadable`. In a
   * repository of immutable points, a point the policy would remove whose lock date has not passed (by this
   * process's clock or the store's) is not removed: it is returned in `locked` with its date, and a later call
   * removes it.
   */
  applyRetention(
    policy: RetentionPolicy,
    options?: { dryRun?: boolean; signal?: AbortSignal },
  ): Promise<{
    kept: RecoveryPoint[];
    removed: RecoveryPoint[];
    unreadable: UnreadablePoint[];
    locked: { point: RecoveryPoint; lockedUntil: string }[];
  }>;
  /**
   * Deletes chunks and orphan indexes that no committed point references, in two phases a grace period apart
   * (more than `lockStaleAfterMs`), so that a process paused past its lock's lifetime cannot turn a prune into
   * data loss. The first call records the candidates (`prune/mark.json`, taking no lock: backups run on); a
   * call once the grace period has passed takes the exclusive lock, recomputes what committed points reference
   * (points committed meanwhile included), deletes only candidates still unreferenced, and records the next mark.
   * With `wait`, one call waits out the grace period and does both. The chunk ids are sorted on disk in runs,
   * so memory stays bounded (45 MiB of buffers) whatever the number of chunks.
   *
   * @throws {@link RepositoryLockedError} while a backup holds a live shared lock (sweeps only), or when the
   * prune's own lock was lost (its heartbeat lapsed past half the stale threshold by the wall or the monotonic
   * clock, e.g. the process was paused, or a backup broke it as stale): it stops before its next deletion;
   * {@link UnreadablePointsError} (a {@link RepositoryCorruptError}) naming the points whose metadata cannot be
   * read, deleting nothing: the chunks they reference are unknown, and may still be restorable;
   * {@link RepositoryCorruptError} when a point's index cannot be read; {@link InvalidArgumentError} when
   * `graceMs` is not more than `lockStaleAfterMs`.
   */
  prune(options?: PruneOptions): Promise<PruneResult>;
  /**
   * Takes the lock of one host for a backup job, so that two jobs never work on one host at once, also from two
   * processes (Sync Proxies) sharing the repository: the later one would otherwise plan from points the earlier
   * one is about to supersede, and the first to finish could release the other's base snapshot. Waits while
   * another job holds it, polling every `pollIntervalMs`. A holder whose heartbeat is older than the repository's
   * `lockStaleAfterMs` (a crashed process elsewhere) is taken over, and so at once is one known to be gone (the
   * same machine, boot and pid namespace, and no process of its pid: a `kill -9` on this machine). The lock does
   * not block a prune.
   *
   * @throws `signal.reason` when aborted while waiting.
   */
  lockHost(host: { platformId: string; hostId: string }, options?: LockHostOptions): Promise<HostLock>;
  /** The side-effect ledger, kept in the repository so every proxy sees it. */
  readonly ledger: {
    record(entry: LedgerEntry, options?: { signal?: AbortSignal }): Promise<void>;
    update(entry: LedgerEntry, options?: { signal?: AbortSignal }): Promise<void>;
    remove(id: string, options?: { signal?: AbortSignal }): Promise<void>;
    list(options?: { signal?: AbortSignal }): Promise<LedgerEntry[]>;
  };
  /** Stops the repository's worker threads. */
  close(): Promise<void>;
}
