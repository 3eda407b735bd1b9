/**
 * A byte range of a disk. Offsets and lengths are in bytes; lengths are positive. Lists of extents that drkit
 * passes around are sorted by offset, disjoint and inside the disk's capacity.
 */
export interface Extent {
  /** First byte of the range. */
  readonly offset: number;
  /** Number of bytes, greater than zero. */
  readonly length: number;
}
