import type { CallOptions } from './call-options.js';
import type { ChangedBlockReader } from './changed-block-reader.js';
import type { CreateSnapshotOptions } from './create-snapshot-options.js';
import type { Host } from './host.js';
import type { HostSnapshot } from './host-snapshot.js';
import type { PlatformCapabilities } from './platform-capabilities.js';
import type { PlatformStatus } from './platform-status.js';
import type { ReleaseSnapshotOptions } from './release-snapshot-options.js';
import type { SpecificationVersion } from './specification-version.js';

/**
 * A source production platform: a vCenter, an OpenStack cloud, an AWS account, a set of agent hosts, local disks.
 * Providers create it with a factory (`createLocalDiskPlatform(...)`); the engine only uses this interface.
 *
 * The lifecycle of one backup of one host, as the engine drives it (see the provider author's guide):
 * admit → {@link @drkit/core!Platform.createSnapshot} → per disk {@link @drkit/core!ChangedBlockReader.open} → read (stream or
 * list-then-read) → `commit` or `abandon` → `close` → settle the snapshot ({@link @drkit/core!Platform.releaseSnapshot}, or
 * keep it as a base).
 */
export interface Platform {
  /** The specification version this implementation follows. */
  readonly specificationVersion: SpecificationVersion;
  /**
   * Stable identity, unique among the platforms of one engine and chosen by the user (never derived from a
   * connection detail): points are filed under it, so changing it restarts every disk's history.
   */
  readonly id: string;
  /** Kind of source. The core set: `vmware`, `openstack-ceph`, `ceph-rbd`, `aws`, `agent`, `local`; open. */
  readonly kind: string;
  /** What the platform can do. */
  readonly capabilities: PlatformCapabilities;
  /** The reader of changed blocks of this platform's disks. */
  readonly changedBlockReader: ChangedBlockReader;
  /**
   * Connects, authenticates and counts hosts. Never throws for a source problem: it reports `abnormal` with the
   * reason. Throws only when aborted.
   */
  verify(options?: CallOptions): Promise<PlatformStatus>;
  /**
   * Lists the protected hosts with their disks, and the disks it cannot protect ({@link @drkit/core!Host.skippedDisks}).
   *
   * @throws {@link @drkit/core!AuthenticationError}, {@link @drkit/core!UnreachableError}, {@link @drkit/core!PermissionError}
   */
  hosts(options?: CallOptions): AsyncIterable<Host>;
  /**
   * Snapshots every disk of the host (only when `capabilities.snapshots` is `host`), quiesced as asked. Called
   * after the engine recorded the snapshot's name in its ledger. When it fails part way, it removes what it
   * created before it throws.
   *
   * @throws {@link @drkit/core!QuiesceFailedError} when `quiesce` is `required` and the guest could not be
   * quiesced; the source's access errors.
   */
  createSnapshot?(options: CreateSnapshotOptions): Promise<HostSnapshot>;
  /**
   * Deletes a snapshot drkit created, every disk's part of it. Idempotent: a snapshot that is already gone is not
   * an error.
   */
  releaseSnapshot?(options: ReleaseSnapshotOptions): Promise<void>;
}
