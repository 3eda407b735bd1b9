import type { Change, ChangeSetValidity, FullReadReason } from './change-set.js';
import type { Checkpoint } from './checkpoint.js';
import type { Disk } from './disk.js';
import type { Extent } from './extent.js';
import type { CallOptions } from './options.js';
import type { SnapshotRef } from './platform.js';

/** What {@link ChangedBlockReader.open} needs. */
export interface OpenChangedBlocksOptions extends CallOptions {
  /** The disk to read. */
  readonly disk: Disk;
  /** The point-in-time snapshot of the disk's host taken for this backup, when the platform takes snapshots. */
  readonly snapshot?: SnapshotRef;
  /** The checkpoint of the previous backup of this disk; absent for a full read. */
  readonly base?: Checkpoint;
  /** Why the engine asks for a full read when it passes no base (recorded as the validity reason). */
  readonly fullReason?: FullReadReason;
  /**
   * The chunk size of the disk's lineage, in bytes. A reader that can choose how it cuts data should yield data
   * changes aligned to it and at most this long: each buffer then becomes one chunk and reaches the hashing
   * threads without a copy.
   */
  readonly chunkSize?: number;
  /**
   * Where a reader should take the buffers it yields data in, when it allocates them: the engine recycles the
   * buffers of a chunk-sized change once hashed. A buffer so taken is used for one data change only and not
   * touched after it is yielded. Content is undefined (not zeroed). Readers may ignore it.
   */
  readonly allocate?: (length: number) => Uint8Array;
}

/**
 * Reads the blocks of one disk that changed since a checkpoint. Providers implement it; the engine calls it on
 * a Sync Proxy for every disk task.
 *
 * @example
 * ```ts
 * await using session = await reader.open({ disk, snapshot, base, signal });
 * for await (const change of session.changes({ signal })) { ... }
 * const next = session.checkpoint();
 * ```
 */
export interface ChangedBlockReader {
  /**
   * Opens a session on the snapshot. Decides the change set's validity: when the base cannot be used it does
   * not throw but opens a full read and says why in {@link ChangedBlockSession.validity}.
   *
   * @throws {@link @drkit/core!NotFoundError} when the disk does not exist; {@link @drkit/core!AuthenticationError},
   * {@link @drkit/core!UnreachableError}, {@link @drkit/core!PermissionError} for access problems.
   */
  open(options: OpenChangedBlocksOptions): Promise<ChangedBlockSession>;
}

/**
 * An open read of one disk at one point in time. Holds source resources (a connection, a temp keyring, a
 * mounted volume) until closed; `await using` closes it also when the consumer stops early.
 */
export interface ChangedBlockSession extends AsyncDisposable {
  /** Capacity of the disk at the snapshot, in bytes; may differ from the base's (a disk that grew or shrank). */
  readonly capacityBytes: number;
  /** Whether the change set is exact, a superset, or a full read and why. */
  readonly validity: ChangeSetValidity;
  /**
   * The changes, sorted by offset, disjoint, within {@link ChangedBlockSession.capacityBytes}. Data buffers
   * belong to the consumer once yielded. Ranges not covered keep the base's content (zeros for a full read).
   *
   * @throws {@link @drkit/core!SourceProtocolError} when the source's stream is malformed or truncated.
   */
  changes(options?: CallOptions): AsyncIterable<Change>;
  /**
   * Reads arbitrary bytes of the snapshot, when the source allows random access. The engine uses it to complete
   * chunks that a change covers only partly; without it, it takes the rest from the parent point. Resolves with
   * exactly `extent.length` bytes: a longer or shorter answer fails the disk task with a
   * {@link @drkit/core!SourceProtocolError} (nothing is committed), never padded or cut.
   */
  readRange?(extent: Extent, options?: CallOptions): Promise<Uint8Array>;
  /** The checkpoint the next backup of this disk should use as its base. Valid after `changes()` completed. */
  checkpoint(): Checkpoint;
  /** Releases the session's resources. Idempotent. */
  close(): Promise<void>;
}
