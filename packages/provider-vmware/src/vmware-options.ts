import { InvalidSettingsError, type Logger } from '@drkit/core';
import { type ResolvedTls, resolveTls, type VmwareTlsOptions } from './soap/vmware-tls.js';
import type { VmwareNbdOptions } from './vmware-nbd-transport.js';

/**
 * Caps on the data connections read sessions open at once, shared by every disk session of the platform (see the
 * README, "Connection limits"). Defaults from VMware's VDDK programming guide, "NFC Session Limits and
 * Timeouts": an ESXi host's NFC server holds 48 MB of connection buffers (1 MB per stream: 48 at once), and vCenter
 * allows 52 NFC connections in all.
 */
export interface VmwareConnectionLimits {
  /**
   * Data connections to one ESXi host (the VM's `runtime.host`) at once, over every disk session: NBD connections
   * to the nbdkit (VDDK) export, each one NFC connection to the host, and HTTPS range requests in flight. 1 to
   * 1024; default 48.
   */
  readonly connectionsPerHost?: number;
  /** Data connections of the whole platform at once (vCenter's own NFC limit). 1 to 4096; default 52. */
  readonly connectionsPerVcenter?: number;
}

/** How the disk data of a snapshot is read (see the README: which works where). */
export type VmwareTransport = 'nbd' | 'https';

/** Settings of {@link createVmwarePlatform}: the console's VMware table, plus transport settings. */
export interface VmwarePlatformOptions {
  /** Identity of the platform, unique in the engine, chosen by the user (points are filed under it). Required. */
  readonly id: string;
  /**
   * The vCenter or ESXi host: `https://vcenter.example.com` (port 443, path `/sdk`), or with a port or the
   * `/sdk` path spelled out. Only HTTPS; never credentials in the URL.
   */
  readonly url: string;
  /** The vSphere user, e.g. `backup@vsphere.local` (see the README for the role it needs). */
  readonly username: string;
  /** Its password. Never logged, never part of an error or a URL. */
  readonly password: string;
  /** How the server's certificate is trusted. Default: Node's trust store. Verification is never turned off. */
  readonly tls?: VmwareTlsOptions;
  /**
   * The data path: `nbd` (nbdkit with VMware's VDDK plugin on the proxy, port 902 to every ESXi host) or `https`
   * (datastore file ranges through vCenter/ESXi on port 443). Default `nbd`, which needs {@link
   * VmwarePlatformOptions.nbd} (without it a read session throws an InvalidSettingsError for `nbd`). See the
   * README, which works where.
   */
  readonly transport?: VmwareTransport;
  /**
   * Where the NBD export (nbdkit with VMware's VDDK plugin, run by the deployment) of each disk snapshot is, for
   * `transport: 'nbd'`. drkit never starts nbdkit nor ships VDDK.
   */
  readonly nbd?: VmwareNbdOptions;
  /** Reads in flight per disk (the reader's `maxConcurrentReads`). 1 to 32; default 4. */
  readonly maxConcurrentReads?: number;
  /**
   * Data connections at once per ESXi host and per platform, shared by every disk session; a session waits for a
   * free one until its deadline (then a `VmwareConnectionLimitError`). Defaults 48 per host, 52 in all.
   */
  readonly limits?: VmwareConnectionLimits;
  /**
   * The Sync Proxy's HTTP timeout: no answer to a SOAP request for this long fails it. Whole seconds from 1 to
   * 86400; default 600.
   */
  readonly httpTimeoutSeconds?: number;
  /** Objects per PropertyCollector page (`maxObjects` of RetrievePropertiesEx). 1 to 10000; default 100. */
  readonly pageSize?: number;
  /** The vim25 API version requested (`SOAPAction: urn:vim25/<version>`). Default `6.7`, which vSphere 6.7 to 8 serve. */
  readonly apiVersion?: string;
  /** Where the platform logs what it does when a call passes no logger of its own. Default: nothing. */
  readonly logger?: Logger;
}

/** The options after validation. @internal */
export interface ResolvedVmwareOptions {
  readonly id: string;
  readonly sdkUrl: URL;
  readonly username: string;
  readonly password: string;
  readonly tls: ResolvedTls;
  readonly transport: VmwareTransport;
  readonly nbd: VmwareNbdOptions | undefined;
  readonly maxConcurrentReads: number;
  readonly limits: Required<VmwareConnectionLimits>;
  readonly httpTimeoutSeconds: number;
  readonly pageSize: number;
  readonly apiVersion: string;
  readonly logger: Logger | undefined;
}

function requiredText(value: unknown, field: string, example: string, secret = false): string {
  if (typeof value !== 'string' || value.trim() === '') {
    throw new InvalidSettingsError(
      field,
      value === undefined
        ? `is required${secret ? '' : `, e.g. "${example}"`}`
        : `must be a non-empty string${secret ? '' : `, e.g. "${example}"`}`,
    );
  }
  return secret ? value : value.trim();
}

function integer(value: unknown, field: string, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidSettingsError(
      field,
      `must be a whole number from ${min} to ${max}, got ${String(value)}`,
    );
  }
  return value;
}

/**
 * Turns `url` into the SDK endpoint `https://host[:port]/sdk`.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} for `url`. A URL with credentials is refused without echoing it.
 * @internal
 */
export function sdkUrlOf(value: unknown): URL {
  const text = requiredText(value, 'url', 'https://vcenter.example.com');
  let url: URL;
  try {
    url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `https://${text}`);
  } catch {
    throw new InvalidSettingsError('url', 'is not a URL; e.g. "https://vcenter.example.com"');
  }
  if (url.username !== '' || url.password !== '') {
    throw new InvalidSettingsError(
      'url',
      'must not contain a user name or password: use `username` and `password`',
    );
  }
  if (url.protocol !== 'https:') {
    throw new InvalidSettingsError(
      'url',
      `must be https:// (vCenter and ESXi serve the API on 443), got ${url.protocol}`,
    );
  }
  if (url.search !== '' || url.hash !== '') {
    throw new InvalidSettingsError('url', 'must not have a query or fragment');
  }
  const path = url.pathname.replace(/\/+$/, '');
  if (path !== '' && path !== '/sdk') {
    throw new InvalidSettingsError('url', `must name the host (and optionally /sdk), not the path ${path}`);
  }
  url.pathname = '/sdk';
  return url;
}

function nbdOptions(value: unknown): VmwareNbdOptions | undefined {
  if (value === undefined) return undefined;
  if (
    typeof value !== 'object' ||
    value === null ||
    typeof (value as VmwareNbdOptions).locate !== 'function'
  ) {
    throw new InvalidSettingsError('nbd', 'must be an object with a locate(disk) function');
  }
  return value as VmwareNbdOptions;
}

function connectionLimits(value: unknown): Required<VmwareConnectionLimits> {
  if (value === undefined) return { connectionsPerHost: 48, connectionsPerVcenter: 52 };
  if (typeof value !== 'object' || value === null) {
    throw new InvalidSettingsError(
      'limits',
      'must be an object: { connectionsPerHost?, connectionsPerVcenter? }',
    );
  }
  const limits = value as VmwareConnectionLimits;
  const connectionsPerVcenter = integer(
    limits.connectionsPerVcenter,
    'limits.connectionsPerVcenter',
    1,
    4096,
    52,
  );
  const connectionsPerHost = integer(
    limits.connectionsPerHost,
    'limits.connectionsPerHost',
    1,
    1024,
    Math.min(48, connectionsPerVcenter),
  );
  return { connectionsPerHost, connectionsPerVcenter };
}

/**
 * Validates the options.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming the field. The password is never part of a message.
 * @internal
 */
export function resolveVmwareOptions(options: VmwarePlatformOptions): ResolvedVmwareOptions {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidSettingsError('options', 'must be an object with id, url, username and password');
  }
  const id = requiredText(options.id, 'id', 'vcenter-prod');
  const transport = options.transport ?? 'nbd';
  if (transport !== 'nbd' && transport !== 'https') {
    throw new InvalidSettingsError('transport', `must be "nbd" or "https", got ${JSON.stringify(transport)}`);
  }
  const apiVersion = options.apiVersion ?? '6.7';
  if (typeof apiVersion !== 'string' || !/^\d+\.\d+(\.\d+){0,2}$/.test(apiVersion)) {
    throw new InvalidSettingsError(
      'apiVersion',
      `must be a vim25 version such as "7.0", got ${String(apiVersion)}`,
    );
  }
  return {
    id,
    sdkUrl: sdkUrlOf(options.url),
    username: requiredText(options.username, 'username', 'backup@vsphere.local'),
    password: requiredText(options.password, 'password', '', true),
    tls: resolveTls(options.tls),
    transport,
    nbd: nbdOptions(options.nbd),
    maxConcurrentReads: integer(options.maxConcurrentReads, 'maxConcurrentReads', 1, 32, 4),
    limits: connectionLimits(options.limits),
    httpTimeoutSeconds: integer(options.httpTimeoutSeconds, 'httpTimeoutSeconds', 1, 86_400, 600),
    pageSize: integer(options.pageSize, 'pageSize', 1, 10_000, 100),
    apiVersion,
    logger: options.logger,
  };
}
