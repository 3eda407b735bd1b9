import type { EmulatorState } from './emulator-state.js';
import type { RateBucket } from './rate-bucket.js';
import type { EmulatorCredential } from './sigv4-verifier.js';

/** A user of the emulated account: a key pair and the IAM actions it may call. */
export interface AwsEmulatorUser extends EmulatorCredential {
  /** The IAM user name, in ARNs (default `drkit`). */
  readonly userName?: string;
  /**
   * The IAM actions allowed, as in a policy's `Action`: `ec2:DescribeInstances`, `ec2:Describe*`, `ebs:*`, `*`.
   * Default `['*']`. Everything else is denied (`UnauthorizedOperation`, `AccessDeniedException`).
   */
  readonly allow?: readonly string[];
}

/** The operations the emulator answers. */
export type AwsEmulatorOperation =
  | 'DescribeInstances'
  | 'DescribeVolumes'
  | 'DescribeInstanceTypes'
  | 'CreateSnapshots'
  | 'DescribeSnapshots'
  | 'DeleteSnapshot'
  | 'DescribeRegions'
  | 'GetCallerIdentity'
  | 'ListSnapshotBlocks'
  | 'ListChangedBlocks'
  | 'GetSnapshotBlock'
  | 'StartSnapshot'
  | 'PutSnapshotBlock'
  | 'CompleteSnapshot';

/**
 * A fault the next matching request gets instead of (or on top of) its answer:
 * - `internal-error`: HTTP 500 (`InternalServerException`, EC2 `InternalError`);
 * - `throttle`: the operation's throttling error (EBS `ThrottlingException`, EC2 `RequestLimitExceeded`);
 * - `checksum-mismatch` (GetSnapshotBlock): the block's bytes with one byte flipped, under the true checksum;
 * - `truncated-body` (GetSnapshotBlock): half of the body, then the connection is cut.
 */
export interface AwsEmulatorFault {
  readonly operation: AwsEmulatorOperation;
  readonly kind: 'internal-error' | 'throttle' | 'checksum-mismatch' | 'truncated-body';
  /** How many matching requests get it. Default 1. */
  readonly times?: number;
  /** Only requests for this snapshot. */
  readonly snapshotId?: string;
  /** Only GetSnapshotBlock / PutSnapshotBlock of this block index. */
  readonly blockIndex?: number;
}

/** Request rates per second (the documented default quotas unless overridden). */
export interface AwsEmulatorQuotas {
  /** GetSnapshotBlock per account (L-C125AE42): 1000. */
  readonly getSnapshotBlockPerAccount: number;
  /** GetSnapshotBlock per snapshot (L-028ACFB9): 1000. */
  readonly getSnapshotBlockPerSnapshot: number;
  /** ListSnapshotBlocks per account (L-18E976AB): 50. */
  readonly listSnapshotBlocksPerAccount: number;
  /** ListChangedBlocks per account (L-DB2FBAA1): 50. */
  readonly listChangedBlocksPerAccount: number;
  /** PutSnapshotBlock per account / per snapshot (L-AFAE1BE8 / L-1774F84A): 1000 / 1000. */
  readonly putSnapshotBlockPerAccount: number;
  readonly putSnapshotBlockPerSnapshot: number;
  /** StartSnapshot / CompleteSnapshot per account (L-AFEBDF7A / L-1D4D9345): 10 / 10. */
  readonly startSnapshotPerAccount: number;
  readonly completeSnapshotPerAccount: number;
  /** Pending direct-API snapshots per account (L-94D7AB7D): 100. */
  readonly pendingDirectSnapshots: number;
}

/** The documented default quotas. */
export const DEFAULT_EBS_QUOTAS: AwsEmulatorQuotas = {
  getSnapshotBlockPerAccount: 1000,
  getSnapshotBlockPerSnapshot: 1000,
  listSnapshotBlocksPerAccount: 50,
  listChangedBlocksPerAccount: 50,
  putSnapshotBlockPerAccount: 1000,
  putSnapshotBlockPerSnapshot: 1000,
  startSnapshotPerAccount: 10,
  completeSnapshotPerAccount: 10,
  pendingDirectSnapshots: 100,
};

/** Local instance storage of an instance type (DescribeInstanceTypes). */
export interface AwsEmulatorInstanceType {
  readonly disks?: readonly {
    readonly sizeInGB: number;
    readonly count: number;
    readonly type: 'ssd' | 'hdd';
  }[];
}

/** The emulator's settings once defaults are applied. @internal */
export interface ResolvedEmulatorConfig {
  readonly region: string;
  readonly accountId: string;
  readonly quotas: AwsEmulatorQuotas | undefined;
  readonly completionPolls: number;
  readonly pageShape: { readonly shortPages: boolean; readonly emptyPageEvery: number | undefined };
  readonly regions: readonly { readonly name: string; readonly optInStatus: string }[];
  readonly instanceTypes: ReadonlyMap<string, AwsEmulatorInstanceType>;
  /** The account's EBS encryption by default: the KMS key new snapshots are encrypted with, or undefined. */
  readonly encryptionByDefaultKey: string | undefined;
  /** The key of `Encrypted: true` without a `KmsKeyArn` (the account's `aws/ebs` key). */
  readonly defaultKmsKey: string;
}

/** Counters a test can assert on. */
export interface AwsEmulatorStats {
  /** Requests per operation (every answer, also errors). */
  readonly calls: Readonly<Record<string, number>>;
  /** Throttling errors per operation. */
  readonly throttled: Readonly<Record<string, number>>;
  /** Successful GetSnapshotBlock answers. */
  readonly blocksServed: number;
  /** Most GetSnapshotBlock requests being answered at one time. */
  readonly peakConcurrentBlockReads: number;
  /** GetSnapshotBlock bodies not yet written out (a lower bound of bodies a client holds unread). */
  readonly openBodies: number;
}

/** Mutable counters behind {@link AwsEmulatorStats}. @internal */
export interface MutableStats {
  calls: Record<string, number>;
  throttled: Record<string, number>;
  blocksServed: number;
  concurrentBlockReads: number;
  peakConcurrentBlockReads: number;
  openBodies: number;
  /** GetSnapshotBlock answers by snapshot id and block index. */
  readonly blockReads: Map<string, Map<number, number>>;
}

/** An error answer of any service. @internal */
export class EmulatorError extends Error {
  readonly status: number;
  readonly code: string;
  readonly reason: string | undefined;
  constructor(status: number, code: string, message: string, reason?: string) {
    super(message);
    this.status = status;
    this.code = code;
    this.reason = reason;
  }
}

/** What a handler answers. @internal */
export interface HandlerResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer | string;
  /** Cut the connection after half of the body. */
  readonly truncate?: boolean;
  /** Runs when the body was written out or the connection closed. */
  readonly onClose?: () => void;
}

/** What every handler gets. @internal */
export interface HandlerContext {
  readonly state: EmulatorState;
  readonly config: ResolvedEmulatorConfig;
  readonly user: Required<Pick<AwsEmulatorUser, 'accessKeyId' | 'userName'>> & AwsEmulatorUser;
  readonly stats: MutableStats;
  readonly requestId: string;
  /** Whether the user's policy allows the IAM action. */
  isAllowed(action: string): boolean;
  /** Takes the next fault matching the request, if any. */
  takeFault(
    operation: AwsEmulatorOperation,
    where?: { snapshotId?: string; blockIndex?: number },
  ): AwsEmulatorFault | undefined;
  /** The account's (and a snapshot's) rate bucket of an operation. */
  bucket(name: string): RateBucket | undefined;
}
