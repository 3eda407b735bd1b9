import { type CallOptions, SourceProtocolError } from '@drkit/core';
import type { KeystoneClient } from './keystone-client.js';
import { checkPageSize, paginate } from './openstack-paging.js';

/** Where Cinder placed a volume: `os-vol-host-attr:host`, `host@backend#pool`. */
export interface CinderVolumeHost {
  /** The whole value, `node-1@ceph#ceph`. */
  readonly raw: string;
  /** The cinder-volume host, `node-1`. */
  readonly host: string;
  /** The backend (a section of cinder.conf's `enabled_backends`), `ceph`; undefined without `@`. */
  readonly backend: string | undefined;
  /** The backend's pool, undefined without `#` (for the RBD driver it is the backend name, not the Ceph pool). */
  readonly pool: string | undefined;
}

/** An attachment of a volume to a server. */
export interface CinderAttachment {
  readonly serverId: string;
  /** The device the server sees, `/dev/vda`; undefined when Cinder does not know it. */
  readonly device: string | undefined;
  readonly attachmentId: string | undefined;
}

/** A Cinder volume with what drkit needs of it. */
export interface CinderVolume {
  readonly id: string;
  readonly name: string;
  readonly projectId: string | undefined;
  /** Size in GiB, as Cinder counts it. */
  readonly sizeGiB: number;
  /** The volume type's name (`ceph`, `__DEFAULT__`); undefined when the volume has none. */
  readonly volumeType: string | undefined;
  /** Cinder sends it as the string `"true"` / `"false"`. */
  readonly bootable: boolean;
  /** `available`, `in-use`, ... */
  readonly status: string;
  /** Placement (admins only); undefined when Cinder does not say. */
  readonly host: CinderVolumeHost | undefined;
  readonly attachments: readonly CinderAttachment[];
}

/**
 * A pool of a Cinder backend as the scheduler reports it (`GET /scheduler-stats/get_pools?detail=true`, admins
 * only): which storage its volumes live on.
 */
export interface CinderBackendPool {
  /** `host@backend#pool`, the value volumes carry in `os-vol-host-attr:host`. */
  readonly name: string;
  /** `ceph` for Cinder's RBD driver; `iSCSI`, `NFS`, `FC`, ... for others; undefined when not reported. */
  readonly storageProtocol: string | undefined;
  readonly volumeBackendName: string | undefined;
  /**
   * For an RBD backend, the Ceph pool and cluster name of its `location_info`
   * (`cluster:conf:fsid:user:pool`); undefined otherwise.
   */
  readonly ceph: { readonly cluster: string; readonly fsid: string; readonly pool: string } | undefined;
}

/** Settings of {@link createCinderClient}. */
export interface CinderClientOptions {
  /** The session to call through. */
  readonly keystone: KeystoneClient;
  /** Volumes per page. Default 1000. */
  readonly pageSize?: number;
}

/** Options of {@link CinderClient.listVolumes}. */
export interface ListVolumesOptions extends CallOptions {
  /** List the volumes of every project (`all_tenants=1`; only admins get them). Default true. */
  readonly allProjects?: boolean;
}

/** Options of {@link CinderClient.getVolume}. */
export interface GetVolumeOptions extends CallOptions {
  readonly id: string;
}

/** Reads volumes from Cinder v3. */
export interface CinderClient {
  /**
   * Lists volumes with details (`GET /volumes/detail`), page by page.
   *
   * @throws {@link @drkit/core!SourceProtocolError} for a volume with a malformed field; the errors of
   * {@link KeystoneClient.request}.
   */
  listVolumes(options?: ListVolumesOptions): AsyncGenerator<CinderVolume>;
  /**
   * Reads one volume (`GET /volumes/{id}`).
   *
   * @throws {@link @drkit/core!NotFoundError} when it does not exist; the errors of {@link CinderClient.listVolumes}.
   */
  getVolume(options: GetVolumeOptions): Promise<CinderVolume>;
  /**
   * Lists the pools of every backend with their capabilities (`GET /scheduler-stats/get_pools?detail=true`).
   *
   * @throws {@link @drkit/core!PermissionError} for a user without the admin role (the API's default policy);
   * the errors of {@link KeystoneClient.request}.
   */
  listBackendPools(options?: CallOptions): Promise<CinderBackendPool[]>;
}

/**
 * Creates a Cinder v3 client on a Keystone session (catalog service type `volumev3`).
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming `pageSize`.
 * @example
 * ```ts
 * const cinder = createCinderClient({ keystone });
 * for await (const volume of cinder.listVolumes()) console.log(volume.id, volume.volumeType, volume.sizeGiB);
 * ```
 */
export function createCinderClient(options: CinderClientOptions): CinderClient {
  const pageSize = checkPageSize(options.pageSize, 'pageSize');
  const { keystone } = options;

  /** The endpoint's path prefix: the catalog URL names the project (`/v3/<project>`) or not (`/v3`). */
  async function prefix(call: CallOptions): Promise<string> {
    const token = await keystone.authenticate(call);
    const endpoint = await keystone.endpoint('volumev3', call);
    return /\/v3$/.test(endpoint) ? `/${token.projectId}` : '';
  }

  /** Only the call options of `options` (signal, deadline, logger). */
  function callOf(options: CallOptions): CallOptions {
    return {
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.deadline === undefined ? {} : { deadline: options.deadline }),
      ...(options.logger ? { logger: options.logger } : {}),
    };
  }

  return {
    async *listVolumes(listOptions: ListVolumesOptions = {}) {
      const call = callOf(listOptions);
      const items = paginate({
        keystone,
        serviceType: 'volumev3',
        serviceName: 'Cinder',
        path: `${await prefix(call)}/volumes/detail`,
        key: 'volumes',
        query: listOptions.allProjects === false ? {} : { all_tenants: '1' },
        pageSize,
        ...call,
      });
      for await (const item of items) yield parseVolume(item);
    },
    async getVolume(getOptions: GetVolumeOptions) {
      const { id } = getOptions;
      const call = callOf(getOptions);
      const body = await keystone.request({
        serviceType: 'volumev3',
        serviceName: 'Cinder',
        path: `${await prefix(call)}/volumes/${encodeURIComponent(id)}`,
        ...call,
      });
      const volume = body.volume as Record<string, unknown> | undefined;
      if (!volume || typeof volume.id !== 'string') {
        throw new SourceProtocolError(`Cinder GET /volumes/${id} answered without a volume`);
      }
      return parseVolume(volume);
    },
    async listBackendPools(callOptions: CallOptions = {}) {
      const call = callOf(callOptions);
      const body = await keystone.request({
        serviceType: 'volumev3',
        serviceName: 'Cinder',
        path: `${await prefix(call)}/scheduler-stats/get_pools?detail=true`,
        ...call,
      });
      const pools = body.pools;
      if (!Array.isArray(pools)) {
        throw new SourceProtocolError(
          'Cinder GET /scheduler-stats/get_pools answered without a "pools" list',
        );
      }
      return pools.flatMap((pool: unknown) => {
        const parsed = parseBackendPool(pool);
        return parsed ? [parsed] : [];
      });
    },
  };
}

/**
 * Reads one pool of `get_pools?detail=true`; undefined for an entry without a name.
 * @internal
 */
export function parseBackendPool(entry: unknown): CinderBackendPool | undefined {
  const pool = entry as { name?: unknown; capabilities?: unknown } | null;
  if (typeof pool?.name !== 'string' || pool.name === '') return undefined;
  const capabilities = (
    pool.capabilities && typeof pool.capabilities === 'object' ? pool.capabilities : {}
  ) as Record<string, unknown>;
  const text = (value: unknown) => (typeof value === 'string' && value !== '' ? value : undefined);
  const storageProtocol = text(capabilities.storage_protocol);
  let ceph: CinderBackendPool['ceph'];
  const location = text(capabilities.location_info);
  if (storageProtocol?.toLowerCase() === 'ceph' && location) {
    // Cinder's RBD driver: `cluster_name:ceph_conf:fsid:rbd_user:rbd_pool` (read from both ends: the conf path
    // could hold a colon).
    const parts = location.split(':');
    if (parts.length >= 5 && parts.at(-1) !== '') {
      ceph = { cluster: parts[0]!, fsid: parts.at(-3)!, pool: parts.at(-1)! };
    }
  }
  return {
    name: pool.name,
    storageProtocol,
    volumeBackendName: text(capabilities.volume_backend_name),
    ceph,
  };
}

/**
 * Parses `host@backend#pool`.
 * @internal
 */
export function parseVolumeHost(raw: string): CinderVolumeHost {
  const hash = raw.indexOf('#');
  const beforePool = hash < 0 ? raw : raw.slice(0, hash);
  const at = beforePool.indexOf('@');
  return {
    raw,
    host: at < 0 ? beforePool : beforePool.slice(0, at),
    backend: at < 0 ? undefined : beforePool.slice(at + 1),
    pool: hash < 0 ? undefined : raw.slice(hash + 1),
  };
}

/**
 * Reads one volume of `GET /volumes/detail`.
 *
 * @throws {@link @drkit/core!SourceProtocolError} when `size` is not a whole number or a field has the wrong type.
 * @internal
 */
export function parseVolume(item: Record<string, unknown>): CinderVolume {
  const id = item.id as string;
  const bad = (field: string) =>
    new SourceProtocolError(`Cinder listed volume ${id} with a malformed "${field}"`);
  const size = item.size;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw bad('size');
  const attachments = item.attachments ?? [];
  if (!Array.isArray(attachments)) throw bad('attachments');
  const host = item['os-vol-host-attr:host'];
  // `bootable` is a string ("true"/"false"); accept a boolean from clouds that fixed it.
  const bootable = item.bootable === true || (typeof item.bootable === 'string' && item.bootable === 'true');
  return {
    id,
    name: typeof item.name === 'string' ? item.name : '',
    projectId:
      typeof item['os-vol-tenant-attr:tenant_id'] === 'string'
        ? item['os-vol-tenant-attr:tenant_id']
        : undefined,
    sizeGiB: size,
    volumeType:
      typeof item.volume_type === 'string' && item.volume_type !== '' ? item.volume_type : undefined,
    bootable,
    status: typeof item.status === 'string' ? item.status : 'unknown',
    host: typeof host === 'string' && host !== '' ? parseVolumeHost(host) : undefined,
    attachments: attachments.map((entry: unknown): CinderAttachment => {
      const attachment = entry as { server_id?: unknown; device?: unknown; attachment_id?: unknown } | null;
      if (typeof attachment?.server_id !== 'string') throw bad('attachments');
      return {
        serverId: attachment.server_id,
        device:
          typeof attachment.device === 'string' && attachment.device !== '' ? attachment.device : undefined,
        attachmentId: typeof attachment.attachment_id === 'string' ? attachment.attachment_id : undefined,
      };
    }),
  };
}
