/** The part of a host snapshot that covers one disk. */
export interface DiskSnapshot {
  /** The disk ({@link @drkit/core!Disk.id}). */
  readonly diskId: string;
  /**
   * The source's reference to this disk's snapshot: an EBS snapshot id, an RBD `pool/image@snapshot`, a VMware
   * snapshot moref plus the disk key. Opaque to the engine, handed to the reader. Never a secret.
   */
  readonly ref: string;
}
