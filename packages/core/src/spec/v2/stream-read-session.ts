import type { CallOptions } from './call-options.js';
import type { Change } from './change.js';
import type { ReadSessionBase } from './read-session-base.js';

/**
 * A session that yields its change set as one ordered stream (`rbd export-diff`, a local file read in order): the
 * source decides the pace; the engine reads it once, front to back.
 */
export interface StreamReadSession extends ReadSessionBase {
  readonly mode: 'stream';
  /**
   * The changes, sorted by offset, disjoint, within {@link @drkit/core!ReadSessionBase.capacityBytes}. Data buffers belong to
   * the consumer once yielded. Ranges not covered keep the base's content (zeros for a full read). Called once.
   *
   * @throws {@link @drkit/core!SourceProtocolError} when the source's stream is malformed or truncated.
   */
  changes(options?: CallOptions): AsyncIterable<Change>;
}
