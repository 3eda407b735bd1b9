/** A range whose new content is the bytes in `data`. */
export interface DataChange {
  readonly kind: 'data';
  /** First byte of the range on the disk. */
  readonly offset: number;
  /** The new content; its length is the length of the range. */
  readonly data: Uint8Array;
}
