import type { ChangeSetValidity } from './change-set-validity.js';
import type { DiskTaskCounters } from './disk-task-counters.js';
import type { SnapshotConsistency } from './snapshot-consistency.js';

/** The result of one disk task that committed a recovery point. */
export interface DiskTaskResult extends DiskTaskCounters {
  readonly taskId: string;
  /** The new recovery point. */
  readonly pointId: string;
  /** The change-set validity recorded in the point. */
  readonly validity: ChangeSetValidity;
  /** The snapshot's consistency recorded in the point (`none` for a disk read live). */
  readonly consistency: SnapshotConsistency;
  /** Capacity of the disk at the snapshot. */
  readonly capacityBytes: number;
  /** Number of chunks in the point's index. */
  readonly chunkCount: number;
  /** Wall-clock seconds. */
  readonly seconds: number;
  /**
   * The error of the read session's `commit`, when it failed: the point is committed and whole, but the source
   * may not have advanced its own change tracking (the next backup then reads more, never less).
   */
  readonly sourceCommitError?: unknown;
}
