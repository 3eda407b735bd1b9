import type { CallOptions } from './call-options.js';
import type { DiskTaskProgress } from './disk-task-progress.js';

/** Options of {@link @drkit/core!SyncProxy.run}. */
export interface RunDiskTaskOptions extends CallOptions {
  /** Called with progress, at most a few times per second. */
  readonly onProgress?: (progress: DiskTaskProgress) => void;
  /**
   * Seconds without progress (no byte read, no chunk completed) after which the task fails with a
   * `TaskStalledError` (code `TASK_STALLED`) and releases what it holds. Default: the proxy's own (600 for the
   * in-process proxy).
   */
  readonly stallTimeoutSeconds?: number;
}
