import type { SourceChecksum } from './source-checksum.js';

/** The answer to one {@link @drkit/core!ReadRequest}. */
export interface ReadResult {
  /**
   * Exactly the requested number of bytes; a shorter or longer answer fails the disk task with a
   * `SourceProtocolError`, never padded or cut. The buffer belongs to the engine once returned.
   */
  readonly data: Uint8Array;
  /** The source's checksum of `data`, when it gives one; the engine verifies it. */
  readonly checksum?: SourceChecksum;
}
