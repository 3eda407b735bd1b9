import {
  AuthenticationError,
  DrkitError,
  NotFoundError,
  PermissionError,
  RepositoryLockedError,
  ThrottledError,
  UnreachableError,
} from '@drkit/core';

/**
 * A create-only write was retried after its reply was lost, and the key then held different bytes: another writer
 * created it in between, so this write did not happen. A `RepositoryLockedError` of `@drkit/core` (code `REPOSITORY_LOCKED`),
 * not retryable: the caller decides (a new key, or giving up).
 */
export class CreateOnlyConflictError extends RepositoryLockedError {
  /** The store key (without the store's prefix). */
  readonly key: string;
  constructor(message: string, key: string) {
    super(message, { retryable: false });
    this.key = key;
  }
}

/** What an AWS SDK error looks like to us: a name, a message, the HTTP status and headers when there was a reply. */
interface SdkErrorShape {
  readonly name?: string;
  readonly code?: string;
  readonly message?: string;
  readonly Code?: string;
  readonly $metadata?: { readonly httpStatusCode?: number };
  readonly $response?: { readonly headers?: Record<string, string | undefined> };
  readonly $retryable?: unknown;
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'EPIPE',
  'EAI_AGAIN',
  'ECONNABORTED',
  'UND_ERR_SOCKET',
]);

/** Replaces every occurrence of each secret in `text` with `[redacted]`. */
export function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) if (secret.length >= 4) out = out.split(secret).join('[redacted]');
  return out;
}

/** The HTTP status of an SDK error, when the peer answered. */
export function httpStatus(error: unknown): number | undefined {
  return (error as SdkErrorShape | undefined)?.$metadata?.httpStatusCode;
}

/** The S3 error code (`NoSuchKey`, `SlowDown`, …) of an SDK error. */
export function s3Code(error: unknown): string | undefined {
  const shape = error as SdkErrorShape | undefined;
  return shape?.Code ?? shape?.name;
}

function retryAfterMs(error: unknown): number | undefined {
  const value = (error as SdkErrorShape | undefined)?.$response?.headers?.['retry-after'];
  if (value === undefined) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return Math.round(seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

function networkCode(error: unknown): string | undefined {
  for (let current: unknown = error, depth = 0; current !== undefined && depth < 5; depth++) {
    const code = (current as SdkErrorShape | undefined)?.code;
    if (typeof code === 'string' && NETWORK_CODES.has(code)) return code;
    current = (current as { cause?: unknown } | undefined)?.cause;
  }
  const name = (error as SdkErrorShape | undefined)?.name;
  if (name === 'TimeoutError' || name === 'RequestTimeout') return name;
  return undefined;
}

/** What {@link mapS3Error} needs to know to word its message. */
export interface S3ErrorContext {
  /** The operation (`PutObject`), for the message. */
  readonly operation: string;
  /** The bucket. */
  readonly bucket: string;
  /** The store key, when the call had one. */
  readonly key?: string;
  /** The endpoint, for unreachable errors. */
  readonly endpoint: string;
  /** Strings never to show (the secret key, the session token). */
  readonly secrets: readonly string[];
}

/**
 * Turns an AWS SDK error into a core typed error with a message that names the operation, bucket and key and never
 * contains a secret. The original error is not kept as `cause` (it carries request details): a plain `Error` with
 * its code, status and redacted message is.
 */
export function mapS3Error(error: unknown, context: S3ErrorContext): DrkitError {
  if (DrkitError.isInstance(error)) return error;
  const status = httpStatus(error);
  const code = s3Code(error) ?? 'Error';
  const detail = redact((error as SdkErrorShape | undefined)?.message ?? String(error), context.secrets);
  const where = `s3://${context.bucket}${context.key === undefined ? '' : `/${context.key}`}`;
  const cause = new Error(`${code}${status === undefined ? '' : ` (HTTP ${status})`}: ${detail}`);
  const say = (text: string): string => redact(`${context.operation} ${where}: ${text}`, context.secrets);
  if (code === 'SignatureDoesNotMatch' || code === 'InvalidAccessKeyId' || code === 'ExpiredToken') {
    return new AuthenticationError(
      say(`the credentials were refused (${code}): check the access and secret key`),
      {
        cause,
      },
    );
  }
  if (code === 'NoSuchBucket') {
    return new NotFoundError(say(`bucket "${context.bucket}" does not exist`), { cause });
  }
  if (code === 'NoSuchKey' || (status === 404 && context.key !== undefined)) {
    return new NotFoundError(say('no such blob'), { cause });
  }
  if (code === 'AccessDenied' || status === 403) {
    return new PermissionError(say(`access denied (${code}): ${detail}`), { cause });
  }
  if (
    code === 'SlowDown' ||
    code === 'Throttling' ||
    code === 'ServiceUnavailable' ||
    status === 503 ||
    status === 429
  ) {
    return new ThrottledError(
      say(`the store asked to slow down (${code}${status ? `, HTTP ${status}` : ''})`),
      {
        cause,
        retryAfterMs: retryAfterMs(error),
      },
    );
  }
  const network = networkCode(error);
  if (network !== undefined) {
    return new UnreachableError(say(`${context.endpoint} could not be reached (${network})`), { cause });
  }
  if (status !== undefined && status >= 500) {
    return new UnreachableError(say(`the store failed (${code}, HTTP ${status}): ${detail}`), { cause });
  }
  return new DrkitError('SOURCE_PROTOCOL', say(`${code}${status ? ` (HTTP ${status})` : ''}: ${detail}`), {
    cause,
  });
}
