import { type CallOptions, InvalidSettingsError, SourceProtocolError } from '@drkit/core';
import type { KeystoneClient } from './keystone-client.js';

/** The largest page most clouds serve (Nova's and Cinder's default `max_limit` is 1000). @internal */
export const DEFAULT_PAGE_SIZE = 1000;

/**
 * Checks a page size option.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming `field`.
 * @internal
 */
export function checkPageSize(value: unknown, field: string): number {
  if (value === undefined) return DEFAULT_PAGE_SIZE;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 10_000) {
    throw new InvalidSettingsError(field, `must be a whole number from 1 to 10000, got ${String(value)}`);
  }
  return value;
}

/** One paginated collection of an OpenStack API (`servers`, `volumes`). @internal */
export interface PagedCollection {
  readonly keystone: KeystoneClient;
  readonly serviceType: string;
  readonly serviceName: string;
  /** `/servers/detail`, `/volumes/detail`. */
  readonly path: string;
  /** The list's key in the body: `servers`, `volumes`. */
  readonly key: string;
  /** Query parameters besides `limit` and `marker`. */
  readonly query: Readonly<Record<string, string>>;
  readonly headers?: Readonly<Record<string, string>>;
  readonly pageSize: number;
  readonly signal?: AbortSignal | undefined;
  /** When the whole listing must be over (every page), as {@link @drkit/core!CallOptions.deadline}. */
  readonly deadline?: number | undefined;
  readonly logger?: CallOptions['logger'];
}

/**
 * Yields the raw items of a collection page by page, with `limit` and `marker` (the id of the last item of the
 * previous page), until a page has no `next` link. Our own base URL is used for every page rather than the
 * `next` href, which names the host as the service sees itself (often not reachable from the proxy).
 *
 * @throws {@link @drkit/core!SourceProtocolError} for a page that is not a list, an item without an id, or a
 * `next` link that would repeat a page; the errors of {@link KeystoneClient.request}.
 * @internal
 */
export async function* paginate(collection: PagedCollection): AsyncGenerator<Record<string, unknown>> {
  const seenMarkers = new Set<string>();
  let marker: string | undefined;
  for (;;) {
    const query = new URLSearchParams({ ...collection.query, limit: String(collection.pageSize) });
    if (marker !== undefined) query.set('marker', marker);
    const body = await collection.keystone.request({
      serviceType: collection.serviceType,
      serviceName: collection.serviceName,
      path: `${collection.path}?${query.toString()}`,
      ...(collection.headers ? { headers: collection.headers } : {}),
      ...(collection.signal ? { signal: collection.signal } : {}),
      ...(collection.deadline === undefined ? {} : { deadline: collection.deadline }),
      ...(collection.logger ? { logger: collection.logger } : {}),
    });
    const items = body[collection.key];
    if (!Array.isArray(items)) {
      throw new SourceProtocolError(
        `${collection.serviceName} GET ${collection.path} answered without a "${collection.key}" list`,
      );
    }
    let last: string | undefined;
    for (const item of items) {
      if (item === null || typeof item !== 'object' || typeof (item as { id?: unknown }).id !== 'string') {
        throw new SourceProtocolError(
          `${collection.serviceName} GET ${collection.path} listed an item without an id`,
        );
      }
      last = (item as { id: string }).id;
      yield item as Record<string, unknown>;
    }
    const links = body[`${collection.key}_links`];
    const hasNext =
      Array.isArray(links) && links.some((link) => (link as { rel?: unknown } | null)?.rel === 'next');
    if (!hasNext || last === undefined) return;
    if (seenMarkers.has(last)) {
      throw new SourceProtocolError(
        `${collection.serviceName} GET ${collection.path} sent the page after marker ${last} twice: stopping ` +
          'rather than looping',
      );
    }
    seenMarkers.add(last);
    marker = last;
  }
}
