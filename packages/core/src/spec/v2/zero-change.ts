/** A range that now reads as zeros (discarded, trimmed, a hole of a sparse file, an unallocated block). */
export interface ZeroChange {
  readonly kind: 'zero';
  /** First byte of the range on the disk. */
  readonly offset: number;
  /** Number of zero bytes. */
  readonly length: number;
}
