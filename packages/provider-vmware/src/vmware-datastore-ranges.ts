import {
  AuthenticationError,
  type CallOptions,
  type DrkitError,
  NotFoundError,
  PermissionError,
  SourceProtocolError,
  ThrottledError,
  TimeoutError,
  UnreachableError,
} from '@drkit/core';
import { SESSION_COOKIE, type VimSoapClient } from './soap/vim-soap-client.js';
import type { ManagedObjectReference } from './soap/xml-writer.js';
import { objectSpec, retrieveObjects } from './vmware-property-collector.js';
import { readRef, type ServiceContent, type VmwareSession } from './vmware-session.js';

/** A disk's data file on a datastore, as the HTTPS file service names it. @internal */
export interface DatastoreFlatFile {
  /** The datastore's name (`dsName`). */
  readonly datastore: string;
  /** The file of the disk's data, relative to the datastore: `vm-1/disk1-flat.vmdk`. */
  readonly path: string;
}

/**
 * The `-flat.vmdk` holding the data of the VMDK `[datastore] folder/disk.vmdk` (the descriptor names it; for a flat
 * disk it is always `<disk>-flat.vmdk`). Undefined, with the reason, for what HTTPS ranges cannot read: a delta
 * disk of a snapshot chain (`disk-000001.vmdk`, whose data is a sparse `-delta.vmdk` or `-sesparse.vmdk` holding
 * only the grains written since its parent) or a path without a datastore.
 * @internal
 */
export function flatFileOf(
  fileName: string | undefined,
): { readonly file: DatastoreFlatFile } | { readonly problem: string } {
  const match = fileName === undefined ? null : /^\[([^\]]+)\]\s*(.+\.vmdk)$/.exec(fileName);
  if (!match)
    return { problem: `the disk's backing file ${JSON.stringify(fileName)} is not a datastore VMDK` };
  const [, datastore, descriptor] = match as unknown as [string, string, string];
  if (/-\d{6}\.vmdk$/.test(descriptor)) {
    return {
      problem:
        `the snapshot's disk file ${fileName} is a delta disk of a snapshot chain (the VM has older snapshots): ` +
        'its data is sparse (only what changed since its parent), which HTTPS datastore ranges cannot read as a ' +
        'disk; use the NBD transport (nbdkit with VDDK), which reads the chain',
    };
  }
  return { file: { datastore, path: descriptor.replace(/\.vmdk$/, '-flat.vmdk') } };
}

async function readProperty(
  session: VmwareSession,
  sc: ServiceContent,
  obj: ManagedObjectReference,
  path: string,
  options: CallOptions,
) {
  for await (const content of retrieveObjects(
    session,
    sc,
    objectSpec(obj, { type: obj.type, paths: [path] }),
    1,
    options,
  )) {
    return content.properties.get(path);
  }
  return undefined;
}

/**
 * The inventory path of the VM's datacenter (`dcPath`: `DC0`, or `Folder/DC1` when the datacenter sits in a
 * folder), found by walking the VM's `parent` chain.
 *
 * @throws {@link @drkit/core!NotFoundError} when the chain ends without a datacenter; the session's errors.
 * @internal
 */
export async function datacenterPathOf(
  session: VmwareSession,
  sc: ServiceContent,
  vm: ManagedObjectReference,
  options: CallOptions,
): Promise<string> {
  let current: ManagedObjectReference | undefined = vm;
  for (let depth = 0; depth < 64 && current; depth += 1) {
    if (current.type === 'Datacenter') break;
    current = readRef(await readProperty(session, sc, current, 'parent', options));
  }
  if (current?.type !== 'Datacenter') {
    throw new NotFoundError(`no datacenter holds ${vm.value}: its parent chain ends without one`);
  }
  const names: string[] = [];
  for (let depth = 0; depth < 64 && current; depth += 1) {
    if (current.value === sc.rootFolder.value && current.type === sc.rootFolder.type) break;
    const name = (await readProperty(session, sc, current, 'name', options))?.text.trim();
    if (name) names.unshift(name);
    current = readRef(await readProperty(session, sc, current, 'parent', options));
  }
  return names.join('/');
}

/** What {@link createDatastoreRangeReader} needs. @internal */
export interface DatastoreRangeReaderOptions {
  readonly client: VimSoapClient;
  readonly session: VmwareSession;
  /** `https://host:port/sdk`: the file service is `/folder` on the same host. */
  readonly sdkUrl: URL;
  readonly datacenterPath: string;
  readonly file: DatastoreFlatFile;
  /** No answer for this long fails one read with a TimeoutError. */
  readonly requestTimeoutSeconds: number;
}

/** Reads byte ranges of one datastore file. @internal */
export interface DatastoreRangeReader {
  /** The file's URL without credentials (for messages). */
  readonly url: string;
  /**
   * Reads exactly `length` bytes at `offset` into a buffer of `allocate` (or a new one).
   *
   * @throws {@link @drkit/core!SourceProtocolError} for an answer that is not a 206 of exactly that range;
   * AuthenticationError (401 after logging in again), PermissionError (403, naming `Datastore.Browse`),
   * NotFoundError (404), ThrottledError (429), UnreachableError (5xx but 500, transport failures; retryable),
   * TimeoutError past the deadline or the request timeout; `signal.reason` when aborted.
   */
  read(
    offset: number,
    length: number,
    options: CallOptions & { readonly allocate?: ((length: number) => Uint8Array) | undefined },
  ): Promise<Uint8Array>;
}

function statusError(status: number, url: string, retryAfter: unknown): DrkitError {
  const where = `GET ${url}`;
  if (status === 401) {
    return new AuthenticationError(
      `${where}: HTTP 401 also after logging in again: the session cookie is refused`,
    );
  }
  if (status === 403) {
    const error = new PermissionError(
      `${where}: HTTP 403: the user lacks the vSphere privilege Datastore.Browse on the datastore (see the role ` +
        'definition in the README of @drkit/provider-vmware)',
    );
    Object.defineProperty(error, 'privilegeId', { value: 'Datastore.Browse', enumerable: true });
    return error;
  }
  if (status === 404) return new NotFoundError(`${where}: HTTP 404: the disk's data file does not exist`);
  if (status === 416) {
    return new SourceProtocolError(
      `${where}: HTTP 416: the range is past the end of the file (a -flat.vmdk shorter than the disk's capacity)`,
    );
  }
  if (status === 429) {
    const seconds = Number(retryAfter);
    return new ThrottledError(
      `${where}: HTTP 429`,
      Number.isFinite(seconds) ? { retryAfterMs: seconds * 1000 } : {},
    );
  }
  if (status === 500) {
    return new SourceProtocolError(
      `${where}: HTTP 500: the host could not read the file; on ESXi a disk the running VM holds open (the base ` +
        "disk of a running VM's snapshot) is locked: use the NBD transport (nbdkit with VDDK) for running VMs",
    );
  }
  if (status >= 500) return new UnreachableError(`${where}: HTTP ${status}: the file service is unavailable`);
  return new SourceProtocolError(`${where}: HTTP ${status} (expected 206 Partial Content)`);
}

/**
 * Reads ranges of a datastore file through vCenter's or ESXi's file service (`GET
 * /folder/<path>?dcPath=&dsName=` with `Range`), with the session cookie, on the platform's HTTPS agent (its TLS
 * trust). One login again on HTTP 401 (an expired session).
 * @internal
 */
export function createDatastoreRangeReader(options: DatastoreRangeReaderOptions): DatastoreRangeReader {
  const url = new URL(options.sdkUrl.href);
  url.pathname = `/folder/${options.file.path.split('/').map(encodeURIComponent).join('/')}`;
  url.search = new URLSearchParams({
    dcPath: options.datacenterPath,
    dsName: options.file.datastore,
  }).toString();
  const shown = `${url.host}${url.pathname}`;

  const path = `${url.pathname}${url.search}`;
  const timeoutMs = options.requestTimeoutSeconds * 1000;

  async function attempt(
    offset: number,
    length: number,
    cookie: string | undefined,
    signal: AbortSignal | undefined,
    deadline: number,
    allocate: ((length: number) => Uint8Array) | undefined,
  ): Promise<Uint8Array | { readonly status: number; readonly retryAfter: unknown }> {
    const answer = await options.client.ranges.get({
      path,
      offset,
      length,
      headers: cookie === undefined ? {} : { cookie: `${SESSION_COOKIE}=${cookie}` },
      signal,
      deadline,
      allocate: allocate ?? ((n) => Buffer.allocUnsafeSlow(n)),
      what: `GET ${shown} at ${offset}`,
    });
    if ('data' in answer) return answer.data;
    return { status: answer.status, retryAfter: answer.headers.get('retry-after') };
  }

  return {
    url: shown,
    async read(offset, length, callOptions) {
      const { signal } = callOptions;
      signal?.throwIfAborted();
      const deadline = Math.min(callOptions.deadline ?? Number.POSITIVE_INFINITY, Date.now() + timeoutMs);
      if (deadline <= Date.now()) {
        throw new TimeoutError(
          `GET ${shown} at ${offset} did not finish by its deadline ${new Date(deadline).toISOString()}`,
        );
      }
      const bounded: CallOptions = { ...callOptions, deadline };
      let cookie = await options.session.cookie(bounded);
      let answer = await attempt(offset, length, cookie, signal, deadline, callOptions.allocate);
      if (!(answer instanceof Uint8Array) && answer.status === 401) {
        callOptions.logger?.info({ url: shown }, 'vSphere session expired: logging in again');
        await options.session.renew(cookie, bounded);
        cookie = await options.session.cookie(bounded);
        answer = await attempt(offset, length, cookie, signal, deadline, callOptions.allocate);
      }
      if (answer instanceof Uint8Array) return answer;
      throw statusError(answer.status, shown, answer.retryAfter);
    },
  };
}
