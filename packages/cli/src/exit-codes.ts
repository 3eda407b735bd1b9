import { DrkitError } from '@drkit/core';

/** Exit codes of the `drkit` command, distinct per kind of failure so scripts can react. */
export const ExitCode = {
  /** Everything succeeded. */
  ok: 0,
  /** An unexpected internal error (a bug: please report it). */
  internal: 1,
  /** The command line is wrong. */
  usage: 2,
  /** A point, disk, host or repository does not exist. */
  notFound: 3,
  /** Credentials refused or permission missing. */
  accessDenied: 4,
  /** A source or store could not be reached in time. */
  unreachable: 5,
  /** Data failed verification or the repository is damaged. */
  corrupt: 6,
  /** Another operation holds the repository lock, or the store keeps a blob locked (Object Lock); try again later. */
  locked: 7,
  /** Some disks of a backup failed (the others committed their points). */
  partial: 8,
  /** Invalid configuration or argument value. */
  invalid: 9,
  /** The source broke its protocol (truncated stream, bad data). */
  source: 10,
  /**
   * Every disk of a backup committed its point, but a snapshot drkit took on the source could not be released: it
   * stays in the ledger (`drkit ledger`) until a reconcile releases it.
   */
  snapshotLeft: 11,
  /**
   * A backup completed with skipped disks: every disk that could be read committed its point, but the platform
   * lists disks of the hosts it cannot protect (an independent disk, a volume on a cluster drkit has no access
   * to). Failed disks take precedence (8); a snapshot left behind comes after (11).
   */
  skipped: 12,
  /** Interrupted (SIGINT/SIGTERM). */
  interrupted: 130,
} as const;

/** Maps an error to the exit code that tells its kind. */
export function exitCodeFor(error: unknown): number {
  if (!DrkitError.isInstance(error)) return ExitCode.internal;
  return exitCodeForCode(error.code) ?? ExitCode.internal;
}

/**
 * The exit code of a platform that `verify()` reported abnormal, from the status's `code`: a drkit error code or a
 * system one (`ENOENT`); 10 (`source`) when there is none or it is unknown.
 */
export function exitCodeForStatusCode(code: string | undefined): number {
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return ExitCode.notFound;
    case 'EACCES':
    case 'EPERM':
      return ExitCode.accessDenied;
    case 'ETIMEDOUT':
    case 'ECONNREFUSED':
    case 'ECONNRESET':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return ExitCode.unreachable;
    default: {
      const mapped = code === undefined ? undefined : exitCodeForCode(code);
      return mapped === undefined || mapped === ExitCode.internal ? ExitCode.source : mapped;
    }
  }
}

function exitCodeForCode(code: string): number | undefined {
  switch (code) {
    case 'NOT_FOUND':
      return ExitCode.notFound;
    case 'AUTHENTICATION_FAILED':
    case 'PERMISSION_DENIED':
    case 'REPOSITORY_KEY':
      return ExitCode.accessDenied;
    case 'UNREACHABLE':
    case 'TIMEOUT':
    case 'THROTTLED':
      return ExitCode.unreachable;
    case 'CHECKSUM_MISMATCH':
    case 'REPOSITORY_CORRUPT':
      return ExitCode.corrupt;
    case 'REPOSITORY_LOCKED':
    case 'OBJECT_LOCKED':
    case 'PROXY_BUSY':
    case 'PROXY_BOUND':
      return ExitCode.locked;
    case 'INVALID_SETTINGS':
    case 'INVALID_ARGUMENT':
      return ExitCode.invalid;
    case 'SOURCE_PROTOCOL':
    case 'CHANGE_TRACKING_UNAVAILABLE':
    case 'CHECKPOINT_INVALID':
    case 'QUIESCE_FAILED':
      return ExitCode.source;
    case 'TASK_STALLED':
      return ExitCode.unreachable;
    case 'WORKER_CRASHED':
      return ExitCode.internal;
    default:
      return undefined;
  }
}
