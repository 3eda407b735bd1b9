import {
  AuthenticationError,
  type CallOptions,
  InvalidSettingsError,
  type Logger,
  NotFoundError,
  type RetryOptions,
  retry,
  SourceProtocolError,
  withCallDeadline,
} from '@drkit/core';
import {
  createOpenStackHttp,
  describeUrl,
  type OpenStackHttp,
  type OpenStackHttpRequest,
  type OpenStackHttpResponse,
  parseJsonObject,
  statusError,
} from './openstack-http.js';

/** Which endpoint of the catalog a client uses: `public` (default), `internal` or `admin`. */
export type OpenStackInterface = 'public' | 'internal' | 'admin';

/** Keystone v3 password authentication scoped to a project, as the console's OpenStack table has it. */
export interface KeystoneCredentials {
  /** Keystone's v3 URL, `http://192.168.10.201:5000/v3` (a URL without `/v3` gets it appended). */
  readonly authUrl: string;
  /** Domain id of the user (`default`). */
  readonly userDomainId: string;
  readonly username: string;
  /** Never logged, never part of an error. */
  readonly password: string;
  /** Domain id of the project (`default`). */
  readonly projectDomainId: string;
  /** The project the token is scoped to (`admin`). */
  readonly projectName: string;
  /** Region of the endpoints in the catalog (`RegionOne`). */
  readonly regionName: string;
  /** Endpoint interface taken from the catalog. Default `public`. */
  readonly interface?: OpenStackInterface;
}

/** Settings of {@link createKeystoneClient}. */
export interface KeystoneClientOptions extends KeystoneCredentials {
  /**
   * PEM certificates (one or several in one string, or a list) trusted in addition to Node's bundled roots, for
   * endpoints signed by a private CA. TLS is always verified.
   */
  readonly caCertificates?: string | readonly string[];
  /** No answer for this long fails a request with an `UnreachableError`. Default 600 (the Sync Proxy's). */
  readonly httpTimeoutSeconds?: number;
  /**
   * Re-authenticate this long before the token expires. Default 300, or half the token's lifetime when that is
   * shorter. A margin longer than the lifetime makes every call authenticate.
   */
  readonly renewBeforeSeconds?: number;
  /**
   * Retries of retryable failures (network, 5xx, 429): attempts and delays, and how to wait between them (`sleep`,
   * see core's `RetryOptions`; tests pass one that records the delay instead of waiting). Default 4 attempts from
   * 500 ms.
   */
  readonly retry?: Pick<RetryOptions, 'attempts' | 'baseDelayMs' | 'maxDelayMs' | 'sleep'>;
  /**
   * The monotonic clock, in milliseconds, that decides when the token is due for renewal. Default
   * `performance.now`. Tests pass a clock they move themselves, so that a token is renewed (or reused) however long
   * the calls to Keystone take, and without waiting for it.
   */
  readonly now?: () => number;
  /** Called after each successful authentication, e.g. to log or count them. Never sees the token. */
  readonly onAuthenticated?: (token: KeystoneTokenInfo) => void;
}

/** What drkit knows of the current token, without the token itself. */
export interface KeystoneTokenInfo {
  readonly userId: string;
  readonly userName: string;
  readonly projectId: string;
  readonly projectName: string;
  /** Names of the user's roles on the project (`admin`, `member`, `reader`). */
  readonly roles: readonly string[];
  /** When Keystone issued the token (ISO 8601, Keystone's clock). */
  readonly issuedAt: string;
  /** When it expires (ISO 8601, Keystone's clock). */
  readonly expiresAt: string;
  /** The catalog's services: type → endpoint URL of the configured region and interface. */
  readonly endpoints: Readonly<Record<string, string>>;
}

/**
 * One call through {@link KeystoneClient.request}. `deadline` bounds the call as a whole (its retries and a
 * re-authentication included; each request is also bounded by `httpTimeoutSeconds`); `logger` is told of each
 * HTTP request at debug level (method, host, path, status; never headers or bodies).
 */
export interface KeystoneRequestOptions extends CallOptions {
  /** The service type in the catalog: `compute`, `volumev3`. */
  readonly serviceType: string;
  /** Name of the service in messages: `Nova`, `Cinder`. */
  readonly serviceName: string;
  /** Path below the endpoint, with its query: `/servers/detail?all_tenants=1`. */
  readonly path: string;
  /** Extra headers (microversions). */
  readonly headers?: Readonly<Record<string, string>>;
}

/** A Keystone v3 session that the Nova and Cinder clients call through. */
export interface KeystoneClient {
  /** The Keystone URL in use (`.../v3`). */
  readonly authUrl: string;
  /**
   * Returns a valid token's facts, authenticating when there is none or it is due for renewal. `deadline` bounds
   * the wait; `logger` is told of the authentication request at debug level (never the password or the token).
   *
   * @throws {@link @drkit/core!AuthenticationError} when Keystone refuses the credentials (401);
   * {@link @drkit/core!UnreachableError} when Keystone cannot be reached; {@link @drkit/core!InvalidSettingsError}
   * naming `openstack.authUrl` or `openstack.regionName` when the URL is not Keystone v3 or the region is not in
   * the catalog; {@link @drkit/core!SourceProtocolError} for an answer that is not Keystone's.
   */
  authenticate(options?: CallOptions): Promise<KeystoneTokenInfo>;
  /**
   * The catalog URL of a service type in the configured region and interface.
   *
   * @throws as {@link KeystoneClient.authenticate}; {@link @drkit/core!NotFoundError} when the catalog has no such
   * service in the region.
   */
  endpoint(serviceType: string, options?: CallOptions): Promise<string>;
  /**
   * GETs a JSON object from a service of the catalog with the token. Retries network failures, 5xx and 429
   * (honouring `Retry-After`); on a 401 authenticates again once and repeats the call.
   *
   * @throws {@link @drkit/core!AuthenticationError} (401 twice), {@link @drkit/core!PermissionError} (403),
   * {@link @drkit/core!NotFoundError} (404), {@link @drkit/core!ThrottledError} (429 after the retries),
   * {@link @drkit/core!UnreachableError}, {@link @drkit/core!SourceProtocolError} (5xx after the retries, a body
   * that is not JSON); `signal.reason` when aborted.
   */
  request(options: KeystoneRequestOptions): Promise<Record<string, unknown>>;
  /** Forgets the token: the next call authenticates. */
  invalidate(): void;
}

interface CurrentToken {
  readonly token: string;
  readonly info: KeystoneTokenInfo;
  /** The time of the client's clock (`now`) after which the token is renewed before use. */
  readonly renewAt: number;
}

interface CatalogEndpoint {
  readonly interface?: unknown;
  readonly region_id?: unknown;
  readonly region?: unknown;
  readonly url?: unknown;
}

interface CatalogService {
  readonly type?: unknown;
  readonly endpoints?: unknown;
}

const DEFAULT_RENEW_BEFORE_SECONDS = 300;
const DEFAULT_TIMEOUT_SECONDS = 600;

/**
 * Normalises a Keystone URL to its v3 root: no trailing slash, `/v3` appended to a versionless URL.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming `field` for a URL that is not http(s) or names v2.0.
 * @internal
 */
export function normalizeAuthUrl(value: unknown, field = 'openstack.authUrl'): string {
  if (typeof value !== 'string' || value.trim() === '') {
    throw new InvalidSettingsError(
      field,
      'is required: the Keystone URL, e.g. "http://192.168.10.201:5000/v3"',
    );
  }
  let url: URL;
  try {
    url = new URL(value.trim());
  } catch {
    throw new InvalidSettingsError(field, `"${value}" is not a URL, e.g. "http://192.168.10.201:5000/v3"`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InvalidSettingsError(field, `must be an http:// or https:// URL, got ${url.protocol}`);
  }
  if (url.username || url.password) {
    throw new InvalidSettingsError(field, 'must not carry credentials: use username and password');
  }
  if (url.search || url.hash) {
    throw new InvalidSettingsError(field, 'must not have a query or fragment');
  }
  let path = url.pathname.replace(/\/+$/, '');
  if (/\/v2(\.0)?$/.test(path)) {
    throw new InvalidSettingsError(field, 'names Keystone v2.0, which drkit does not speak: use the v3 URL');
  }
  if (!/\/v3$/.test(path)) path = `${path}/v3`;
  return `${url.origin}${path}`;
}

/**
 * Creates a Keystone v3 client: password authentication scoped to a project, the token taken from
 * `X-Subject-Token` and renewed before it expires (measured by its lifetime, so clocks need not agree), and
 * authenticated calls to the services of its catalog. Transport retries are drkit's (`retry` of core); got's own
 * are off. The password and the token are never logged nor part of an error.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming the field when an option is invalid.
 * @example
 * ```ts
 * const keystone = createKeystoneClient({
 *   authUrl: 'http://192.168.10.201:5000/v3', userDomainId: 'default', username: 'admin', password,
 *   projectDomainId: 'default', projectName: 'admin', regionName: 'RegionOne',
 * });
 * const token = await keystone.authenticate();
 * console.log(token.projectId, token.expiresAt, token.endpoints.compute);
 * ```
 */
export function createKeystoneClient(options: KeystoneClientOptions): KeystoneClient {
  const authUrl = normalizeAuthUrl(options.authUrl);
  const iface: OpenStackInterface = options.interface ?? 'public';
  const timeoutSeconds = options.httpTimeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
  const explicitRenewBeforeMs =
    options.renewBeforeSeconds === undefined ? undefined : options.renewBeforeSeconds * 1000;
  const caCertificates =
    options.caCertificates === undefined
      ? undefined
      : typeof options.caCertificates === 'string'
        ? [options.caCertificates]
        : [...options.caCertificates];
  const http: OpenStackHttp = createOpenStackHttp({
    timeoutMs: timeoutSeconds * 1000,
    ...(caCertificates ? { caCertificates } : {}),
  });
  const retryOptions: RetryOptions = {
    attempts: options.retry?.attempts ?? 4,
    baseDelayMs: options.retry?.baseDelayMs ?? 500,
    maxDelayMs: options.retry?.maxDelayMs ?? 30_000,
    ...(options.retry?.sleep ? { sleep: options.retry.sleep } : {}),
  };
  const now = options.now ?? (() => performance.now());
  // Captured now, so that changing the options object later changes nothing (and the password is not kept in
  // an object that may be logged).
  const credentials = {
    userDomainId: options.userDomainId,
    username: options.username,
    password: options.password,
    projectDomainId: options.projectDomainId,
    projectName: options.projectName,
    regionName: options.regionName,
  };
  const onAuthenticated = options.onAuthenticated;

  let current: CurrentToken | undefined;
  let pending: Promise<CurrentToken> | undefined;

  async function sendWithRetry(
    service: string,
    request: OpenStackHttpRequest,
    signal: AbortSignal | undefined,
  ): Promise<OpenStackHttpResponse> {
    return retry(
      async () => {
        const response = await http.send({ ...request, service });
        if (response.statusCode === 429 || response.statusCode >= 500) {
          throw statusError(service, request, response);
        }
        if (response.statusCode === 413 && response.headers['retry-after'] !== undefined) {
          throw statusError(service, request, response);
        }
        return response;
      },
      { ...retryOptions, ...(signal ? { signal } : {}) },
    );
  }

  async function authenticateNow(
    signal: AbortSignal | undefined,
    logger: Logger | undefined,
  ): Promise<CurrentToken> {
    const request: OpenStackHttpRequest = {
      method: 'POST',
      url: `${authUrl}/auth/tokens`,
      json: {
        auth: {
          identity: {
            methods: ['password'],
            password: {
              user: {
                name: credentials.username,
                domain: { id: credentials.userDomainId },
                password: credentials.password,
              },
            },
          },
          scope: {
            project: { name: credentials.projectName, domain: { id: credentials.projectDomainId } },
          },
        },
      },
      signal,
      logger,
    };
    const sentAt = now();
    const response = await sendWithRetry('Keystone', request, signal);
    const who =
      `user "${credentials.username}" (domain ${credentials.userDomainId}) on project ` +
      `"${credentials.projectName}" (domain ${credentials.projectDomainId})`;
    if (response.statusCode === 401) {
      throw new AuthenticationError(
        `Keystone at ${authUrl} refused ${who}: check the username, password, user domain id, project name and ` +
          'project domain id, and that the user has a role on the project',
      );
    }
    if (response.statusCode === 404 || response.statusCode === 300) {
      throw new InvalidSettingsError(
        'openstack.authUrl',
        `${authUrl} is not a Keystone v3 endpoint (POST /auth/tokens answered ${response.statusCode})`,
      );
    }
    if (response.statusCode !== 201 && response.statusCode !== 200) {
      throw statusError('Keystone', request, response);
    }
    const header = response.headers['x-subject-token'];
    const token = Array.isArray(header) ? header[0] : header;
    if (!token) {
      throw new SourceProtocolError(
        `Keystone at ${authUrl} answered ${response.statusCode} without X-Subject-Token`,
      );
    }
    const body = parseJsonObject('Keystone', request, response.body);
    const info = tokenInfo(body, authUrl, iface, credentials.regionName);
    // Measured on the token's lifetime from when it was requested, so the proxy's clock need not agree with
    // Keystone's. The default margin is at most half the lifetime (short-lived tokens are still reused).
    const lifetimeMs = Date.parse(info.expiresAt) - Date.parse(info.issuedAt);
    const knownLifetime = Number.isFinite(lifetimeMs) && lifetimeMs > 0;
    const marginMs =
      explicitRenewBeforeMs ??
      Math.min(
        DEFAULT_RENEW_BEFORE_SECONDS * 1000,
        knownLifetime ? lifetimeMs / 2 : Number.POSITIVE_INFINITY,
      );
    const renewAt = knownLifetime
      ? sentAt + lifetimeMs - marginMs
      : sentAt + Date.parse(info.expiresAt) - Date.now() - marginMs;
    const next: CurrentToken = { token, info, renewAt };
    onAuthenticated?.(info);
    return next;
  }

  async function currentToken(
    signal: AbortSignal | undefined,
    logger: Logger | undefined,
  ): Promise<CurrentToken> {
    signal?.throwIfAborted();
    if (current && now() < current.renewAt) return current;
    if (!pending) {
      // One authentication at a time; its own signal is not the caller's, so that one caller's abort does not
      // fail the others waiting for the same token. It logs to the logger of the call that started it.
      pending = authenticateNow(undefined, logger).then(
        (token) => {
          current = token;
          pending = undefined;
          return token;
        },
        (error: unknown) => {
          pending = undefined;
          throw error;
        },
      );
    }
    return abortable(pending, signal);
  }

  async function endpointOf(
    serviceType: string,
    signal: AbortSignal | undefined,
    logger: Logger | undefined,
  ): Promise<string> {
    const { info } = await currentToken(signal, logger);
    const url = info.endpoints[serviceType];
    if (url === undefined) {
      throw new NotFoundError(
        `the catalog of project "${info.projectName}" has no ${iface} "${serviceType}" endpoint in region ` +
          `"${credentials.regionName}" (it has: ${Object.keys(info.endpoints).sort().join(', ') || 'none'})`,
      );
    }
    return url;
  }

  async function request(call: KeystoneRequestOptions): Promise<Record<string, unknown>> {
    using scope = withCallDeadline(call, `${call.serviceName} GET ${describeUrl(call.path)}`);
    const { signal } = scope;
    const { logger } = call;
    for (let attempt = 1; ; attempt++) {
      const token = await currentToken(signal, logger);
      const base = await endpointOf(call.serviceType, signal, logger);
      const httpRequest: OpenStackHttpRequest = {
        method: 'GET',
        url: `${base}${call.path}`,
        headers: { ...call.headers, 'x-auth-token': token.token },
        signal,
        logger,
      };
      const response = await sendWithRetry(call.serviceName, httpRequest, signal);
      if (response.statusCode === 401 && attempt === 1) {
        // Revoked or expired early (a password change, a Keystone restart with new keys): once more.
        if (current === token) current = undefined;
        continue;
      }
      if (response.statusCode === 401) {
        throw new AuthenticationError(
          `${call.serviceName} refused a token Keystone had just issued to user "${credentials.username}" ` +
            `(${call.serviceName} GET ${describeUrl(httpRequest.url)} answered 401 twice): check the ` +
            `service's Keystone settings`,
        );
      }
      if (response.statusCode < 200 || response.statusCode >= 300) {
        throw statusError(call.serviceName, httpRequest, response);
      }
      return parseJsonObject(call.serviceName, httpRequest, response.body);
    }
  }

  return {
    authUrl,
    async authenticate(callOptions: CallOptions = {}) {
      using scope = withCallDeadline(callOptions, `authenticating to Keystone at ${authUrl}`);
      return (await currentToken(scope.signal, callOptions.logger)).info;
    },
    async endpoint(serviceType: string, callOptions: CallOptions = {}) {
      using scope = withCallDeadline(callOptions, `reading the catalog of Keystone at ${authUrl}`);
      return await endpointOf(serviceType, scope.signal, callOptions.logger);
    },
    request,
    invalidate() {
      current = undefined;
    },
  };
}

/** Resolves as `promise`, or rejects with `signal.reason` as soon as the signal aborts. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  signal.throwIfAborted();
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

function text(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/**
 * Reads the facts of a token body and picks each service's endpoint for the region and interface.
 *
 * @throws {@link @drkit/core!SourceProtocolError} when the body is not a Keystone v3 token;
 * {@link @drkit/core!InvalidSettingsError} naming `openstack.regionName` when no endpoint is in that region.
 * @internal
 */
export function tokenInfo(
  body: Record<string, unknown>,
  authUrl: string,
  iface: OpenStackInterface,
  regionName: string,
): KeystoneTokenInfo {
  const token = body.token as Record<string, unknown> | undefined;
  const user = token?.user as Record<string, unknown> | undefined;
  const project = token?.project as Record<string, unknown> | undefined;
  const expiresAt = text(token?.expires_at);
  const issuedAt = text(token?.issued_at);
  const userId = text(user?.id);
  const projectId = text(project?.id);
  if (!token || !expiresAt || !issuedAt || !userId || !projectId || Number.isNaN(Date.parse(expiresAt))) {
    throw new SourceProtocolError(
      `Keystone at ${authUrl} answered a token without expires_at, issued_at, user or project: is it Keystone v3?`,
    );
  }
  const roles = Array.isArray(token.roles)
    ? token.roles.flatMap((role) => {
        const name = text((role as Record<string, unknown> | null)?.name);
        return name ? [name] : [];
      })
    : [];
  const endpoints: Record<string, string> = {};
  const regions = new Set<string>();
  const catalog = Array.isArray(token.catalog) ? (token.catalog as CatalogService[]) : [];
  for (const service of catalog) {
    const type = text(service?.type);
    if (!type || !Array.isArray(service.endpoints)) continue;
    for (const endpoint of service.endpoints as CatalogEndpoint[]) {
      const region = text(endpoint?.region_id) ?? text(endpoint?.region);
      if (region) regions.add(region);
      const url = text(endpoint?.url);
      if (region === regionName && endpoint.interface === iface && url && endpoints[type] === undefined) {
        endpoints[type] = url.replace(/\/+$/, '');
      }
    }
  }
  if (catalog.length > 0 && !regions.has(regionName)) {
    throw new InvalidSettingsError(
      'openstack.regionName',
      `no endpoint of the catalog is in region "${regionName}" (regions: ${[...regions].sort().join(', ')})`,
    );
  }
  return {
    userId,
    userName: text(user?.name) ?? '',
    projectId,
    projectName: text(project?.name) ?? '',
    roles,
    issuedAt,
    expiresAt,
    endpoints,
  };
}
