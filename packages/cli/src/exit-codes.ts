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
  /** Another operation holds the repository lock; try again later. */
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
  /** Interrupted (SIGINT/SIGTERM). */
  interrupted: 130,
} as const;

/** Maps an error to the exit code that tells its kind. */
export function exitCodeFor(error: unknown): number {
  if (!DrkitError.isInstance(error)) return ExitCode.internal;
  switch (error.code) {
    case 'NOT_FOUND':
      return ExitCode.notFound;
    case 'AUTHENTICATION_FAILED':
    case 'PERMISSION_DENIED':
      return ExitCode.accessDenied;
    case 'UNREACHABLE':
    case 'TIMEOUT':
    case 'THROTTLED':
      return ExitCode.unreachable;
    case 'CHECKSUM_MISMATCH':
    case 'REPOSITORY_CORRUPT':
      return ExitCode.corrupt;
    case 'REPOSITORY_LOCKED':
    case 'PROXY_BUSY':
    case 'PROXY_BOUND':
      return ExitCode.locked;
    case 'INVALID_SETTINGS':
    case 'INVALID_ARGUMENT':
      return ExitCode.invalid;
    case 'SOURCE_PROTOCOL':
    case 'CHANGE_TRACKING_UNAVAILABLE':
    case 'CHECKPOINT_INVALID':
      return ExitCode.source;
    default:
      return ExitCode.internal;
  }
}
