import type { ChangeSetValidity } from '../spec/v1/change-set.js';
import type { Checkpoint } from '../spec/v1/checkpoint.js';

/** Hex SHA-256 of a chunk's plain data (64 lowercase hex digits). */
export type ChunkId = string;

/** The identity of a disk lineage: all points of one disk of one host of one platform. */
export interface DiskLineage {
  readonly platformId: string;
  readonly hostId: string;
  readonly diskId: string;
}

/** Counters stored with a point. */
export interface PointStats {
  readonly bytesRead: number;
  readonly bytesWritten: number;
  readonly bytesSkippedUnchanged: number;
  readonly bytesDeduplicated: number;
  readonly bytesZero: number;
  /** Chunks written by this point's backup. */
  readonly chunksWritten: number;
  readonly seconds: number;
}

/** A committed recovery point: one disk at one point in time, restorable on its own. */
export interface RecoveryPoint extends DiskLineage {
  /** Unique, sortable by creation time. */
  readonly id: string;
  readonly hostName: string;
  readonly diskName: string;
  /** When the source snapshot was taken (ISO 8601). */
  readonly createdAt: string;
  /** Disk size at the snapshot, in bytes. */
  readonly capacityBytes: number;
  /** Chunk size of the lineage, in bytes. */
  readonly chunkSize: number;
  /** Number of chunks (`ceil(capacityBytes / chunkSize)`). */
  readonly chunkCount: number;
  /** The point this one was built on (its unchanged chunks are the parent's), if any. */
  readonly parentId?: string;
  /** How far the change set that built this point could be trusted. */
  readonly validity: ChangeSetValidity;
  /** The source checkpoint the next incremental starts from. */
  readonly checkpoint?: Checkpoint;
  /** Hex SHA-256 of the binary index blob. */
  readonly indexDigest: string;
  readonly stats: PointStats;
}
