import type { Checkpoint } from './checkpoint.js';
import type { Disk } from './disk.js';
import type { FullReadReason } from './full-read-reason.js';
import type { Host } from './host.js';
import type { HostSnapshot } from './host-snapshot.js';

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
  readonly snapshot?: HostSnapshot;
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
   * parent doubtful). When the reader's validity is `full` for this same reason, they are recorded in the point's
   * `validity.detail`, after the reader's own detail if it gave one.
   */
  readonly fullReadDetail?: string;
  /** The point the new one is incremental to, if any. */
  readonly parentPointId?: string;
  /** Chunk size of the disk's lineage, in bytes. */
  readonly chunkSize: number;
}
