import type { DiskTaskCounters } from './disk-task-counters.js';
import type { DiskTaskState } from './disk-task-state.js';

/** A progress report of one disk task. */
export interface DiskTaskProgress extends DiskTaskCounters {
  readonly taskId: string;
  readonly hostId: string;
  readonly diskId: string;
  readonly state: DiskTaskState;
  /** Bytes the task expects to cover (the disk capacity for a full or superset read). */
  readonly totalBytes: number;
  /** Bytes per second covered, averaged since the task started reading. */
  readonly throughputBytesPerSecond: number;
  /** Estimated seconds until done, when it can be estimated. */
  readonly etaSeconds: number | undefined;
}
