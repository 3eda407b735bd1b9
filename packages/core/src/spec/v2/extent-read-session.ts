import type { CallOptions } from './call-options.js';
import type { ChangedExtent } from './changed-extent.js';
import type { ReadRequest } from './read-request.js';
import type { ReadResult } from './read-result.js';
import type { ReadSessionBase } from './read-session-base.js';

/**
 * A session that lists its changed extents and lets the engine read them by range, several at once
 * (`QueryChangedDiskAreas` then NBD reads, `ListChangedBlocks` then `GetSnapshotBlock`, `SEEK_DATA` then
 * `pread`). The engine keeps at most the reader's `maxConcurrentReads` reads in flight and issues them in order of
 * offset; they may complete in any order. Answers wait for their turn within a budget of two chunks per read in
 * flight (at most 64 chunks): memory stays bounded whatever the disk's size.
 */
export interface ExtentReadSession extends ReadSessionBase {
  readonly mode: 'extents';
  /**
   * The changed extents, sorted by offset, disjoint, within the capacity, aligned to the reader's `blockSize`.
   * Ranges not listed keep the base's content (zeros for a full read). Called once; the engine reads while it
   * lists, so a reader should page (an 8 TiB disk's list is never held whole).
   *
   * @throws {@link @drkit/core!SourceProtocolError} when the source's listing is malformed.
   */
  extents(options?: CallOptions): AsyncIterable<ChangedExtent>;
  /**
   * Reads one piece of a listed `data` extent. Called concurrently; valid until the session is closed.
   *
   * @throws the source's errors. The engine tries a read up to 4 times in all when it fails with a drkit error
   * that is `retryable` (`ThrottledError`, `TimeoutError`, a retryable `UnreachableError`, ...) or with a
   * `ChecksumMismatchError` (the answer's bytes did not match its checksum); any other error fails the task. A
   * reader that retries on its own should give up with a non-retryable error, or the attempts multiply.
   */
  read(request: ReadRequest, options?: CallOptions): Promise<ReadResult>;
}
