import { type CallOptions, SourceProtocolError } from '@drkit/core';
import type { KeystoneClient } from './keystone-client.js';
import { checkPageSize, paginate } from './openstack-paging.js';

/**
 * The compute API microversion drkit asks for: 2.47 (Pike) embeds the flavor in each server, and every cloud
 * since 2017 serves it.
 */
export const NOVA_MICROVERSION = '2.47';

/** A volume attached to a server, as Nova lists it (`os-extended-volumes:volumes_attached`). */
export interface NovaAttachedVolume {
  /** The Cinder volume id. */
  readonly id: string;
  readonly deleteOnTermination: boolean | undefined;
}

/** The flavor of a server (embedded since microversion 2.47). */
export interface NovaFlavor {
  /** The flavor's name when the server was created. */
  readonly name: string | undefined;
  readonly vcpus: number | undefined;
  readonly ramMiB: number | undefined;
  readonly diskGiB: number | undefined;
}

/** A Nova server with what drkit needs of it. */
export interface NovaServer {
  readonly id: string;
  readonly name: string;
  /** The project (tenant) that owns the server. */
  readonly projectId: string;
  /** `ACTIVE`, `SHUTOFF`, `ERROR`, ... */
  readonly status: string;
  readonly flavor: NovaFlavor;
  /** Attached Cinder volumes, in Nova's order. */
  readonly attachedVolumes: readonly NovaAttachedVolume[];
  /** The image id when booted from an image (its root disk is then Nova's, not a volume); else undefined. */
  readonly imageId: string | undefined;
  readonly availabilityZone: string | undefined;
  /** The compute host (admins only). */
  readonly computeHost: string | undefined;
}

/** Settings of {@link createNovaClient}. */
export interface NovaClientOptions {
  /** The session to call through. */
  readonly keystone: KeystoneClient;
  /** Servers per page. Default 1000. */
  readonly pageSize?: number;
}

/** Options of {@link NovaClient.listServers}. */
export interface ListServersOptions extends CallOptions {
  /** List the servers of every project (`all_tenants=1`; needs the admin role or a policy that allows it). Default true. */
  readonly allProjects?: boolean;
}

/** Reads servers from Nova. */
export interface NovaClient {
  /**
   * Lists servers with details (`GET /servers/detail`), page by page.
   *
   * @throws {@link @drkit/core!PermissionError} when the user may not list all projects' servers;
   * {@link @drkit/core!SourceProtocolError} for a server without an id or with a malformed field; the errors of
   * {@link KeystoneClient.request}.
   */
  listServers(options?: ListServersOptions): AsyncGenerator<NovaServer>;
}

/**
 * Creates a Nova client on a Keystone session: servers of all projects with their attached volumes and flavor,
 * compute microversion {@link NOVA_MICROVERSION}.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming `pageSize`.
 * @example
 * ```ts
 * const nova = createNovaClient({ keystone });
 * for await (const server of nova.listServers()) console.log(server.name, server.attachedVolumes.length);
 * ```
 */
export function createNovaClient(options: NovaClientOptions): NovaClient {
  const pageSize = checkPageSize(options.pageSize, 'pageSize');
  const { keystone } = options;
  return {
    async *listServers(listOptions: ListServersOptions = {}) {
      const items = paginate({
        keystone,
        serviceType: 'compute',
        serviceName: 'Nova',
        path: '/servers/detail',
        key: 'servers',
        query: listOptions.allProjects === false ? {} : { all_tenants: '1' },
        headers: {
          'openstack-api-version': `compute ${NOVA_MICROVERSION}`,
          'x-openstack-nova-api-version': NOVA_MICROVERSION,
        },
        pageSize,
        signal: listOptions.signal,
        deadline: listOptions.deadline,
        logger: listOptions.logger,
      });
      for await (const item of items) yield parseServer(item);
    },
  };
}

function optionalString(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function optionalNumber(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

/**
 * Reads one server of `GET /servers/detail`.
 *
 * @throws {@link @drkit/core!SourceProtocolError} when a field has the wrong type.
 * @internal
 */
export function parseServer(item: Record<string, unknown>): NovaServer {
  const id = item.id as string;
  const bad = (field: string) =>
    new SourceProtocolError(`Nova listed server ${id} with a malformed "${field}"`);
  const attached = item['os-extended-volumes:volumes_attached'] ?? [];
  if (!Array.isArray(attached)) throw bad('os-extended-volumes:volumes_attached');
  const attachedVolumes = attached.map((entry: unknown): NovaAttachedVolume => {
    const volume = entry as { id?: unknown; delete_on_termination?: unknown } | null;
    if (typeof volume?.id !== 'string' || volume.id === '') throw bad('os-extended-volumes:volumes_attached');
    const flag = volume.delete_on_termination;
    return { id: volume.id, deleteOnTermination: typeof flag === 'boolean' ? flag : undefined };
  });
  const flavor = (item.flavor ?? {}) as Record<string, unknown>;
  // The image is "" (or absent) for a server booted from a volume, an object `{ id }` otherwise.
  const image = item.image as { id?: unknown } | string | null | undefined;
  return {
    id,
    name: typeof item.name === 'string' ? item.name : '',
    projectId: optionalString(item.tenant_id) ?? optionalString(item.project_id) ?? '',
    status: optionalString(item.status) ?? 'UNKNOWN',
    flavor: {
      name: optionalString(flavor.original_name) ?? optionalString(flavor.name) ?? optionalString(flavor.id),
      vcpus: optionalNumber(flavor.vcpus),
      ramMiB: optionalNumber(flavor.ram),
      diskGiB: optionalNumber(flavor.disk),
    },
    attachedVolumes,
    imageId: image && typeof image === 'object' ? optionalString(image.id) : undefined,
    availabilityZone: optionalString(item['OS-EXT-AZ:availability_zone']),
    computeHost: optionalString(item['OS-EXT-SRV-ATTR:host']),
  };
}
