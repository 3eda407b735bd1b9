import type { ExtentReadSession } from './extent-read-session.js';
import type { StreamReadSession } from './stream-read-session.js';

/**
 * An open read of one disk at one point in time: a stream of changes, or a list of changed extents read by range.
 * Its `mode` must be the reader's {@link @drkit/core!ChangedBlockReader.mode}.
 */
export type ChangedBlockSession = StreamReadSession | ExtentReadSession;
