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
  /** Bytes the disk task has covered so far, out of {@link @drkit/core!DiskTaskProgress.totalBytes}. */
  readonly bytesDone: number;
}
