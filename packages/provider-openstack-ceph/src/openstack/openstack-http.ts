import { rootCertificates } from 'node:tls';
import {
  AuthenticationError,
  type DrkitError,
  type Logger,
  NotFoundError,
  PermissionError,
  SourceProtocolError,
  ThrottledError,
  UnreachableError,
} from '@drkit/core';
import got, { RequestError } from 'got';

/** One HTTP exchange with an OpenStack API. @internal */
export interface OpenStackHttpRequest {
  readonly method: 'GET' | 'POST' | 'DELETE' | 'HEAD';
  readonly url: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** A JSON body. Never part of an error message or cause (it may hold the password), never logged. */
  readonly json?: unknown;
  readonly signal?: AbortSignal | undefined;
  /** Told at debug level of the request: service, method, host, path (no query), status, milliseconds. */
  readonly logger?: Logger | undefined;
  /** Name of the service in logs: `Keystone`, `Nova`, `Cinder`. */
  readonly service?: string | undefined;
}

/** The parts of a response the clients use. @internal */
export interface OpenStackHttpResponse {
  readonly statusCode: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: string;
}

/** Sends requests with one timeout and one trust store, without retries of its own. @internal */
export interface OpenStackHttp {
  /**
   * Sends one request and resolves with any HTTP status; only transport failures reject.
   *
   * @throws {@link @drkit/core!UnreachableError} when the connection fails or times out (the message names the
   * URL without its query and says what to check); `signal.reason` when aborted.
   */
  send(request: OpenStackHttpRequest): Promise<OpenStackHttpResponse>;
}

/** Settings of {@link createOpenStackHttp}. @internal */
export interface OpenStackHttpOptions {
  /** No response for this long fails the request. */
  readonly timeoutMs: number;
  /** PEM certificates trusted in addition to Node's bundled root certificates. */
  readonly caCertificates?: readonly string[] | undefined;
}

const TLS_CODES = new Set([
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
]);

/** The URL without its query string, for messages. @internal */
export function describeUrl(url: string): string {
  const index = url.indexOf('?');
  return index < 0 ? url : url.slice(0, index);
}

/**
 * Creates the transport of the OpenStack clients: got with its retries off (drkit's `retry` decides), HTTP
 * errors returned rather than thrown, TLS verified against Node's store or `caCertificates`.
 * @internal
 */
export function createOpenStackHttp(options: OpenStackHttpOptions): OpenStackHttp {
  const client = got.extend({
    retry: { limit: 0 },
    throwHttpErrors: false,
    followRedirect: false,
    responseType: 'text',
    timeout: { request: options.timeoutMs },
    https: {
      rejectUnauthorized: true,
      ...(options.caCertificates
        ? { certificateAuthority: [...rootCertificates, ...options.caCertificates] }
        : {}),
    },
  });

  async function send(request: OpenStackHttpRequest): Promise<OpenStackHttpResponse> {
    const { signal } = request;
    signal?.throwIfAborted();
    const started = performance.now();
    try {
      const response = await client(request.url, {
        method: request.method,
        headers: { accept: 'application/json', ...request.headers },
        ...(request.json === undefined ? {} : { json: request.json }),
        ...(signal ? { signal } : {}),
      });
      logRequest(request, started, { status: response.statusCode });
      return { statusCode: response.statusCode, headers: response.headers, body: response.body };
    } catch (error) {
      if (signal?.aborted) {
        logRequest(request, started, { error: 'aborted' });
        throw signal.reason;
      }
      const failure = transportError(error, request, options.timeoutMs);
      logRequest(request, started, { error: failure.code });
      throw failure;
    }
  }

  return { send };
}

/**
 * Logs one request at debug level: the service, method, host and path of its URL (no query string, no headers, no
 * body), and its status or the code of its failure.
 */
function logRequest(
  request: OpenStackHttpRequest,
  started: number,
  outcome: { status: number } | { error: string },
): void {
  const { logger } = request;
  if (!logger) return;
  let host = '';
  let path = '';
  try {
    const url = new URL(request.url);
    host = url.host;
    path = url.pathname;
  } catch {
    path = describeUrl(request.url);
  }
  logger.debug(
    {
      ...(request.service ? { service: request.service } : {}),
      method: request.method,
      host,
      path,
      ...outcome,
      ms: Math.round(performance.now() - started),
    },
    'openstack request',
  );
}

/**
 * Turns a transport failure into a drkit error. The got error is not kept as `cause`: its `options` hold the
 * request headers and body (the token, the password). Only its code and message travel.
 */
function transportError(error: unknown, request: OpenStackHttpRequest, timeoutMs: number): DrkitError {
  const url = describeUrl(request.url);
  const code =
    error instanceof RequestError || error instanceof Error ? (error as { code?: string }).code : '';
  const message = error instanceof Error ? error.message : String(error);
  const cause = new Error(`${code ?? 'ERROR'}: ${message}`);
  if (error instanceof RequestError && error.name === 'TimeoutError') {
    return new UnreachableError(
      `${request.method} ${url}: no answer within ${Math.round(timeoutMs / 1000)} s (the HTTP timeout, ` +
        '`httpTimeoutSeconds`): check that the endpoint is reachable from this Sync Proxy',
      { cause },
    );
  }
  if (code && TLS_CODES.has(code)) {
    return new UnreachableError(
      `${request.method} ${url}: the TLS certificate is not trusted (${code}): pass the CA bundle of the ` +
        'OpenStack endpoints as `openstack.caCertificates`',
      { cause, retryable: false },
    );
  }
  if (code === 'ENOTFOUND') {
    return new UnreachableError(
      `${request.method} ${url}: the host name does not resolve: check the URL and this Sync Proxy's DNS`,
      { cause, retryable: false },
    );
  }
  return new UnreachableError(
    `${request.method} ${url}: ${code || 'connection failed'}: check that the endpoint is reachable from this ` +
      'Sync Proxy (Keystone 5000, Nova 8774, Cinder 8776)',
    { cause },
  );
}

/** The `message` of an OpenStack error body (`{"badRequest": {"message": ...}}`, `{"error": {...}}`). */
function bodyMessage(body: string): string {
  try {
    const parsed = JSON.parse(body) as unknown;
    if (parsed && typeof parsed === 'object') {
      for (const value of Object.values(parsed as Record<string, unknown>)) {
        if (value && typeof value === 'object') {
          const message = (value as Record<string, unknown>).message;
          if (typeof message === 'string') return message.slice(0, 500);
        }
      }
    }
  } catch {
    // not JSON: fall through
  }
  return body.replace(/\s+/g, ' ').trim().slice(0, 200);
}

/** Milliseconds of a `Retry-After` header (seconds or an HTTP date). @internal */
export function retryAfterMs(
  header: string | string[] | undefined,
  now: number = Date.now(),
): number | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  if (value === undefined || value.trim() === '') return undefined;
  if (/^\d+(\.\d+)?$/.test(value.trim())) return Math.round(Number(value) * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/**
 * The drkit error of an HTTP error status of an OpenStack service: 401 authentication, 403 permission, 404 not
 * found, 429 (and 413 with `Retry-After`, Nova's old rate limit) throttled, 5xx retryable protocol errors.
 * @internal
 */
export function statusError(
  service: string,
  request: Pick<OpenStackHttpRequest, 'method' | 'url'>,
  response: OpenStackHttpResponse,
): DrkitError {
  const what = `${service} ${request.method} ${describeUrl(request.url)}`;
  const status = response.statusCode;
  const detail = bodyMessage(response.body);
  const said = detail ? `: ${detail}` : '';
  const retryAfter = retryAfterMs(response.headers['retry-after']);
  if (status === 401) {
    return new AuthenticationError(`${what} answered 401${said}`);
  }
  if (status === 403) {
    return new PermissionError(
      `${what} answered 403${said}: the user needs the admin role (or a role the cloud's policy lets list ` +
        'servers and volumes of all projects)',
    );
  }
  if (status === 404) return new NotFoundError(`${what} answered 404${said}`);
  if (status === 429 || (status === 413 && retryAfter !== undefined)) {
    return new ThrottledError(`${what} answered ${status}${said}: too many requests`, {
      ...(retryAfter === undefined ? {} : { retryAfterMs: retryAfter }),
    });
  }
  if (status === 502 || status === 503 || status === 504) {
    return new UnreachableError(`${what} answered ${status}${said}: the service is unavailable`);
  }
  if (status >= 500) {
    return new SourceProtocolError(`${what} answered ${status}${said}`, { retryable: true });
  }
  return new SourceProtocolError(`${what} answered ${status}${said}`);
}

/**
 * Parses a JSON body.
 *
 * @throws {@link @drkit/core!SourceProtocolError} when the body is not JSON or not an object.
 * @internal
 */
export function parseJsonObject(
  service: string,
  request: Pick<OpenStackHttpRequest, 'method' | 'url'>,
  body: string,
): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw new SourceProtocolError(
      `${service} ${request.method} ${describeUrl(request.url)} answered a body that is not JSON ` +
        `(${body.length} bytes, starting ${JSON.stringify(body.slice(0, 40))})`,
    );
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new SourceProtocolError(
      `${service} ${request.method} ${describeUrl(request.url)} answered JSON that is not an object`,
    );
  }
  return parsed as Record<string, unknown>;
}
