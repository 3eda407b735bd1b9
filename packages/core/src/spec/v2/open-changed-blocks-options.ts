import type { CallOptions } from './call-options.js';
import type { Checkpoint } from './checkpoint.js';
import type { Disk } from './disk.js';
import type { DiskSnapshot } from './disk-snapshot.js';
import type { FullReadReason } from './full-read-reason.js';
import type { HostSnapshot } from './host-snapshot.js';

/** What {@link @drkit/core!ChangedBlockReader.open} needs. */
export interface OpenChangedBlocksOptions extends CallOptions {
  /** The disk to read. */
  readonly disk: Disk;
  /** The snapshot of the disk's host taken for this backup, when the platform takes snapshots. */
  readonly snapshot?: HostSnapshot;
  /** This disk's part of `snapshot` (its entry in {@link @drkit/core!HostSnapshot.disks}). */
  readonly diskSnapshot?: DiskSnapshot;
  /** The checkpoint of the previous backup of this disk; absent for a full read. */
  readonly base?: Checkpoint;
  /** Why the engine asks for a full read when it passes no base (recorded as the validity reason). */
  readonly fullReason?: FullReadReason;
  /**
   * The chunk size of the disk's lineage, in bytes: a power of two, a multiple of the reader's `blockSize`. A
   * stream reader that can choose how it cuts data should yield data changes aligned to it and at most this long:
   * each buffer then becomes one chunk and reaches the hashing threads without a copy.
   */
  readonly chunkSize: number;
  /**
   * Where a reader should take the buffers it returns data in, when it allocates them: the engine recycles the
   * buffers of a chunk-sized change once hashed. A buffer so taken is used for one change or read only and not
   * touched after it is handed over. Content is undefined (not zeroed). Readers may ignore it.
   */
  readonly allocate?: (length: number) => Uint8Array;
  /**
   * How long one request to the source may go unanswered, in seconds: the Sync Proxy's "HTTP Communication
   * Timeout" (`httpTimeoutSeconds`, default 600). A reader applies it to every request of the session (HTTP
   * calls, NBD reads, `rbd` commands) and fails a request past it with a `TimeoutError`. Absent: the reader's own
   * default.
   */
  readonly requestTimeoutSeconds?: number;
  /**
   * Tells the engine that the session waits for a resource other sessions hold (a data connection of its host's
   * budget), not for its source: the engine's stall watchdog does not count the time until the returned function
   * is called (once, when the wait ends, whether it got the resource or not). Such a wait must be bounded by the
   * call's own `deadline` or `requestTimeoutSeconds`. Readers that never wait so ignore it.
   *
   * @example
   * ```ts
   * const done = options.waiting?.('a data connection to host-12');
   * try {
   *   connection = await budget.acquire('host-12', options);
   * } finally {
   *   done?.();
   * }
   * ```
   */
  readonly waiting?: (resource: string) => () => void;
}
