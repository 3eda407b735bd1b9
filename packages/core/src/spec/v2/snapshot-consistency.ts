/**
 * What a host snapshot achieved, recorded in every point read from it:
 * - `application`: the guest was quiesced first (VMware Tools, VSS, fsfreeze): applications flushed their data;
 * - `host`: crash consistent across all of the host's disks, at one instant (a VMware snapshot, an EBS
 *   multi-volume snapshot set);
 * - `disk`: each disk crash consistent on its own, the disks snapshotted one after another (RBD images outside a
 *   group, EBS volumes snapshotted one by one);
 * - `none`: no snapshot; the disk was read live, consistent only if it was quiet while read.
 *
 * An open vocabulary for forward compatibility: a point written by a newer drkit may carry a word this one does
 * not know; treat it as no better than `none`.
 */
export type SnapshotConsistency = 'application' | 'host' | 'disk' | 'none' | (string & {});
