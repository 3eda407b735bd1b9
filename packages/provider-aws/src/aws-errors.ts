import {
  AuthenticationError,
  DrkitError,
  NotFoundError,
  PermissionError,
  SourceProtocolError,
  ThrottledError,
  UnreachableError,
} from '@drkit/core';

const AUTHENTICATION = new Set([
  'AuthFailure',
  'InvalidClientTokenId',
  'SignatureDoesNotMatch',
  'UnrecognizedClientException',
  'InvalidSignatureException',
  'IncompleteSignature',
  'IncompleteSignatureException',
  'MissingAuthenticationToken',
  'MissingAuthenticationTokenException',
  'ExpiredToken',
  'ExpiredTokenException',
  'InvalidAccessKeyId',
  'RequestExpired',
  'CredentialsProviderError',
]);
const PERMISSION = new Set([
  'UnauthorizedOperation',
  'AccessDenied',
  'AccessDeniedException',
  'OptInRequired',
]);
const THROTTLING = new Set([
  'ThrottlingException',
  'RequestThrottledException',
  'RequestLimitExceeded',
  'Throttling',
  'TooManyRequestsException',
]);
const NOT_FOUND = new Set([
  'ResourceNotFoundException',
  'InvalidSnapshot.NotFound',
  'InvalidInstanceID.NotFound',
  'InvalidVolume.NotFound',
]);
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'ECONNABORTED',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

/** What an AWS SDK error says about itself (a service exception or a transport error). */
export interface AwsErrorFacts {
  readonly name: string;
  readonly message: string;
  readonly status: number | undefined;
  readonly reason: string | undefined;
  readonly code: string | undefined;
}

/** The facts of any thrown value, without keeping the SDK's objects (they hold the raw response). @internal */
export function awsErrorFacts(error: unknown): AwsErrorFacts {
  const e = (error ?? {}) as {
    name?: unknown;
    message?: unknown;
    code?: unknown;
    Reason?: unknown;
    $metadata?: { httpStatusCode?: unknown };
  };
  return {
    name: typeof e.name === 'string' ? e.name : 'Error',
    message: typeof e.message === 'string' ? e.message : String(error),
    status: typeof e.$metadata?.httpStatusCode === 'number' ? e.$metadata.httpStatusCode : undefined,
    reason: typeof e.Reason === 'string' ? e.Reason : undefined,
    code: typeof e.code === 'string' ? e.code : undefined,
  };
}

/** Whether an error is AWS throttling (any of its names). @internal */
export function isAwsThrottling(error: unknown): boolean {
  return THROTTLING.has(awsErrorFacts(error).name);
}

/** Whether an error is a transport failure or a server error (5xx): worth another attempt. @internal */
export function isAwsTransient(error: unknown): boolean {
  if (DrkitError.isInstance(error)) return UnreachableError.isInstance(error);
  const facts = awsErrorFacts(error);
  if (facts.status !== undefined && facts.status >= 500) return true;
  if (facts.code !== undefined && NETWORK_CODES.has(facts.code)) return true;
  return (
    facts.status === undefined &&
    (/socket hang up|aborted|premature close|ECONNRESET/i.test(facts.message) ||
      facts.name === 'TimeoutError')
  );
}

/** The IAM action an `UnauthorizedOperation` / `AccessDenied` message names (`... perform: ec2:CreateTags ...`). @internal */
export function deniedAction(error: unknown): string | undefined {
  return /perform: ([a-z0-9-]+:[A-Za-z0-9]+)/.exec(awsErrorFacts(error).message)?.[1];
}

/**
 * Turns an AWS SDK error into drkit's typed errors: refused credentials → `AuthenticationError`, a missing IAM
 * permission → `PermissionError` naming the action, throttling → `ThrottledError`, a missing resource →
 * `NotFoundError`, a transport failure or 5xx → `UnreachableError`, anything else → `SourceProtocolError`. drkit
 * errors pass through. The SDK's error object is not kept as `cause` (it holds the raw response); a plain error with
 * its name and message is.
 *
 * @param action the IAM action of the call (`ec2:DescribeInstances`), named by a `PermissionError`.
 * @param what the call in words, at the start of the message.
 * @internal
 */
export function toDrkitError(error: unknown, action: string, what: string): Error {
  if (DrkitError.isInstance(error)) return error;
  const facts = awsErrorFacts(error);
  const cause = new Error(`${facts.name}: ${facts.message}`);
  const detail = `${facts.name}${facts.reason ? ` (${facts.reason})` : ''}: ${facts.message}`;
  if (AUTHENTICATION.has(facts.name)) {
    return new AuthenticationError(
      `${what}: AWS refused the credentials (${detail}); check the access key id and secret access key`,
      { cause },
    );
  }
  if (PERMISSION.has(facts.name)) {
    const named = deniedAction(error) ?? action;
    return new PermissionError(
      `${what}: the AWS credentials may not call ${named} (${facts.name}); allow the IAM action ${named} in the user's policy`,
      { cause },
    );
  }
  if (THROTTLING.has(facts.name))
    return new ThrottledError(`${what}: AWS throttled the call (${detail})`, { cause });
  if (NOT_FOUND.has(facts.name)) return new NotFoundError(`${what}: ${detail}`, { cause });
  if (isAwsTransient(error)) {
    return new UnreachableError(`${what}: AWS could not be reached or failed (${detail})`, { cause });
  }
  return new SourceProtocolError(`${what}: ${detail}`, { cause });
}
