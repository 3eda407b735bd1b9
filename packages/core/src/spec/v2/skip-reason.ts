/**
 * The core set of {@link @drkit/core!SkipReason}s. A provider may use its own word for a case this set does not name;
 * prefix it with the provider's kind (`vmware-…`, `aws-…`).
 */
export const CORE_SKIP_REASONS = [
  /** A VMware independent disk: snapshots do not cover it. */
  'independent-disk',
  /** A physical-mode raw device mapping, or another pass-through device no snapshot covers. */
  'raw-device-mapping',
  /** The disk's backing (an RBD image, an EBS volume) does not exist any more. */
  'backing-missing',
  /** The disk's backing lives where this platform has no access (a Cinder volume on a cluster not configured). */
  'backing-unreachable',
  /** A kind of disk the provider cannot read (an ephemeral instance-store volume, a CD-ROM image). */
  'unsupported-disk',
  /** The user excluded it. */
  'excluded',
] as const;

/**
 * Why a disk of a host is not protected. An open vocabulary: one of {@link CORE_SKIP_REASONS} or a provider's own
 * word (lowercase letters, digits and `-`).
 */
export type SkipReason = (typeof CORE_SKIP_REASONS)[number] | (string & {});
