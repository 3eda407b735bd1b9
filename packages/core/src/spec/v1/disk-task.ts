import type { ChangeSetValidity } from './change-set.js';

/** Byte counters of one disk task. */
export interface DiskTaskCounters {
  /** Bytes read from the source (data changes, plus reads that complete partial chunks). */
  readonly bytesRead: number;
  /** Bytes written to the repository after compression. */
  readonly bytesWritten: number;
  /** Bytes of chunks the source reported but whose hash equals the parent point's chunk: not stored again. */
  readonly bytesSkippedUnchanged: number;
  /** Bytes of chunks the repository already held from another point or disk. */
  readonly bytesDeduplicated: number;
  /** Bytes of all-zero chunks, stored as a marker. */
  readonly bytesZero: number;
  /** Bytes the disk task has covered so far, out of {@link DiskTaskProgress.totalBytes}. */
  readonly bytesDone: number;
}

/** State of a disk task, as progress events report it. */
export type DiskTaskState = 'waiting' | 'snapshotting' | 'reading' | 'committing' | 'done' | 'failed';

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

/** The result of one disk task that committed a recovery point. */
export interface DiskTaskResult extends DiskTaskCounters {
  readonly taskId: string;
  /** The new recovery point. */
  readonly pointId: string;
  /** The change-set validity recorded in the point. */
  readonly validity: ChangeSetValidity;
  /** Capacity of the disk at the snapshot. */
  readonly capacityBytes: number;
  /** Number of chunks in the point's index. */
  readonly chunkCount: number;
  /** Wall-clock seconds. */
  readonly seconds: number;
}
