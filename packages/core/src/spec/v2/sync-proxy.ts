import type { DiskTask } from './disk-task.js';
import type { DiskTaskResult } from './disk-task-result.js';
import type { RunDiskTaskOptions } from './run-disk-task-options.js';
import type { SyncProxySettings } from './sync-proxy-settings.js';

/**
 * A node that moves data: it reads a disk through its platform's API and writes chunks to the repository. The
 * engine's scheduler gives each disk task to one proxy bound to the task's platform, within the proxy's
 * `maxMountedDisks`. drkit ships an in-process proxy; remote proxies implement the same interface.
 */
export interface SyncProxy {
  /** Stable identity, unique in the engine. */
  readonly id: string;
  /** Human-readable name (its host name or IP, as a console lists it). */
  readonly name: string;
  /** Current settings. */
  readonly settings: SyncProxySettings;
  /**
   * Runs one disk task to completion: the recovery point is committed when this resolves.
   *
   * @throws any {@link @drkit/core!DrkitError} of the source or the repository; rejects with `signal.reason` when aborted.
   */
  run(task: DiskTask, options?: RunDiskTaskOptions): Promise<DiskTaskResult>;
}
