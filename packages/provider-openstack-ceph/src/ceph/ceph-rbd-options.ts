import { isIP } from 'node:net';
import { type CallOptions, InvalidSettingsError, type SkippedDisk } from '@drkit/core';
import { normalizeCephUser, parseCephKey } from './ceph-key.js';
import type { RbdConnection } from './rbd-command.js';

/**
 * How an incremental finds the changed data:
 * - `exact`: `rbd export-diff --from-snap` (the console's "rbd diff"): reads what changed, to the byte inside the
 *   extent each object had at the base and to within one object past it (a write past an object's end is reported
 *   from that end, zeros in between); slower on large images because librbd lists the changes object by object;
 * - `fast`: `rbd export-diff --whole-object --from-snap` (the console's "rbd du"): whole 4 MiB objects from the
 *   image's object map (fast-diff); a superset of the changes. When the object map is missing or invalid the
 *   read falls back to `exact` and says so.
 */
export type CephIncrementalMode = 'exact' | 'fast';

/** CephX credentials: the user and its key (the bare key or a whole keyring file). */
export interface CephxCredentials {
  /** Ceph user, with or without `client.` (`cinder`, `client.backup`). */
  readonly user: string;
  /**
   * The user's key as `ceph auth get-key client.USER` prints it (`AQBBY9hf...==`), or the whole keyring file
   * text (`[client.USER]\n\tkey = ...`). Never logged.
   */
  readonly keyring: string;
}

/** One Ceph cluster, as the console's "Ceph" table describes it. */
export interface CephClusterOptions {
  /** Name of this cluster in drkit (unique in the platform); used in disk ids and `cluster:pool/image` refs. */
  readonly name: string;
  /**
   * The monitors, comma separated: `10.0.0.201,10.0.0.202`, with ports (`10.0.0.201:6789`), msgr2/msgr1
   * addresses (`v2:10.0.0.201:3300,v1:10.0.0.201:6789` or `[v2:10.0.0.201:3300,v1:10.0.0.201:6789]`), host names,
   * or IPv6 in brackets (`[fd00::1]:6789`).
   */
  readonly monitors: string;
  /** CephX user and key, or `false` when the cluster runs with `auth_client_required = none`. */
  readonly cephx: CephxCredentials | false;
  /** The pool that holds the protected images (`volumes`). */
  readonly pool: string;
  /** How incrementals find changed data; see {@link CephIncrementalMode}. */
  readonly incrementalMode: CephIncrementalMode;
  /** Ceph's cluster name (`$cluster` in ceph.conf paths). Default `ceph`. */
  readonly cluster?: string;
  /** The OpenStack volume types whose volumes live in this cluster (used by the OpenStack platform). */
  readonly volumeTypes?: readonly string[];
  /**
   * Seconds to wait for the monitors (`--client-mount-timeout`) and for each monitor or OSD operation
   * (`--rados-mon-op-timeout`, `--rados-osd-op-timeout`). Whole seconds from 1 to 3600; default 30.
   */
  readonly timeoutSeconds?: number;
}

/** An RBD image: the cluster (the `name` of one of the platform's clusters), pool and image name. */
export interface CephImageRef {
  /** The `name` of a cluster in {@link CephRbdPlatformOptions.clusters}. */
  readonly cluster: string;
  readonly pool: string;
  readonly image: string;
}

/** One disk of a {@link CephHostDefinition}. */
export interface CephDiskDefinition {
  /** Stable disk id, recorded in recovery points (a Cinder volume id, `cluster/pool/image`). */
  readonly id: string;
  /** Human-readable name. */
  readonly name: string;
  /** Facts worth showing a user; drkit adds `ceph.cluster`, `ceph.pool`, `ceph.image`, `ceph.imageId`. */
  readonly attributes?: Readonly<Record<string, string>>;
  /** The RBD image that holds the disk. */
  readonly image: CephImageRef;
}

/** A host as a higher-level inventory (OpenStack's Nova and Cinder) describes it to the Ceph platform. */
export interface CephHostDefinition {
  /** Stable host id (a Nova server id). */
  readonly id: string;
  readonly name: string;
  readonly attributes?: Readonly<Record<string, string>>;
  /** The host's disks, each an RBD image, in the host's order. */
  readonly disks: readonly CephDiskDefinition[];
  /**
   * The host's disks the inventory already knows the platform cannot protect (a volume of another backend, a
   * Nova ephemeral root disk), each with its reason. The platform adds the disks whose image does not exist
   * (`backing-missing`) and reports them all in {@link @drkit/core!Host.skippedDisks}.
   */
  readonly skippedDisks?: readonly SkippedDisk[];
}

/** A host named in {@link CephRbdPlatformOptions.hosts}: a group of images snapshotted together. */
export interface CephHostOptions {
  /** Stable id. Default: the name. */
  readonly id?: string;
  /** Human-readable name. */
  readonly name: string;
  /**
   * The host's images: `pool/image`, or `clusterName:pool/image` (required when the platform has several
   * clusters). Disk ids are `clusterName/pool/image`.
   */
  readonly images: readonly string[];
}

/** Settings of {@link createCephRbdPlatform}. */
export interface CephRbdPlatformOptions {
  /**
   * Identity of the platform, unique among the platforms of one engine, chosen by you (`ceph-prod`): recovery
   * points are filed under it, so changing it restarts every disk's history. Required; never derived from the
   * cluster names, which may change.
   */
  readonly id: string;
  /** The platform's `kind`. Default `ceph-rbd` (the OpenStack platform sets `openstack-ceph`). */
  readonly kind?: string;
  /** The Ceph clusters, at least one; names must be unique. */
  readonly clusters: readonly CephClusterOptions[];
  /**
   * Hosts as named groups of images. Default (and without `listHosts`): one host per image of each cluster's
   * pool, with id and disk id `clusterName/pool/image`.
   */
  readonly hosts?: readonly CephHostOptions[];
  /**
   * Lists the hosts from another inventory (OpenStack builds on this): each disk names its image, and a host may
   * name the disks it already knows cannot be protected (`skippedDisks`). Not together with `hosts`. Capacities
   * are read from Ceph; a disk whose image does not exist is reported in the host's `skippedDisks`
   * (`backing-missing`). It gets the call's `signal` (which also carries the call's `deadline`) and `logger`.
   */
  readonly listHosts?: (
    options: Pick<CallOptions, 'signal' | 'logger'>,
  ) => AsyncIterable<CephHostDefinition> | Iterable<CephHostDefinition>;
  /** The rbd command. Default `rbd` (from the `ceph-common` package), found on `PATH`. */
  readonly rbdPath?: string;
}

/** A cluster after validation. @internal */
export interface ResolvedCluster {
  readonly name: string;
  readonly cluster: string;
  readonly monitors: string;
  readonly pool: string;
  readonly incrementalMode: CephIncrementalMode;
  readonly volumeTypes: readonly string[];
  readonly connection: RbdConnection;
}

/** The options after validation. @internal */
export interface ResolvedOptions {
  readonly id: string;
  readonly kind: string;
  readonly clusters: ReadonlyMap<string, ResolvedCluster>;
  readonly hosts: readonly CephHostDefinition[] | undefined;
  readonly listHosts: CephRbdPlatformOptions['listHosts'];
}

const NAME_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const CEPH_CLUSTER_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$/;
const POOL_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$/;
const IMAGE_PATTERN = /^[^\s/@\-\\][^\s/@\\]{0,4095}$/;
const HOSTNAME_PATTERN =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** Whether a pool name is one the platform accepts. @internal */
export function isValidPoolName(pool: string): boolean {
  return POOL_PATTERN.test(pool);
}

/** Whether an image name is one the platform accepts (no `/`, `@`, spaces; not starting with `-`). @internal */
export function isValidImageName(image: string): boolean {
  return IMAGE_PATTERN.test(image);
}

/**
 * Parses the monitors field into ceph.conf's `mon host`.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming `field` for an empty list or a malformed address.
 * @internal
 */
export function parseMonitors(input: unknown, field: string): { monHost: string; ipv6: boolean } {
  if (typeof input !== 'string' || input.trim() === '') {
    throw new InvalidSettingsError(
      field,
      'list the Ceph monitors, comma separated, e.g. "10.0.0.201,10.0.0.202"',
    );
  }
  const entries: string[] = [];
  let depth = 0;
  let current = '';
  for (const char of input.trim()) {
    if (char === '[') depth++;
    if (char === ']') depth--;
    if (depth < 0 || depth > 2) throw new InvalidSettingsError(field, `unbalanced brackets in "${input}"`);
    if ((char === ',' || char === ' ' || char === ';') && depth === 0) {
      if (current.trim() !== '') entries.push(current.trim());
      current = '';
    } else {
      current += char;
    }
  }
  if (depth !== 0) throw new InvalidSettingsError(field, `unbalanced brackets in "${input}"`);
  if (current.trim() !== '') entries.push(current.trim());
  if (entries.length === 0) throw new InvalidSettingsError(field, 'list at least one monitor');
  let ipv6 = false;
  const check = (address: string, requirePrefix: boolean): void => {
    const prefixed = /^v[12]:/.exec(address);
    if (requirePrefix && !prefixed) {
      throw new InvalidSettingsError(
        field,
        `"${address}": inside [...] every address starts with v1: or v2:`,
      );
    }
    const hostPort = prefixed ? address.slice(3) : address;
    const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(hostPort);
    const plain = /^([^:[\]]+)(?::(\d+))?$/.exec(hostPort);
    const host = bracketed?.[1] ?? plain?.[1];
    const port = bracketed ? bracketed[2] : plain?.[2];
    if (host === undefined) {
      throw new InvalidSettingsError(
        field,
        `"${address}" is not a monitor address: use host, host:port, v2:host:port, or [IPv6]:port`,
      );
    }
    const family = isIP(host);
    if (bracketed && family !== 6) {
      throw new InvalidSettingsError(field, `"${address}": only IPv6 addresses go in brackets`);
    }
    if (family === 6) ipv6 = true;
    if (family === 0 && !HOSTNAME_PATTERN.test(host)) {
      throw new InvalidSettingsError(
        field,
        `"${address}": "${host}" is neither an IP address nor a host name`,
      );
    }
    if (port !== undefined) {
      const number = Number(port);
      if (!Number.isInteger(number) || number < 1 || number > 65535) {
        throw new InvalidSettingsError(field, `"${address}": port ${port} is out of range (1-65535)`);
      }
    }
  };
  for (const entry of entries) {
    const vector = /^\[(v[12]:.*)\]$/.exec(entry);
    if (vector) {
      for (const address of vector[1]!.split(',')) check(address.trim(), true);
    } else {
      check(entry, false);
    }
  }
  return { monHost: entries.join(','), ipv6 };
}

function requireName(value: unknown, field: string, pattern: RegExp, example: string): string {
  if (typeof value !== 'string' || !pattern.test(value)) {
    throw new InvalidSettingsError(
      field,
      `${value === undefined ? 'is required' : `"${String(value)}" is not valid`}: letters, digits, "_", "." ` +
        `and "-", e.g. "${example}"`,
    );
  }
  return value;
}

function optionalText(value: unknown, field: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.trim() === '') {
    throw new InvalidSettingsError(field, 'must be a non-empty string when given');
  }
  return value;
}

/**
 * Parses `pool/image` or `clusterName:pool/image`.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming `field`.
 * @internal
 */
export function parseImageSpec(
  spec: unknown,
  field: string,
  clusters: ReadonlyMap<string, ResolvedCluster>,
): CephImageRef {
  if (typeof spec !== 'string') {
    throw new InvalidSettingsError(field, 'name an image as "pool/image" or "cluster:pool/image"');
  }
  const match = /^(?:([^:/]+):)?([^/]+)\/([^/]+)$/.exec(spec);
  if (!match) {
    throw new InvalidSettingsError(field, `"${spec}" is not "pool/image" or "cluster:pool/image"`);
  }
  let cluster = match[1];
  if (cluster === undefined) {
    if (clusters.size !== 1) {
      throw new InvalidSettingsError(
        field,
        `"${spec}": the platform has ${clusters.size} clusters, say which one: "${[...clusters.keys()][0]}:${spec}"`,
      );
    }
    cluster = [...clusters.keys()][0]!;
  }
  if (!clusters.has(cluster)) {
    throw new InvalidSettingsError(
      field,
      `"${spec}": no cluster is named "${cluster}" (clusters: ${[...clusters.keys()].join(', ')})`,
    );
  }
  const pool = match[2]!;
  const image = match[3]!;
  if (!isValidPoolName(pool)) throw new InvalidSettingsError(field, `"${pool}" is not a valid pool name`);
  if (!isValidImageName(image)) throw new InvalidSettingsError(field, `"${image}" is not a valid image name`);
  return { cluster, pool, image };
}

/** The default disk id of an image: `clusterName/pool/image`. @internal */
export function defaultDiskId(ref: CephImageRef): string {
  return `${ref.cluster}/${ref.pool}/${ref.image}`;
}

/**
 * Validates the platform's options at the boundary.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming the field (`clusters[1].monitors`).
 * @internal
 */
export function resolveCephRbdOptions(options: CephRbdPlatformOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidSettingsError(
      'options',
      'pass an object with at least `clusters: [{ name, monitors, ... }]`',
    );
  }
  const rbdPath = optionalText(options.rbdPath, 'rbdPath') ?? 'rbd';
  const rawClusters: unknown = options.clusters;
  if (!Array.isArray(rawClusters) || rawClusters.length === 0) {
    throw new InvalidSettingsError(
      'clusters',
      'list at least one Ceph cluster: `clusters: [{ name, monitors, cephx, pool, incrementalMode }]`',
    );
  }
  const clusters = new Map<string, ResolvedCluster>();
  rawClusters.forEach((entry: unknown, index) => {
    const at = `clusters[${index}]`;
    if (typeof entry !== 'object' || entry === null) {
      throw new InvalidSettingsError(
        at,
        'must be an object `{ name, monitors, cephx, pool, incrementalMode }`',
      );
    }
    const raw = entry as Partial<Record<keyof CephClusterOptions, unknown>>;
    const name = requireName(raw.name, `${at}.name`, NAME_PATTERN, 'ceph-1');
    if (clusters.has(name)) throw new InvalidSettingsError(`${at}.name`, `duplicate cluster name "${name}"`);
    const { monHost, ipv6 } = parseMonitors(raw.monitors, `${at}.monitors`);
    const pool = raw.pool;
    if (typeof pool !== 'string' || !isValidPoolName(pool)) {
      throw new InvalidSettingsError(
        `${at}.pool`,
        `${pool === undefined ? 'is required' : `"${String(pool)}" is not a valid pool name`}: the pool that ` +
          'holds the protected images, e.g. "volumes" (`ceph osd pool ls`)',
      );
    }
    if (raw.incrementalMode !== 'exact' && raw.incrementalMode !== 'fast') {
      throw new InvalidSettingsError(
        `${at}.incrementalMode`,
        `must be "exact" (rbd diff: accurate, slower) or "fast" (whole objects from the object map: coarser), ` +
          `got ${JSON.stringify(raw.incrementalMode)}`,
      );
    }
    const cluster =
      raw.cluster === undefined
        ? 'ceph'
        : requireName(raw.cluster, `${at}.cluster`, CEPH_CLUSTER_PATTERN, 'ceph');
    let volumeTypes: string[] = [];
    if (raw.volumeTypes !== undefined) {
      if (!Array.isArray(raw.volumeTypes)) {
        throw new InvalidSettingsError(`${at}.volumeTypes`, 'must be a list of volume type names');
      }
      volumeTypes = raw.volumeTypes.map((type: unknown, i) => {
        if (typeof type !== 'string' || type.trim() === '') {
          throw new InvalidSettingsError(`${at}.volumeTypes[${i}]`, 'must be a non-empty volume type name');
        }
        return type.trim();
      });
    }
    const timeoutSeconds = raw.timeoutSeconds ?? 30;
    if (
      typeof timeoutSeconds !== 'number' ||
      !Number.isInteger(timeoutSeconds) ||
      timeoutSeconds < 1 ||
      timeoutSeconds > 3600
    ) {
      throw new InvalidSettingsError(
        `${at}.timeoutSeconds`,
        `must be a whole number of seconds from 1 to 3600, got ${String(timeoutSeconds)}`,
      );
    }
    let auth: RbdConnection['auth'];
    if (raw.cephx === false) {
      auth = false;
    } else if (typeof raw.cephx === 'object' && raw.cephx !== null) {
      const cephx = raw.cephx as Partial<Record<keyof CephxCredentials, unknown>>;
      const user = normalizeCephUser(cephx.user, `${at}.cephx.user`);
      auth = { user, key: parseCephKey(cephx.keyring, user, `${at}.cephx.keyring`) };
    } else {
      throw new InvalidSettingsError(
        `${at}.cephx`,
        'must be `{ user, keyring }` when CephX is on (the default of Ceph), or `false` when it is off',
      );
    }
    clusters.set(name, {
      name,
      cluster,
      monitors: monHost,
      pool,
      incrementalMode: raw.incrementalMode,
      volumeTypes,
      connection: { name, cluster, monHost, ipv6, auth, pool, timeoutSeconds, rbdPath },
    });
  });

  const id = requirePlatformId(options.id);
  const kind = optionalText(options.kind, 'kind') ?? 'ceph-rbd';
  if (options.listHosts !== undefined && typeof options.listHosts !== 'function') {
    throw new InvalidSettingsError('listHosts', 'must be a function returning an async iterable of hosts');
  }
  if (options.listHosts !== undefined && options.hosts !== undefined) {
    throw new InvalidSettingsError('hosts', 'give either `hosts` or `listHosts`, not both');
  }
  let hosts: CephHostDefinition[] | undefined;
  if (options.hosts !== undefined) {
    const rawHosts: unknown = options.hosts;
    if (!Array.isArray(rawHosts) || rawHosts.length === 0) {
      throw new InvalidSettingsError(
        'hosts',
        'list at least one host `{ name, images: ["pool/image"] }`, or leave it out for one host per image',
      );
    }
    const hostIds = new Map<string, string>();
    const imageFields = new Map<string, string>();
    hosts = rawHosts.map((entry: unknown, index) => {
      const at = `hosts[${index}]`;
      if (typeof entry !== 'object' || entry === null) {
        throw new InvalidSettingsError(at, 'must be an object `{ name, images: ["pool/image"] }`');
      }
      const raw = entry as Partial<Record<keyof CephHostOptions, unknown>>;
      const name = optionalText(raw.name, `${at}.name`);
      if (name === undefined) throw new InvalidSettingsError(`${at}.name`, 'is required');
      const hostId = optionalText(raw.id, `${at}.id`) ?? name;
      const previous = hostIds.get(hostId);
      if (previous) {
        throw new InvalidSettingsError(`${at}.id`, `duplicate host id "${hostId}" (also ${previous})`);
      }
      hostIds.set(hostId, at);
      if (!Array.isArray(raw.images) || raw.images.length === 0) {
        throw new InvalidSettingsError(
          `${at}.images`,
          'list at least one image, e.g. ["volumes/vm-100-disk-0"]',
        );
      }
      const disks = raw.images.map((spec: unknown, i): CephDiskDefinition => {
        const field = `${at}.images[${i}]`;
        const image = parseImageSpec(spec, field, clusters);
        const diskId = defaultDiskId(image);
        const other = imageFields.get(diskId);
        if (other) {
          throw new InvalidSettingsError(field, `image ${diskId} is already listed at ${other}`);
        }
        imageFields.set(diskId, field);
        return { id: diskId, name: image.image, image };
      });
      return { id: hostId, name, disks };
    });
  }
  return { id, kind, clusters, hosts, listHosts: options.listHosts };
}

/**
 * Checks the platform's `id`: required, a non-empty string without surrounding whitespace.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming `id`.
 * @internal
 */
export function requirePlatformId(value: unknown): string {
  if (value === undefined || value === null) {
    throw new InvalidSettingsError(
      'id',
      'is required: a stable name you choose for this platform, unique in the engine (e.g. "ceph-prod"); ' +
        'points are filed under it, so it must not change when an address or a cluster name does',
    );
  }
  if (typeof value !== 'string' || value.trim() === '') {
    throw new InvalidSettingsError('id', 'must be a non-empty string, e.g. "ceph-prod"');
  }
  if (value.trim() !== value) {
    throw new InvalidSettingsError(
      'id',
      `must not start or end with whitespace, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}
