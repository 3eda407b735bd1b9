/**
 * One range an {@link @drkit/core!ExtentReadSession} lists: its content changed since the base (`data`: read it with
 * {@link @drkit/core!ExtentReadSession.read}) or it now reads as zeros (`zero`: nothing to read).
 */
export interface ChangedExtent {
  readonly kind: 'data' | 'zero';
  /** First byte of the range on the disk; a multiple of the session's `blockSize`. */
  readonly offset: number;
  /** Number of bytes, greater than zero; a multiple of `blockSize` unless the range ends at the capacity. */
  readonly length: number;
  /**
   * What the reader needs to read this range again, opaque to the engine and handed back with every read of it
   * (an EBS block token). Never a secret; not persisted.
   */
  readonly token?: string;
}
