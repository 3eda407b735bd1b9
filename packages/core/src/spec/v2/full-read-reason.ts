/**
 * The core set of {@link @drkit/core!FullReadReason}s: words every drkit knows. A provider may use its own word for a case
 * this set does not name (`vmware-change-tracking-enabled`, `aws-unrelated-snapshots`); prefix it with the
 * provider's kind so it cannot collide with a future core word.
 */
export const CORE_FULL_READ_REASONS = [
  /** No earlier point of this disk exists. */
  'first-backup',
  /** The caller asked for a full backup. */
  'requested',
  /** Change tracking is off on the source (e.g. CBT disabled on the VM). */
  'tracking-disabled',
  /** The source reset its change tracking since the base (e.g. a CBT reset, a new change id epoch). */
  'tracking-reset',
  /** The snapshot the base checkpoint names no longer exists on the source. */
  'base-snapshot-missing',
  /** The base checkpoint is not one this reader wrote or can parse (garbled, foreign, from another provider). */
  'checkpoint-invalid',
  /** The disk was recreated: same name, different identity. */
  'disk-recreated',
  /** The disk changed size and the source cannot diff across the resize. */
  'disk-resized',
  /** The source's fast diff cannot be trusted right now (e.g. an RBD object map flagged invalid). */
  'tracking-unreliable',
  /** The parent point references a chunk that failed verification; every chunk is read again. */
  'parent-point-damaged',
] as const;

/**
 * Why a reader returns the whole disk rather than the changes since a base checkpoint. The engine records the
 * reason in the recovery point, so a full read is never silent.
 *
 * An open vocabulary: one of {@link CORE_FULL_READ_REASONS}, or a provider's own word (lowercase letters,
 * digits and `-`, at most 64 characters, checked when the session opens). A point that records a word a drkit of
 * specification v2 or later does not know is still readable by it.
 */
export type FullReadReason = (typeof CORE_FULL_READ_REASONS)[number] | (string & {});
