/** What a platform can do, declared up front so the engine (and tests) need not guess. */
export interface PlatformCapabilities {
  /**
   * `host`: the platform snapshots a host's disks on request ({@link @drkit/core!Platform.createSnapshot}), reporting per
   * snapshot what consistency it achieved; `none`: disks are read live (a local file, an unfrozen device); points
   * record consistency `none`.
   */
  readonly snapshots: 'host' | 'none';
  /** Whether {@link @drkit/core!Platform.createSnapshot} can quiesce the guest (VMware Tools, VSS, fsfreeze). */
  readonly quiesce: boolean;
  /**
   * Whether a snapshot must outlive its backup as the base of the next incremental (RBD, EBS). When false the
   * engine releases each snapshot as soon as the host's disk tasks end (VMware, whose base is a change id).
   */
  readonly retainsSnapshotAsBase: boolean;
  /** Best validity an incremental can have on this platform. */
  readonly changeTracking: 'exact' | 'superset' | 'none';
}
