/**
 * What a provider needs to compute the next incremental of one disk: a VMware `changeId`, the name of the RBD
 * snapshot kept as a base, an EBS snapshot id. drkit stores it in the recovery point and hands it back as the
 * `base` of the next backup of the same disk; only the provider interprets {@link @drkit/core!Checkpoint.token}.
 */
export interface Checkpoint {
  /** The disk this checkpoint belongs to. */
  readonly diskId: string;
  /** Provider-specific, opaque to drkit. Never a secret. */
  readonly token: string;
  /** Capacity of the disk when the checkpoint was taken, in bytes. */
  readonly capacityBytes: number;
  /** When the checkpoint was taken (ISO 8601). */
  readonly createdAt: string;
  /**
   * The name of the drkit snapshot on the source this checkpoint depends on, when the platform keeps a snapshot
   * as the base of the next incremental (an RBD or EBS snapshot). The engine keeps that snapshot until no
   * newest point of the host needs it, then releases it.
   */
  readonly snapshotName?: string;
}
