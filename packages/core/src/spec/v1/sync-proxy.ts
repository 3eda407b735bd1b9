import type { FullReadReason } from './change-set.js';
import type { Checkpoint } from './checkpoint.js';
import type { Disk } from './disk.js';
import type { DiskTaskProgress, DiskTaskResult } from './disk-task.js';
import type { Host } from './host.js';
import type { CallOptions } from './options.js';
import type { SnapshotRef } from './platform.js';

/** Settings of one Sync Proxy, as the product page defines them. */
export interface SyncProxySettings {
  /**
   * The product page's "HTTP Communication Timeout" of the proxy, in seconds (1–86400, default 600). It is
   * validated, stored and shown ({@link SyncProxyInfo}), but **today it bounds nothing**: a proxy runs platform
   * instances that were created before it, each with its own timeout options (the OpenStack + Ceph platform's
   * `httpTimeoutSeconds` for Keystone, Nova and Cinder, its `ceph[].timeoutSeconds` for `rbd`), and the
   * specification gives a proxy no way to hand a timeout to them. Set those options on the platform. What bounds
   * a hung disk task is the stall watchdog: the engine's `stallTimeoutSeconds` (default 600).
   */
  readonly httpTimeoutSeconds: number;
  /** How many disks the proxy reads (mounts) at once. Default 50, at most 150. */
  readonly maxMountedDisks: number;
}

/** One disk of one backup job, as the scheduler hands it to a proxy. Serializable. */
export interface DiskTask {
  /** Unique id of this task. */
  readonly id: string;
  /** The job this task belongs to. */
  readonly jobId: string;
  readonly platformId: string;
  readonly host: Host;
  readonly disk: Disk;
  /** The host snapshot taken for this job, when the platform takes snapshots. */
  readonly snapshot?: SnapshotRef;
  /**
   * When the data is from (ISO 8601): the engine's time just before it asked the platform for `snapshot`. Recorded
   * as the point's `snapshotAt`; without it (a platform without snapshots) the proxy records the time it opens
   * the disk's read session.
   */
  readonly snapshotAt?: string;
  /** The checkpoint of the parent point; absent for a full read. */
  readonly base?: Checkpoint;
  /** Why there is no base, when there is none. */
  readonly fullReason?: FullReadReason;
  /**
   * Words about `fullReason` the engine knows and a reader does not (e.g. which unreadable points made the
   * parent doubtful); recorded as the point's `validity.detail` when the reader gives none.
   */
  readonly fullReadDetail?: string;
  /** The point the new one is incremental to, if any. */
  readonly parentPointId?: string;
  /** Chunk size of the disk's lineage, in bytes. */
  readonly chunkSize: number;
}

/** Options of {@link SyncProxy.run}. */
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
