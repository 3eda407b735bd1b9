import {
  AuthenticationError,
  type DrkitError,
  InvalidSettingsError,
  NotFoundError,
  PermissionError,
  SourceProtocolError,
  ThrottledError,
  UnreachableError,
} from '@drkit/core';
import {
  NBD_EINVAL,
  NBD_ENOMEM,
  NBD_EPERM,
  NBD_ESHUTDOWN,
  optionName,
  REP_ERR_POLICY,
  REP_ERR_SHUTDOWN,
  REP_ERR_TLS_REQD,
  REP_ERR_UNKNOWN,
  replyErrorName,
  transmissionErrorName,
} from './nbd-protocol.js';

/** Node's socket error codes that mean the server could not be reached or went away. */
const unreachableCodes = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ENOENT',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'ENETDOWN',
  'EADDRNOTAVAIL',
  'EAI_AGAIN',
  'ENOTFOUND',
  'ERR_SOCKET_CLOSED',
  'ERR_STREAM_DESTROYED',
  'ERR_STREAM_WRITE_AFTER_END',
]);

/** TLS errors that mean the server's certificate could not be verified. */
const certificateCodes = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * The typed error for a socket failure while talking to `server`: an untrusted certificate is an
 * `AuthenticationError`, everything else (refused, reset, closed, timed out at the TCP level) an
 * `UnreachableError`, retryable.
 */
export function socketError(error: unknown, server: string, during: string): DrkitError {
  const code = errorCode(error);
  if (code && certificateCodes.has(code)) {
    return new AuthenticationError(
      `the TLS certificate of the NBD server ${server} was not trusted (${code}): pass the CA that signed it in ` +
        '`tls.ca`, and connect by the name the certificate holds (`tls.servername`)',
      { cause: error },
    );
  }
  const detail = error instanceof Error ? error.message : String(error);
  const known = code === undefined || unreachableCodes.has(code) ? '' : ` (${code})`;
  return new UnreachableError(`the NBD server ${server} could not be reached ${during}: ${detail}${known}`, {
    cause: error,
  });
}

/** The connection ended while `during` was under way. */
export function closedError(server: string, during: string): UnreachableError {
  return new UnreachableError(`the NBD server ${server} closed the connection ${during}`);
}

/**
 * The typed error for an option the server refused with an error reply: an unknown export is a `NotFoundError`, a
 * policy refusal a `PermissionError`, a server shutting down an `UnreachableError` (retryable), a server that
 * requires TLS when none was configured an `InvalidSettingsError` for `tls`; anything else a
 * `SourceProtocolError`.
 */
export function optionReplyError(
  option: number,
  reply: number,
  message: string,
  context: { server: string; exportName: string },
): DrkitError {
  const said = message ? `: ${message}` : '';
  const what = `${context.server} answered ${optionName(option)} with ${replyErrorName(reply)}${said}`;
  switch (reply) {
    case REP_ERR_UNKNOWN:
      return new NotFoundError(
        `the NBD export ${JSON.stringify(context.exportName)} does not exist (${what})`,
      );
    case REP_ERR_TLS_REQD:
      return new InvalidSettingsError(
        'tls',
        `the NBD server requires TLS (${what}): pass \`tls\` with the CA that signed its certificate`,
      );
    case REP_ERR_POLICY:
      return new PermissionError(`the NBD server refused by its policy (${what})`);
    case REP_ERR_SHUTDOWN:
      return new UnreachableError(`the NBD server is shutting down (${what})`);
    default:
      return new SourceProtocolError(`the NBD handshake failed (${what})`);
  }
}

/**
 * The typed error for a request the server failed with an NBD error value: `EPERM` → `PermissionError`, `ENOMEM`
 * → `ThrottledError`, `ESHUTDOWN` → `UnreachableError` (the pool reconnects), `EINVAL` on a request this client
 * checked against the size and block sizes the server advertised → `SourceProtocolError`; `EIO` and the rest →
 * `SourceProtocolError`, `EIO` retryable (the server's own source may answer next time).
 */
export function commandError(error: number, message: string, what: string): DrkitError {
  const said = message ? `: ${message}` : '';
  const text = `${what} failed with ${transmissionErrorName(error)}${said}`;
  switch (error) {
    case NBD_EPERM:
      return new PermissionError(text);
    case NBD_ENOMEM:
      return new ThrottledError(text);
    case NBD_ESHUTDOWN:
      return new UnreachableError(text);
    case NBD_EINVAL:
      return new SourceProtocolError(
        `${text} (the request lies inside the size and block sizes the server advertised)`,
      );
    default:
      return new SourceProtocolError(text, { retryable: error === 5 });
  }
}
