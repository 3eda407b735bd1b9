import type { DataChange } from './data-change.js';
import type { ZeroChange } from './zero-change.js';

/**
 * One element of a streamed change set ({@link @drkit/core!StreamReadSession.changes}). The disk at the snapshot is the base
 * (the parent point's content, or all zeros for a full read) overlaid with every change. Changes come sorted by
 * offset, disjoint and within capacity.
 */
export type Change = DataChange | ZeroChange;
