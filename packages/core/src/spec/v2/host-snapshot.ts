import type { DiskSnapshot } from './disk-snapshot.js';
import type { SnapshotConsistency } from './snapshot-consistency.js';

/**
 * A snapshot drkit created of one host: one reference per disk, and what it achieved. The `name` is chosen by
 * drkit before the snapshot exists and recorded in the side-effect ledger, so a snapshot can be found and
 * released after a crash even if the create call's answer was lost.
 */
export interface HostSnapshot {
  /** The host the snapshot covers. */
  readonly hostId: string;
  /** The name drkit gave it (`drkit-<timestamp>-<id>`). */
  readonly name: string;
  /** Provider-specific id of the snapshot as a whole, when it has one (a VMware snapshot moref). */
  readonly providerId?: string;
  /**
   * One entry per disk of the host that {@link @drkit/core!CreateSnapshotOptions.host} lists. A snapshot without an entry for
   * one of them breaks the contract: every task of the host fails with a `SourceProtocolError` and the snapshot is
   * released.
   */
  readonly disks: readonly DiskSnapshot[];
  /**
   * What the snapshot achieved. `application` only when the guest was actually quiesced. A word of the shape of
   * the open vocabularies (lowercase letters, digits, `-`); another fails the host with a `SourceProtocolError`.
   */
  readonly consistency: SnapshotConsistency;
  /** Words about the consistency, e.g. why quiescing failed and a crash-consistent snapshot was taken instead. */
  readonly detail?: string;
}
