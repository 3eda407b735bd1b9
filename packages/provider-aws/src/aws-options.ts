import { InvalidSettingsError, MAX_CONCURRENT_READS } from '@drkit/core';
import { type AwsRateLimits, type ResolvedAwsRateLimits, resolveAwsRateLimits } from './aws-rate-limiter.js';

/** An AWS key pair. */
export interface AwsCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  /** For temporary credentials (STS). */
  readonly sessionToken?: string;
  /** When temporary credentials expire; a provider function is asked again before. */
  readonly expiration?: Date;
}

/** A function that returns credentials (and is asked again when they expire): the embedder's own source. */
export type AwsCredentialsProvider = () => Promise<AwsCredentials>;

/** Endpoint overrides, e.g. a VPC interface endpoint, or a test emulator. */
export interface AwsEndpoints {
  /** EC2 (`https://ec2.<region>.amazonaws.com` by default). */
  readonly ec2?: string;
  /** EBS direct APIs (`https://ebs.<region>.amazonaws.com` by default). */
  readonly ebs?: string;
  /** STS (`https://sts.<region>.amazonaws.com` by default). */
  readonly sts?: string;
}

/** Options of {@link createAwsPlatform}. */
export interface AwsPlatformOptions {
  /** Stable identity chosen by the user (points are filed under it). Required. */
  readonly id: string;
  /** The console's "Access Key ID" and "Access Key Secret", or a function returning them. Never read from the environment. */
  readonly credentials: AwsCredentials | AwsCredentialsProvider;
  /** The region of the protected instances (`ap-southeast-1`); {@link listAwsRegions} lists the choices. */
  readonly region: string;
  /** The console's "Name". Default `AWS <region> <timestamp>` (the product page's default). */
  readonly name?: string;
  readonly endpoints?: AwsEndpoints;
  /** GetSnapshotBlock requests in flight per disk (1–64). Default 32. */
  readonly maxConcurrentReads?: number;
  /** `MaxResults` of ListSnapshotBlocks / ListChangedBlocks pages (100–10000). Default 10000. */
  readonly listPageSize?: number;
  /** `MaxResults` of DescribeInstances pages (5–1000). Default 1000. */
  readonly inventoryPageSize?: number;
  /**
   * How long to wait for a new snapshot to complete, and how often to look. Defaults: 6 hours, first look after
   * 5 s, then backing off to 30 s. A snapshot that does not complete in time is deleted.
   */
  readonly snapshotWait?: {
    readonly timeoutMs?: number;
    readonly minDelayMs?: number;
    readonly maxDelayMs?: number;
  };
  /** How long one EBS request may go unanswered when the engine gives no timeout, in seconds. Default 120. */
  readonly requestTimeoutSeconds?: number;
  /** Attempts of the EC2 and STS SDK clients (their own retries; the EBS client's are off). Default 3. */
  readonly controlPlaneMaxAttempts?: number;
  /**
   * The request rates of the EBS direct APIs the platform keeps to (every session of the platform shares them),
   * and the clock it waits by. Default the documented quotas: 1000 GetSnapshotBlock/s per snapshot and per
   * account, 50 list calls/s.
   */
  readonly rateLimits?: AwsRateLimits;
  /** The clock of the default name. Default `() => new Date()`. */
  readonly now?: () => Date;
}

/** Options after validation. @internal */
export interface ResolvedAwsOptions {
  readonly id: string;
  readonly name: string;
  readonly region: string;
  readonly credentials: AwsCredentials | AwsCredentialsProvider;
  readonly endpoints: AwsEndpoints;
  readonly maxConcurrentReads: number;
  readonly listPageSize: number;
  readonly inventoryPageSize: number;
  readonly snapshotWait: {
    readonly timeoutMs: number;
    readonly minDelayMs: number;
    readonly maxDelayMs: number;
  };
  readonly requestTimeoutSeconds: number;
  readonly controlPlaneMaxAttempts: number;
  readonly rateLimits: ResolvedAwsRateLimits;
}

const REGION = /^[a-z]{2}(-[a-z]+)+-\d+$/;

function integer(value: unknown, field: string, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new InvalidSettingsError(field, `must be an integer from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

function positive(value: unknown, field: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new InvalidSettingsError(field, `must be a number above 0, got ${String(value)}`);
  }
  return value;
}

function url(value: unknown, field: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw new InvalidSettingsError(field, 'must be a URL');
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    throw new InvalidSettingsError(field, `${JSON.stringify(value)} is not a URL`);
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') {
    throw new InvalidSettingsError(field, 'must be an http(s) URL');
  }
  return value;
}

/**
 * Validates the options at the boundary.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming the field. Secrets are never part of a message.
 * @internal
 */
export function resolveAwsOptions(options: AwsPlatformOptions): ResolvedAwsOptions {
  if (typeof options !== 'object' || options === null)
    throw new InvalidSettingsError('options', 'must be an object');
  if (typeof options.id !== 'string' || options.id.trim() === '') {
    throw new InvalidSettingsError(
      'id',
      'is required: a stable identity of this platform chosen by the user',
    );
  }
  if (typeof options.region !== 'string' || !REGION.test(options.region)) {
    throw new InvalidSettingsError(
      'region',
      `must be an AWS region name such as ap-southeast-1, got ${JSON.stringify(options.region)}`,
    );
  }
  const credentials = options.credentials;
  if (typeof credentials !== 'function') {
    if (typeof credentials !== 'object' || credentials === null) {
      throw new InvalidSettingsError(
        'credentials',
        'is required: an access key id and secret, or a function returning them',
      );
    }
    if (typeof credentials.accessKeyId !== 'string' || !/^[A-Z0-9]{16,128}$/.test(credentials.accessKeyId)) {
      throw new InvalidSettingsError(
        'credentials.accessKeyId',
        'must be an AWS access key id (AKIA..., ASIA...)',
      );
    }
    if (typeof credentials.secretAccessKey !== 'string' || credentials.secretAccessKey === '') {
      throw new InvalidSettingsError('credentials.secretAccessKey', 'is required');
    }
    if (credentials.sessionToken !== undefined && typeof credentials.sessionToken !== 'string') {
      throw new InvalidSettingsError('credentials.sessionToken', 'must be a string');
    }
  }
  if (options.name !== undefined && (typeof options.name !== 'string' || options.name.trim() === '')) {
    throw new InvalidSettingsError('name', 'must be a non-empty string');
  }
  const now = options.now ?? (() => new Date());
  const wait = options.snapshotWait ?? {};
  const minDelayMs = positive(wait.minDelayMs, 'snapshotWait.minDelayMs', 5000);
  const maxDelayMs = positive(wait.maxDelayMs, 'snapshotWait.maxDelayMs', Math.max(30_000, minDelayMs));
  if (maxDelayMs < minDelayMs)
    throw new InvalidSettingsError('snapshotWait.maxDelayMs', 'must not be below minDelayMs');
  return {
    id: options.id,
    name:
      options.name ??
      `AWS ${options.region} ${now()
        .toISOString()
        .replace(/\.\d+Z$/, 'Z')}`,
    region: options.region,
    credentials,
    endpoints: {
      ec2: url(options.endpoints?.ec2, 'endpoints.ec2'),
      ebs: url(options.endpoints?.ebs, 'endpoints.ebs'),
      sts: url(options.endpoints?.sts, 'endpoints.sts'),
    },
    maxConcurrentReads: integer(
      options.maxConcurrentReads,
      'maxConcurrentReads',
      1,
      MAX_CONCURRENT_READS,
      32,
    ),
    listPageSize: integer(options.listPageSize, 'listPageSize', 100, 10_000, 10_000),
    inventoryPageSize: integer(options.inventoryPageSize, 'inventoryPageSize', 5, 1000, 1000),
    snapshotWait: {
      timeoutMs: positive(wait.timeoutMs, 'snapshotWait.timeoutMs', 6 * 3600 * 1000),
      minDelayMs,
      maxDelayMs,
    },
    requestTimeoutSeconds: positive(options.requestTimeoutSeconds, 'requestTimeoutSeconds', 120),
    controlPlaneMaxAttempts: integer(options.controlPlaneMaxAttempts, 'controlPlaneMaxAttempts', 1, 10, 3),
    rateLimits: resolveAwsRateLimits(options.rateLimits),
  };
}
