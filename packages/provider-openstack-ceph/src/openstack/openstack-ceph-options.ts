import { InvalidSettingsError } from '@drkit/core';
import type { CephClusterOptions } from '../ceph/ceph-rbd-options.js';
import { type KeystoneCredentials, normalizeAuthUrl, type OpenStackInterface } from './keystone-client.js';
import { checkPageSize } from './openstack-paging.js';

/** The console's OpenStack table, plus transport settings. */
export interface OpenStackConnectionOptions extends KeystoneCredentials {
  /**
   * PEM certificates trusted in addition to Node's bundled roots, for endpoints signed by a private CA (one string
   * with one or more certificates, or a list). TLS is always verified.
   */
  readonly caCertificates?: string | readonly string[];
  /** Servers and volumes per page of Nova's and Cinder's lists. Default 1000. */
  readonly pageSize?: number;
  /** Re-authenticate this long before the token expires. Default 300, or half the token's lifetime if shorter. */
  readonly renewBeforeSeconds?: number;
}

/** Settings of {@link createOpenStackCephPlatform}. */
export interface OpenStackCephPlatformOptions {
  /**
   * Identity of the platform, unique among the platforms of one engine, chosen by you (`openstack-prod`):
   * recovery points are filed under it, so changing it restarts every disk's history. Required; never derived
   * from the Keystone URL, which may change.
   */
  readonly id: string;
  /** Keystone v3 credentials, region and interface of the endpoints. */
  readonly openstack: OpenStackConnectionOptions;
  /**
   * The Ceph clusters behind Cinder, at least one (the console's Ceph table, repeated per cluster). A volume
   * belongs to the cluster whose `volumeTypes` lists its volume type; a cluster without `volumeTypes` takes the
   * types no other cluster lists.
   */
  readonly ceph: readonly CephClusterOptions[];
  /**
   * The Sync Proxy's HTTP timeout for Keystone, Nova and Cinder: no answer for this long fails the request.
   * Whole seconds from 1 to 86400; default 600.
   */
  readonly httpTimeoutSeconds?: number;
  /** The rbd command. Default `rbd` on `PATH` (package `ceph-common`). */
  readonly rbdPath?: string;
}

/** The OpenStack options after validation. @internal */
export interface ResolvedOpenStackOptions extends KeystoneCredentials {
  readonly interface: OpenStackInterface;
  readonly caCertificates: readonly string[] | undefined;
  readonly pageSize: number;
  readonly renewBeforeSeconds: number | undefined;
  readonly httpTimeoutSeconds: number;
}

const INTERFACES: readonly OpenStackInterface[] = ['public', 'internal', 'admin'];

function requiredText(value: unknown, field: string, example: string, secret = false): string {
  if (typeof value !== 'string' || value.trim() === '') {
    throw new InvalidSettingsError(
      field,
      value === undefined
        ? `is required, e.g. ${secret ? "the user's password" : `"${example}"`}`
        : `must be a non-empty string${secret ? '' : `, e.g. "${example}"`}`,
    );
  }
  return secret ? value : value.trim();
}

function wholeSeconds(value: unknown, field: string, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidSettingsError(
      field,
      `must be a whole number of seconds from ${min} to ${max}, got ${String(value)}`,
    );
  }
  return value;
}

/**
 * Validates the OpenStack half of the options (the Ceph half is validated by the Ceph platform).
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming the field (`openstack.authUrl`). The password is never
 * part of a message.
 * @internal
 */
export function resolveOpenStackOptions(options: OpenStackCephPlatformOptions): ResolvedOpenStackOptions {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidSettingsError(
      'options',
      'pass an object `{ openstack: { authUrl, ... }, ceph: [{ ... }] }`',
    );
  }
  const raw = options.openstack as Partial<Record<keyof OpenStackConnectionOptions, unknown>> | undefined;
  if (typeof raw !== 'object' || raw === null) {
    throw new InvalidSettingsError(
      'openstack',
      'is required: `{ authUrl, userDomainId, username, password, projectDomainId, projectName, regionName }`',
    );
  }
  const authUrl = normalizeAuthUrl(raw.authUrl, 'openstack.authUrl');
  const userDomainId = requiredText(raw.userDomainId, 'openstack.userDomainId', 'default');
  const username = requiredText(raw.username, 'openstack.username', 'admin');
  const password = requiredText(raw.password, 'openstack.password', '', true);
  const projectDomainId = requiredText(raw.projectDomainId, 'openstack.projectDomainId', 'default');
  const projectName = requiredText(raw.projectName, 'openstack.projectName', 'admin');
  const regionName = requiredText(raw.regionName, 'openstack.regionName', 'RegionOne');
  const iface = raw.interface ?? 'public';
  if (typeof iface !== 'string' || !(INTERFACES as readonly string[]).includes(iface)) {
    throw new InvalidSettingsError(
      'openstack.interface',
      `must be "public", "internal" or "admin", got ${JSON.stringify(iface)}`,
    );
  }
  let caCertificates: string[] | undefined;
  if (raw.caCertificates !== undefined) {
    const list: unknown[] = Array.isArray(raw.caCertificates) ? raw.caCertificates : [raw.caCertificates];
    caCertificates = list.map((pem, index) => {
      const field = Array.isArray(raw.caCertificates)
        ? `openstack.caCertificates[${index}]`
        : 'openstack.caCertificates';
      if (typeof pem !== 'string' || !pem.includes('-----BEGIN CERTIFICATE-----')) {
        throw new InvalidSettingsError(
          field,
          'must be PEM text ("-----BEGIN CERTIFICATE-----..."), e.g. the content of the CA bundle file',
        );
      }
      return pem;
    });
    if (caCertificates.length === 0) {
      throw new InvalidSettingsError(
        'openstack.caCertificates',
        'list at least one certificate, or leave it out',
      );
    }
  }
  const pageSize = checkPageSize(raw.pageSize, 'openstack.pageSize');
  const renewBeforeSeconds = wholeSeconds(
    raw.renewBeforeSeconds,
    'openstack.renewBeforeSeconds',
    0,
    86_400,
    300,
  );
  const httpTimeoutSeconds = wholeSeconds(options.httpTimeoutSeconds, 'httpTimeoutSeconds', 1, 86_400, 600);
  return {
    authUrl,
    userDomainId,
    username,
    password,
    projectDomainId,
    projectName,
    regionName,
    interface: iface as OpenStackInterface,
    caCertificates,
    pageSize,
    renewBeforeSeconds,
    httpTimeoutSeconds,
  };
}

/**
 * Checks what the Ceph platform cannot: the `ceph` list itself, and that no volume type is listed by two
 * clusters (a volume would belong to both).
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming the field (`ceph[1].volumeTypes`).
 * @internal
 */
export function checkCephList(ceph: unknown): void {
  if (!Array.isArray(ceph) || ceph.length === 0) {
    throw new InvalidSettingsError(
      'ceph',
      'list at least one Ceph cluster: `ceph: [{ name, monitors, cephx, pool, incrementalMode }]`',
    );
  }
  const owner = new Map<string, number>();
  ceph.forEach((cluster: unknown, index) => {
    const types = (cluster as { volumeTypes?: unknown } | null)?.volumeTypes;
    if (!Array.isArray(types)) return;
    for (const type of types) {
      if (typeof type !== 'string') continue;
      const other = owner.get(type.trim());
      if (other !== undefined && other !== index) {
        throw new InvalidSettingsError(
          `ceph[${index}].volumeTypes`,
          `volume type "${type}" is already listed by ceph[${other}]: a type belongs to one cluster`,
        );
      }
      owner.set(type.trim(), index);
    }
  });
}

/**
 * Runs the Ceph platform's validation and renames its fields from `clusters[i]` to `ceph[i]`, the name of the
 * option here.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming `ceph[i]...`.
 * @internal
 */
export function withCephFieldNames<T>(create: () => T): T {
  try {
    return create();
  } catch (error) {
    if (InvalidSettingsError.isInstance(error) && /^clusters(\[|\.|$)/.test(error.field)) {
      const field = error.field.replace(/^clusters/, 'ceph');
      const message = error.message.startsWith(`${error.field}: `)
        ? error.message.slice(error.field.length + 2)
        : error.message;
      throw new InvalidSettingsError(field, message.replaceAll('clusters[', 'ceph['));
    }
    throw error;
  }
}
