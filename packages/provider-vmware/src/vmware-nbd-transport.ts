import { type CallOptions, SourceProtocolError } from '@drkit/core';
import { connectNbdExport, type NbdConnectOptions, type NbdExport } from './nbd/index.js';
import type { VmwareConnectionBudget, VmwareConnectionGrant } from './vmware-connection-budget.js';

/**
 * The largest NBD request of a read unless `locate` says otherwise: the engine's reads (1 MiB chunks) go as
 * requests of 256 KiB (nbdcopy's default request size), spread over the export's connections and pipelined on
 * each, so that the server works on several parts of a read at once.
 */
const DEFAULT_REQUEST_BYTES = 256 * 1024;

/** The disk of one snapshot that an NBD export must serve (what nbdkit's VDDK plugin is started with). */
export interface VmwareNbdDisk {
  /** drkit's disk id. */
  readonly diskId: string;
  /** The VM's moref value (`vm-123`): nbdkit's `vm=moref=vm-123`. */
  readonly vm: string;
  /** The snapshot's moref value (`snapshot-45`): nbdkit's `snapshot=snapshot-45`. */
  readonly snapshot: string;
  /** The disk's device key. */
  readonly deviceKey: number;
  /** The disk's file in the snapshot's configuration (`[ds] vm/disk.vmdk`): nbdkit's `file=`. */
  readonly fileName: string | undefined;
  /** The disk's capacity at the snapshot: the export must be exactly this size. */
  readonly capacityBytes: number;
  /**
   * The moref value of the ESXi host that runs the VM (`runtime.host`, `host-12`): the host whose NFC connections
   * the export's connections use, counted against `limits.connectionsPerHost`.
   */
  readonly esxiHost: string;
}

/**
 * Where the NBD export of one disk snapshot is: a Unix socket or a TCP address, as `connectNbdExport` takes
 * them, plus an optional `release` called when the read session closes (e.g. to stop the nbdkit it started).
 */
export type VmwareNbdExportLocation = Pick<
  NbdConnectOptions,
  | 'socketPath'
  | 'host'
  | 'port'
  | 'exportName'
  | 'tls'
  | 'connections'
  | 'multiConn'
  | 'maxRequestsInFlight'
  | 'maxRequestBytes'
> & {
  /** Called once when the read session closes, after the export was disconnected. */
  readonly release?: () => Promise<void>;
};

/**
 * The NBD transport's settings (`transport: 'nbd'`): drkit does not start nbdkit or ship VDDK; `locate` tells
 * where an export of the disk snapshot is (starting nbdkit with the VDDK plugin for it, or naming one already
 * running). See the README for the nbdkit command line.
 */
export interface VmwareNbdOptions {
  /**
   * The export of one disk of one snapshot; called once per read session (one disk task).
   *
   * @example
   * ```ts
   * locate: async (disk) => {
   *   const socketPath = `/run/drkit/${disk.vm}-${disk.deviceKey}.sock`;
   *   const nbdkit = await startNbdkitVddk({ socketPath, vm: disk.vm, snapshot: disk.snapshot, file: disk.fileName });
   *   return { socketPath, connections: 4, multiConn: 'always', release: () => nbdkit.stop() };
   * }
   * ```
   */
  locate(disk: VmwareNbdDisk, options: CallOptions): Promise<VmwareNbdExportLocation>;
}

/** A range of the export and whether it reads as zeros (`NBD_STATE_ZERO` of `base:allocation`). @internal */
export interface VmwareNbdAllocation {
  readonly offset: number;
  readonly length: number;
  readonly zero: boolean;
}

/** Block status is asked for in windows of this many bytes, each within the request timeout. */
const ALLOCATION_WINDOW_BYTES = 1024 * 1024 * 1024;

/** One disk's data through an NBD export. @internal */
export interface VmwareNbdSource {
  readonly url: string;
  /**
   * The export's allocation in order, neighbours of the same kind merged, when it offers `base:allocation`
   * (`NBD_CMD_BLOCK_STATUS`); undefined when it does not. Asked for in 1 GiB windows, each bounded by the request
   * timeout.
   */
  readonly allocation: ((options: CallOptions) => AsyncGenerator<VmwareNbdAllocation>) | undefined;
  read(
    offset: number,
    length: number,
    options: CallOptions & { readonly allocate?: ((length: number) => Uint8Array) | undefined },
  ): Promise<Uint8Array>;
  close(): Promise<void>;
}

/**
 * Connects to the export `locate` names and checks that it is the disk's size. Its connections are taken from the
 * ESXi host's budget first: as many as `locate` asks for and the host has free (at least one, waited for until the
 * deadline; `waiting` is told while it waits), and given back when the session closes or connecting fails. Reads honour `signal`, `deadline` and the
 * request timeout; the export's connections are closed, then `release` called, on `close()`.
 *
 * @throws `VmwareConnectionLimitError` (a TimeoutError) when no connection to the host was free by the deadline.
 * @throws {@link @drkit/core!SourceProtocolError} when the export's size is not the disk's capacity; the NBD client's
 * connection errors.
 * @internal
 */
export async function openNbdSource(
  nbd: VmwareNbdOptions,
  disk: VmwareNbdDisk,
  requestTimeoutSeconds: number,
  options: CallOptions,
  budget: VmwareConnectionBudget,
  waiting?: (resource: string) => () => void,
): Promise<VmwareNbdSource> {
  const location = await nbd.locate(disk, options);
  let exported: NbdExport;
  let grant: VmwareConnectionGrant | undefined;
  try {
    const { release: _release, ...connect } = location;
    grant = await budget.acquire(disk.esxiHost, connect.connections ?? 1, options, waiting);
    exported = await connectNbdExport({
      ...connect,
      connections: grant.connections,
      maxRequestBytes: connect.maxRequestBytes ?? DEFAULT_REQUEST_BYTES,
      ...options,
    });
    // A server without NBD_FLAG_CAN_MULTI_CONN gets one connection: the others go back at once.
    grant.release(grant.connections - exported.info.connections);
  } catch (error) {
    grant?.release();
    await location.release?.().catch(() => undefined);
    throw error;
  }
  const held = grant;
  const url = location.socketPath
    ? `nbd+unix:///${location.exportName ?? ''}?socket=${location.socketPath}`
    : `nbd://${location.host}:${location.port ?? 10809}/${location.exportName ?? ''}`;
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      try {
        await exported.close();
      } finally {
        held.release();
        await location.release?.();
      }
    })();
    return closing;
  };
  if (exported.info.size !== disk.capacityBytes) {
    await close().catch(() => undefined);
    throw new SourceProtocolError(
      `the NBD export ${url} for disk ${disk.diskId} is ${exported.info.size} bytes, but the disk is ` +
        `${disk.capacityBytes} bytes at the snapshot: locate() named another disk's export`,
    );
  }
  const size = exported.info.size;
  async function* allocation(options: CallOptions): AsyncGenerator<VmwareNbdAllocation> {
    let carry: { offset: number; length: number; zero: boolean } | undefined;
    for (let at = 0; at < size; at += ALLOCATION_WINDOW_BYTES) {
      const deadline = Math.min(
        options.deadline ?? Number.POSITIVE_INFINITY,
        Date.now() + requestTimeoutSeconds * 1000,
      );
      for await (const extent of exported.extents({
        ...options,
        deadline,
        offset: at,
        length: Math.min(ALLOCATION_WINDOW_BYTES, size - at),
      })) {
        if (carry && carry.zero === extent.zero && carry.offset + carry.length === extent.offset) {
          carry.length += extent.length;
        } else {
          if (carry) yield carry;
          carry = { offset: extent.offset, length: extent.length, zero: extent.zero };
        }
      }
    }
    if (carry) yield carry;
  }
  return {
    url,
    allocation: exported.info.allocation ? allocation : undefined,
    read(offset, length, readOptions) {
      const deadline = Math.min(
        readOptions.deadline ?? Number.POSITIVE_INFINITY,
        Date.now() + requestTimeoutSeconds * 1000,
      );
      return exported.read(
        { offset, length },
        {
          ...readOptions,
          deadline,
          ...(readOptions.allocate ? { allocate: readOptions.allocate } : {}),
        },
      );
    },
    close,
  };
}
