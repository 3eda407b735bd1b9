/**
 * Why a reader returns the whole disk rather than the changes since a base checkpoint. The engine records the
 * reason in the recovery point, so a full read is never silent.
 */
export type FullReadReason =
  /** No earlier point of this disk exists. */
  | 'first-backup'
  /** The caller asked for a full backup. */
  | 'requested'
  /** Change tracking is off on the source (e.g. CBT disabled on the VM). */
  | 'tracking-disabled'
  /** The source reset its change tracking since the base (e.g. a CBT reset, a new change id epoch). */
  | 'tracking-reset'
  /** The snapshot the base checkpoint names no longer exists on the source. */
  | 'base-snapshot-missing'
  /** The disk was recreated: same name, different identity. */
  | 'disk-recreated'
  /** The disk changed size and the source cannot diff across the resize. */
  | 'disk-resized'
  /** A fast diff depends on an object map that the source reports invalid. */
  | 'object-map-invalid'
  /** The parent point references a chunk that failed verification; every chunk is read again. */
  | 'parent-point-damaged';

/**
 * How far a change set can be trusted, per disk:
 * - `exact`: exactly the bytes that changed since the base (e.g. `rbd export-diff --from-snap`);
 * - `superset`: everything that changed and possibly more (a coarse object-granular diff, or every allocated
 *   extent of a disk without change tracking); the engine compares chunk hashes with the parent point;
 * - `full`: the whole disk, for the typed {@link @drkit/core!FullReadReason}.
 *
 * `detail` says more in words, e.g. why a fast diff fell back to an exact one.
 */
export type ChangeSetValidity =
  | { readonly kind: 'exact'; readonly detail?: string }
  | { readonly kind: 'superset'; readonly detail?: string }
  | { readonly kind: 'full'; readonly reason: FullReadReason; readonly detail?: string };

/** A range whose new content is the bytes in `data`. */
export interface DataChange {
  readonly kind: 'data';
  /** First byte of the range on the disk. */
  readonly offset: number;
  /** The new content; its length is the length of the range. */
  readonly data: Uint8Array;
}

/** A range that now reads as zeros (discarded, trimmed, a hole of a sparse file). */
export interface ZeroChange {
  readonly kind: 'zero';
  /** First byte of the range on the disk. */
  readonly offset: number;
  /** Number of zero bytes. */
  readonly length: number;
}

/**
 * One element of a change set. The disk at the snapshot is the base (the parent point's content, or all zeros
 * for a full read) overlaid with every change. Changes come sorted by offset, disjoint and within capacity.
 */
export type Change = DataChange | ZeroChange;
