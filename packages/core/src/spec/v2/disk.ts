/** One virtual or physical disk of a host, as the platform's inventory reports it. */
export interface Disk {
  /** Stable identity of the disk on its platform (a VMware disk key + VM uuid, a Cinder volume id, a device path). */
  readonly id: string;
  /** The host the disk belongs to. */
  readonly hostId: string;
  /** Human-readable name (`Hard disk 1`, `vda`, `/dev/sdb`). */
  readonly name: string;
  /** Current size in bytes. */
  readonly capacityBytes: number;
  /** Provider-specific facts worth showing a user (datastore, pool, volume type). Never secrets. */
  readonly attributes?: Readonly<Record<string, string>>;
}
