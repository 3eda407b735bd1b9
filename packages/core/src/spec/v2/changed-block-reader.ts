import type { ChangedBlockSession } from './changed-block-session.js';
import type { OpenChangedBlocksOptions } from './open-changed-blocks-options.js';

/**
 * Reads the blocks of one disk that changed since a checkpoint. Providers implement it; the engine calls it on
 * a Sync Proxy for every disk task.
 *
 * @example
 * ```ts
 * await using session = await reader.open({ disk, snapshot, diskSnapshot, base, chunkSize, signal });
 * if (session.mode === 'stream') for await (const change of session.changes({ signal })) { ... }
 * else for await (const extent of session.extents({ signal })) { const { data } = await session.read(extent); ... }
 * await session.commit({ pointId, checkpoint: session.checkpoint() });
 * ```
 */
export interface ChangedBlockReader {
  /** How its sessions deliver the change set: `stream` ({@link @drkit/core!StreamReadSession}) or `extents` ({@link @drkit/core!ExtentReadSession}). */
  readonly mode: 'stream' | 'extents';
  /**
   * The source's natural block size in bytes, a power of two (EBS: 512 KiB; a file: 4 KiB; `rbd`: 512). Every
   * listed extent starts on it; a lineage's chunk size must be a multiple of it: a new lineage gets the engine's
   * `chunkSize` or this block size, whichever is larger (at most 4 MiB); an existing lineage whose chunk size is
   * not a multiple fails its task with a `SourceProtocolError` (back it up to a new lineage).
   */
  readonly blockSize: number;
  /**
   * How many reads in flight help an `extents` reader (EBS: tens; NBD: a few; a local file: 4). The engine keeps
   * at most this many; 1 for a `stream` reader.
   */
  readonly maxConcurrentReads: number;
  /**
   * Opens a session on the snapshot. Decides the change set's validity: when the base cannot be used (a garbled
   * or foreign checkpoint, a snapshot that is gone, a reset of change tracking) it does not throw but opens a
   * full read and says why in {@link @drkit/core!ReadSessionBase.validity}.
   *
   * @throws {@link @drkit/core!NotFoundError} when the disk does not exist; {@link @drkit/core!AuthenticationError},
   * {@link @drkit/core!UnreachableError}, {@link @drkit/core!PermissionError} for access problems.
   */
  open(options: OpenChangedBlocksOptions): Promise<ChangedBlockSession>;
}
