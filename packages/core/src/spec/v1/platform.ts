import type { ChangedBlockReader } from './changed-block-reader.js';
import type { Host } from './host.js';
import type { CallOptions } from './options.js';

/** The version of the provider specification a platform implements. */
export type SpecificationVersion = 'v1';

/** Result of {@link Platform.verify}, as a console shows it ("status Normal, N hosts"). */
export type PlatformStatus =
  | { readonly status: 'normal'; readonly hostCount: number; readonly checkedAt: string }
  | {
      readonly status: 'abnormal';
      /** What is wrong and what to do next. */
      readonly reason: string;
      /** Stable code of the underlying error, when there is one. */
      readonly code?: string;
      readonly checkedAt: string;
    };

/** What a platform can do, declared up front so the engine (and tests) need not guess. */
export interface PlatformCapabilities {
  /**
   * `host`: the platform takes one consistent snapshot of all disks of a host ({@link Platform.createSnapshot});
   * `none`: disks are read live (a local file, an unfrozen device); points are only crash-consistent if the
   * disk is quiet while it is read.
   */
  readonly snapshots: 'host' | 'none';
  /**
   * Whether a snapshot must outlive its backup as the base of the next incremental (RBD, EBS). When false the
   * engine releases each snapshot as soon as the host's disk tasks end (VMware, whose base is a change id).
   */
  readonly retainsSnapshotAsBase: boolean;
  /** Best validity an incremental can have on this platform. */
  readonly changeTracking: 'exact' | 'superset' | 'none';
}

/**
 * A reference to a snapshot that drkit created on the source. The `name` is chosen by drkit before the snapshot
 * exists and recorded in the side-effect ledger, so a snapshot can be found and released after a crash even if
 * the create call's answer was lost.
 */
export interface SnapshotRef {
  /** The host the snapshot covers. */
  readonly hostId: string;
  /** The name drkit gave it (`drkit-<timestamp>-<id>`). */
  readonly name: string;
  /** Provider-specific id returned by the source (VMware snapshot moref, EBS snapshot ids). */
  readonly providerId?: string;
}

/** What {@link Platform.createSnapshot} needs. */
export interface CreateSnapshotOptions extends CallOptions {
  /** The host to snapshot, all of its disks together. */
  readonly host: Host;
  /** The name to give the snapshot. */
  readonly name: string;
}

/** What {@link Platform.releaseSnapshot} needs. */
export interface ReleaseSnapshotOptions extends CallOptions {
  readonly hostId: string;
  readonly name: string;
}

/**
 * A source production platform: a vCenter, an OpenStack cloud, an AWS account, a set of agent hosts, local disks.
 * Providers create it with a factory (`createLocalDiskPlatform(...)`); the engine only uses this interface.
 */
export interface Platform {
  /** The specification version this implementation follows. */
  readonly specificationVersion: SpecificationVersion;
  /** Stable identity, unique among the platforms of one engine. */
  readonly id: string;
  /** Kind of source: `vmware`, `openstack-ceph`, `aws`, `agent`, `local`, ... */
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
   * Lists the protected hosts with their disks.
   *
   * @throws {@link @drkit/core!AuthenticationError}, {@link @drkit/core!UnreachableError}, {@link @drkit/core!PermissionError}
   */
  hosts(options?: CallOptions): AsyncIterable<Host>;
  /**
   * Takes one consistent snapshot of every disk of the host (only when `capabilities.snapshots` is `host`).
   * Called after the engine recorded the snapshot's name in its ledger.
   */
  createSnapshot?(options: CreateSnapshotOptions): Promise<SnapshotRef>;
  /** Deletes a snapshot drkit created. Idempotent: a snapshot that is already gone is not an error. */
  releaseSnapshot?(options: ReleaseSnapshotOptions): Promise<void>;
}
