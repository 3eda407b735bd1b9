import {
  type CallOptions,
  type DrkitError,
  type Extent,
  InvalidArgumentError,
  InvalidSettingsError,
  type Logger,
  SourceProtocolError,
  TimeoutError,
  withCallDeadline,
} from '@drkit/core';
import {
  type NbdConnection as Connection,
  NbdConnection,
  type NbdEndpoint,
  type SentRequest,
} from './nbd-connection.js';
import type {
  NbdConnectOptions,
  NbdExport,
  NbdExportInfo,
  NbdExportStats,
  NbdExtent,
  NbdExtentsOptions,
  NbdReadOptions,
} from './nbd-export.js';
import type { HandshakeSettings, NegotiatedExport } from './nbd-handshake.js';
import {
  FLAG_CAN_MULTI_CONN,
  FLAG_READ_ONLY,
  MAX_STRING_BYTES,
  STATE_HOLE,
  STATE_ZERO,
} from './nbd-protocol.js';

const DEFAULT_PORT = 10809;
const MAX_CONNECTIONS = 16;
const DEFAULT_REQUESTS_IN_FLIGHT = 16;
const MAX_REQUESTS_IN_FLIGHT = 128;
const DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024;
const MAX_REQUEST_BYTES = 1024 * 1024 * 1024;
const DEFAULT_PAGE_BYTES = 1024 * 1024 * 1024;
/** The largest length one request can carry (32 bits). */
const MAX_LENGTH_FIELD = 0xffffffff;

/**
 * Opens an NBD export: connects (TCP or Unix socket), runs the fixed newstyle handshake (structured replies,
 * `base:allocation`, `NBD_OPT_GO` with block sizes) and returns a small pool of connections to read it with.
 * `signal`, `deadline` and `logger` apply to this first connection; the logger stays with the export and hears
 * about connections opened and lost (never about single requests).
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming the field when an option is invalid, or `tls` when the
 * server requires TLS and none was configured.
 * @throws {@link @drkit/core!UnreachableError} (retryable) when the server cannot be reached.
 * @throws {@link @drkit/core!NotFoundError} when the export does not exist.
 * @throws {@link @drkit/core!AuthenticationError} when the server's TLS certificate is not trusted.
 * @throws {@link @drkit/core!SourceProtocolError} when the server breaks the protocol.
 *
 * @example
 * ```ts
 * await using disk = await connectNbdExport({ socketPath: '/run/nbdkit/disk.sock', connections: 4 });
 * for await (const extent of disk.extents()) {
 *   if (extent.zero) continue; // reads as zeros
 *   const first = await disk.read({ offset: extent.offset, length: Math.min(extent.length, 1 << 20) });
 * }
 * ```
 */
export async function connectNbdExport(options: NbdConnectOptions): Promise<NbdExport> {
  const settings = resolveSettings(options);
  using scope = withCallDeadline(options, `connecting to the NBD server ${settings.handshake.server}`);
  const first = await NbdConnection.open(settings.endpoint, settings.handshake, scope.signal);
  const pool = new NbdConnectionPool(settings, first, options.logger);
  try {
    await pool.fill(scope.signal);
  } catch (error) {
    await pool.close();
    throw error;
  }
  return pool;
}

interface PoolSettings {
  readonly endpoint: NbdEndpoint;
  readonly handshake: HandshakeSettings;
  readonly connections: number;
  readonly multiConn: 'if-advertised' | 'always';
  readonly maxRequestsInFlight: number;
  readonly maxRequestBytes: number;
}

function resolveSettings(options: NbdConnectOptions): PoolSettings {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidSettingsError('options', 'pass an object with host and port, or socketPath');
  }
  const { host, socketPath } = options;
  if ((host === undefined) === (socketPath === undefined)) {
    throw new InvalidSettingsError(
      'host',
      'give either host (with port) or socketPath, not both and not neither',
    );
  }
  let endpoint: NbdEndpoint;
  let server: string;
  const exportName = options.exportName ?? '';
  if (typeof exportName !== 'string' || Buffer.byteLength(exportName) > MAX_STRING_BYTES) {
    throw new InvalidSettingsError('exportName', `must be a string of at most ${MAX_STRING_BYTES} bytes`);
  }
  const path = encodeURIComponent(exportName);
  if (host !== undefined) {
    if (typeof host !== 'string' || host === '')
      throw new InvalidSettingsError('host', 'must be a host name or IP');
    const port = options.port ?? DEFAULT_PORT;
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new InvalidSettingsError('port', `must be an integer from 1 to 65535, got ${String(port)}`);
    }
    endpoint = { kind: 'tcp', host, port };
    server = `nbd://${host.includes(':') ? `[${host}]` : host}:${port}/${path}`;
  } else {
    if (typeof socketPath !== 'string' || socketPath === '') {
      throw new InvalidSettingsError('socketPath', 'must be the path of a Unix socket');
    }
    if (options.port !== undefined) throw new InvalidSettingsError('port', 'is for host, not for socketPath');
    endpoint = { kind: 'unix', path: socketPath };
    server = `nbd+unix:///${path}?socket=${socketPath}`;
  }
  const connections = integer(options.connections, 'connections', 1, MAX_CONNECTIONS, 1);
  const multiConn = options.multiConn ?? 'if-advertised';
  if (multiConn !== 'if-advertised' && multiConn !== 'always') {
    throw new InvalidSettingsError('multiConn', "must be 'if-advertised' or 'always'");
  }
  const maxRequestsInFlight = integer(
    options.maxRequestsInFlight,
    'maxRequestsInFlight',
    1,
    MAX_REQUESTS_IN_FLIGHT,
    DEFAULT_REQUESTS_IN_FLIGHT,
  );
  const maxRequestBytes = integer(
    options.maxRequestBytes,
    'maxRequestBytes',
    512,
    MAX_REQUEST_BYTES,
    DEFAULT_MAX_REQUEST_BYTES,
  );
  const tls = options.tls;
  if (tls !== undefined && (typeof tls !== 'object' || tls === null)) {
    throw new InvalidSettingsError('tls', 'must be an object ({ ca?, servername?, cert?, key? })');
  }
  if (tls && (tls.cert === undefined) !== (tls.key === undefined)) {
    throw new InvalidSettingsError('tls.key', 'give cert and key together');
  }
  return {
    endpoint,
    handshake: { exportName, server, tls: tls ? { ...tls, host } : undefined },
    connections,
    multiConn,
    maxRequestsInFlight,
    maxRequestBytes,
  };
}

function integer(
  value: number | undefined,
  field: string,
  min: number,
  max: number,
  fallback: number,
): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new InvalidSettingsError(field, `must be an integer from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

interface Waiter {
  readonly resolve: (connection: Connection) => void;
  readonly reject: (error: unknown) => void;
}

/** A reserved place for one request on one connection; `release()` once the request is sent (or not). */
interface Slot {
  readonly connection: Connection;
  release(): void;
}

class NbdConnectionPool implements NbdExport {
  readonly info: NbdExportInfo;
  readonly #settings: PoolSettings;
  readonly #negotiated: NegotiatedExport;
  readonly #logger: Logger | undefined;
  readonly #pieceBytes: number;
  #connections: Connection[] = [];
  readonly #reserved = new Map<Connection, number>();
  #target: number;
  #opening = 0;
  #waiters: Waiter[] = [];
  #closed = false;
  /** Aborts connections still being opened when the export is closed. */
  readonly #lifetime = new AbortController();
  #closing: Promise<void> | undefined;
  #opened = 1;
  #lost = 0;
  /** The data counters of connections no longer in the pool. */
  #retiredDirect = 0;
  #retiredCopied = 0;

  constructor(settings: PoolSettings, first: Connection, logger: Logger | undefined) {
    this.#settings = settings;
    this.#logger = logger;
    const negotiated = first.negotiated;
    this.#negotiated = negotiated;
    const canMultiConn = (negotiated.transmissionFlags & FLAG_CAN_MULTI_CONN) !== 0;
    this.#target = canMultiConn || settings.multiConn === 'always' ? settings.connections : 1;
    const { minimum, preferred, maximum } = negotiated.blockSize;
    const limit = Math.min(settings.maxRequestBytes, maximum, MAX_LENGTH_FIELD);
    const aligned = limit - (limit % preferred);
    this.#pieceBytes = aligned >= preferred ? aligned : limit - (limit % minimum);
    this.info = Object.freeze({
      exportName: settings.handshake.exportName,
      size: negotiated.size,
      readOnly: (negotiated.transmissionFlags & FLAG_READ_ONLY) !== 0,
      canMultiConn,
      connections: this.#target,
      structuredReplies: negotiated.structuredReplies,
      allocation: negotiated.allocationContextId !== undefined,
      blockSize: Object.freeze({ ...negotiated.blockSize }),
      tls: negotiated.tls,
      ...(negotiated.description !== undefined ? { description: negotiated.description } : {}),
    });
    logger?.debug(
      {
        server: settings.handshake.server,
        size: this.info.size,
        flags: negotiated.transmissionFlags,
        structuredReplies: this.info.structuredReplies,
        allocation: this.info.allocation,
        blockSize: this.info.blockSize,
        tls: this.info.tls,
      },
      'nbd: export opened',
    );
    if (settings.connections > 1 && this.#target === 1) {
      logger?.info(
        { server: settings.handshake.server, connections: settings.connections },
        'nbd: the server does not set NBD_FLAG_CAN_MULTI_CONN: one connection is used (multiConn: always overrides)',
      );
    }
    this.#adopt(first);
  }

  /**
   * Opens the connections the pool may use, all at once (as libnbd's nbdcopy does): they are ready before the
   * first reads, and a server that refuses the extra ones is known at once. Those it cannot open lower the
   * pool's size (with a warning); only an abort fails it.
   */
  async fill(signal: AbortSignal | undefined): Promise<void> {
    const missing = this.#target - 1 - this.#opening;
    await Promise.all(Array.from({ length: Math.max(0, missing) }, () => this.#open(signal)));
    signal?.throwIfAborted();
  }

  stats(): NbdExportStats {
    let requestsInFlight = 0;
    let dataBytesDirect = this.#retiredDirect;
    let dataBytesCopied = this.#retiredCopied;
    for (const connection of this.#connections) {
      requestsInFlight += connection.inFlight;
      dataBytesDirect += connection.directBytes;
      dataBytesCopied += connection.copiedBytes;
    }
    return {
      openConnections: this.#connections.filter((connection) => connection.lost === undefined).length,
      connectionsOpened: this.#opened,
      connectionsLost: this.#lost,
      requestsInFlight,
      dataBytesDirect,
      dataBytesCopied,
    };
  }

  async read(range: Extent, options: NbdReadOptions = {}): Promise<Uint8Array> {
    const { offset, length } = range ?? ({} as Extent);
    this.#checkRange(offset, length, 'read');
    this.#checkOpen();
    const outer = options.signal;
    outer?.throwIfAborted();
    // One controller bounds the whole read: the caller's signal, the deadline (one timer) and the first failed
    // piece all abort it; the pieces wait on it alone.
    const failed = new AbortController();
    const signal = failed.signal;
    const onOuterAbort = () => failed.abort(outer!.reason);
    outer?.addEventListener('abort', onOuterAbort, { once: true });
    let timer: ReturnType<typeof setTimeout> | undefined;
    if (options.deadline !== undefined) {
      const deadline = options.deadline;
      const expire = () =>
        failed.abort(
          new TimeoutError(
            `the NBD read of [${offset}, ${offset + length}) from ${this.#settings.handshake.server} did not ` +
              `finish by its deadline ${new Date(deadline).toISOString()}`,
          ),
        );
      const remaining = deadline - Date.now();
      if (remaining <= 0) expire();
      else timer = setTimeout(expire, remaining);
    }
    // The buffer is taken when the first piece has a place on a connection: a read still queued holds no memory.
    let target: Uint8Array | undefined;
    const buffer = (): Uint8Array => {
      if (target) return target;
      const taken = options.allocate ? options.allocate(length) : Buffer.allocUnsafeSlow(length);
      if (!(taken instanceof Uint8Array) || taken.length !== length) {
        throw new InvalidArgumentError(
          `allocate(${length}) returned ${describeBuffer(taken)}, not ${length} bytes`,
        );
      }
      target = taken;
      return taken;
    };
    const sent: SentRequest<void>[] = [];
    const pieces: Promise<void>[] = [];
    for (let at = 0; at < length; at += this.#pieceBytes) {
      const pieceLength = Math.min(this.#pieceBytes, length - at);
      pieces.push(
        (async () => {
          const slot = await this.#acquire(signal);
          let request: SentRequest<void>;
          try {
            signal.throwIfAborted();
            request = slot.connection.read(offset + at, pieceLength, buffer(), at);
            sent.push(request);
          } finally {
            slot.release();
          }
          await untilAborted(request.done, signal);
        })(),
      );
    }
    try {
      await firstFailure(pieces, (error) => failed.abort(error));
    } catch (error) {
      for (const request of sent) request.abandon();
      if (outer?.aborted) throw outer.reason;
      throw error;
    } finally {
      clearTimeout(timer);
      outer?.removeEventListener('abort', onOuterAbort);
    }
    return target!;
  }

  async *extents(options: NbdExtentsOptions = {}): AsyncGenerator<NbdExtent> {
    const offset = options.offset ?? 0;
    const length = options.length ?? this.info.size - offset;
    this.#checkRange(offset, length, 'extents');
    const pageBytes = integer(options.pageBytes, 'pageBytes', 1, MAX_LENGTH_FIELD, DEFAULT_PAGE_BYTES);
    this.#checkOpen();
    const end = offset + length;
    if (this.#negotiated.allocationContextId === undefined) {
      yield { offset, length, zero: false, hole: false };
      return;
    }
    using scope = withCallDeadline(
      options,
      `the NBD block status of [${offset}, ${end}) from ${this.#settings.handshake.server}`,
    );
    const signal = scope.signal;
    const minimum = this.#negotiated.blockSize.minimum;
    const page = Math.max(minimum, pageBytes - (pageBytes % minimum));
    let carry: NbdExtent | undefined;
    let at = offset;
    while (at < end) {
      signal?.throwIfAborted();
      const askLength = Math.min(page, end - at);
      const slot = await this.#acquire(signal);
      let request: SentRequest<{ offset: number; length: number; flags: number }[]>;
      try {
        signal?.throwIfAborted();
        request = slot.connection.blockStatus(at, askLength);
      } finally {
        slot.release();
      }
      let raw: { offset: number; length: number; flags: number }[];
      try {
        raw = await untilAborted(request.done, signal);
      } catch (error) {
        request.abandon();
        throw error;
      }
      for (const extent of raw) {
        const next: NbdExtent = {
          offset: extent.offset,
          length: extent.length,
          zero: (extent.flags & STATE_ZERO) !== 0,
          hole: (extent.flags & STATE_HOLE) !== 0,
        };
        if (carry && carry.zero === next.zero && carry.hole === next.hole) {
          carry = { ...carry, length: carry.length + next.length };
        } else {
          if (carry) yield carry;
          carry = next;
        }
        at = extent.offset + extent.length;
      }
    }
    if (carry) yield carry;
  }

  close(options: CallOptions = {}): Promise<void> {
    this.#closing ??= this.#close(options);
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close(options: CallOptions): Promise<void> {
    this.#closed = true;
    this.#lifetime.abort(this.#closedError());
    const error = this.#closedError();
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
    using scope = withCallDeadline(options, `closing the NBD export ${this.#settings.handshake.server}`);
    const connections = this.#connections;
    await Promise.allSettled(connections.map((connection) => connection.close(scope.signal)));
    this.#logger?.debug({ server: this.#settings.handshake.server }, 'nbd: export closed');
    scope.signal?.throwIfAborted();
  }

  #checkOpen(): void {
    if (this.#closed) throw this.#closedError();
  }

  #closedError(): InvalidArgumentError {
    return new InvalidArgumentError(`the NBD export ${this.#settings.handshake.server} is closed`);
  }

  #checkRange(offset: number, length: number, what: string): void {
    const size = this.info.size;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0) {
      throw new InvalidArgumentError(
        `${what}: offset and length must be integers, offset ≥ 0, length > 0 (got ${offset}, ${length})`,
      );
    }
    if (offset + length > size) {
      throw new InvalidArgumentError(
        `${what}: [${offset}, ${offset + length}) goes past the end of the export (${size} bytes)`,
      );
    }
    const minimum = this.#negotiated.blockSize.minimum;
    if (offset % minimum !== 0 || (length % minimum !== 0 && offset + length !== size)) {
      throw new InvalidArgumentError(
        `${what}: [${offset}, ${offset + length}) is not aligned to the server's minimum block size of ${minimum}`,
      );
    }
  }

  /** Waits for a connection with a free place for one request and reserves it. */
  #acquire(signal: AbortSignal | undefined): Promise<Slot> {
    signal?.throwIfAborted();
    this.#checkOpen();
    const ready = this.#pick();
    if (ready) return Promise.resolve(this.#reserve(ready));
    return new Promise<Slot>((resolve, reject) => {
      const onAbort = () => {
        const index = this.#waiters.indexOf(waiter);
        if (index >= 0) this.#waiters.splice(index, 1);
        reject(signal?.reason);
      };
      const waiter: Waiter = {
        resolve: (connection) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(this.#reserve(connection));
        },
        reject: (error) => {
          signal?.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(waiter);
      this.#dispatch();
    });
  }

  #reserve(connection: Connection): Slot {
    this.#reserved.set(connection, (this.#reserved.get(connection) ?? 0) + 1);
    let released = false;
    return {
      connection,
      release: () => {
        if (released) return;
        released = true;
        const left = (this.#reserved.get(connection) ?? 1) - 1;
        if (left > 0) this.#reserved.set(connection, left);
        else this.#reserved.delete(connection);
        if (this.#waiters.length > 0) queueMicrotask(() => this.#dispatch());
      },
    };
  }

  /** The usable connection with the fewest requests, if one has room. */
  #pick(): Connection | undefined {
    let best: Connection | undefined;
    let bestLoad = this.#settings.maxRequestsInFlight;
    for (const connection of this.#connections) {
      if (!connection.usable) continue;
      const load = connection.inFlight + (this.#reserved.get(connection) ?? 0);
      if (load < bestLoad) {
        best = connection;
        bestLoad = load;
      }
    }
    return best;
  }

  /** Hands free places to waiters in order; opens a connection when all are busy and the pool is not full. */
  #dispatch(): void {
    this.#connections = this.#connections.filter((connection) => {
      if (connection.usable || (connection.lost === undefined && connection.inFlight > 0)) return true;
      this.#retiredDirect += connection.directBytes;
      this.#retiredCopied += connection.copiedBytes;
      return false;
    });
    while (this.#waiters.length > 0) {
      const connection = this.#pick();
      if (!connection) break;
      this.#waiters.shift()!.resolve(connection);
    }
    const usable = this.#connections.filter((connection) => connection.usable).length;
    if (this.#waiters.length > 0 && !this.#closed && usable + this.#opening < this.#target) {
      void this.#open();
    }
  }

  /**
   * Opens one more connection. When a read needs it, it is not bound to that read's signal (another caller may
   * get it): callers leave the queue by their own signals, and closing the export aborts it. `signal` is the
   * connect call's, while the pool is filled.
   */
  async #open(signal?: AbortSignal): Promise<void> {
    this.#opening++;
    let connection: Connection;
    try {
      connection = await NbdConnection.open(
        this.#settings.endpoint,
        this.#settings.handshake,
        signal ? AbortSignal.any([this.#lifetime.signal, signal]) : this.#lifetime.signal,
      );
    } catch (error) {
      this.#opening--;
      if (!this.#closed && !signal?.aborted) this.#onOpenFailed(error);
      return;
    }
    this.#opening--;
    this.#opened++;
    const mismatch = this.#mismatch(connection.negotiated);
    if (mismatch) {
      const error = new SourceProtocolError(
        `${this.#settings.handshake.server} answered a new connection differently from the first: ${mismatch}`,
      );
      connection.destroy(error);
      this.#onOpenFailed(error);
      return;
    }
    if (this.#closed) {
      void connection.close();
      return;
    }
    this.#logger?.debug(
      { server: this.#settings.handshake.server, connections: this.#connections.length + 1 },
      'nbd: connection opened',
    );
    this.#adopt(connection);
    this.#dispatch();
  }

  #onOpenFailed(error: unknown): void {
    const usable = this.#connections.filter((connection) => connection.usable).length;
    if (usable === 0 && this.#opening === 0) {
      // Nothing to wait for: the callers waiting get the error; a later call tries again.
      for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
      return;
    }
    if (usable > 0 && usable + this.#opening < this.#target) {
      this.#target = Math.max(1, usable + this.#opening);
      this.#logger?.warn(
        {
          server: this.#settings.handshake.server,
          connections: this.#target,
          error: error instanceof Error ? error.message : String(error),
        },
        'nbd: could not open another connection; continuing with fewer',
      );
    }
  }

  #mismatch(negotiated: NegotiatedExport): string | undefined {
    const first = this.#negotiated;
    if (negotiated.size !== first.size) return `an export of ${negotiated.size} bytes, not ${first.size}`;
    if (negotiated.structuredReplies !== first.structuredReplies) return 'structured replies changed';
    if ((negotiated.allocationContextId === undefined) !== (first.allocationContextId === undefined)) {
      return 'base:allocation changed';
    }
    const a = negotiated.blockSize;
    const b = first.blockSize;
    if (a.minimum !== b.minimum || a.preferred !== b.preferred || a.maximum !== b.maximum) {
      return 'different block sizes';
    }
    return undefined;
  }

  #adopt(connection: Connection): void {
    connection.onSettled = () => {
      if (this.#waiters.length > 0) this.#dispatch();
    };
    connection.onLost = (error: DrkitError) => {
      this.#lost++;
      this.#logger?.warn(
        { server: this.#settings.handshake.server, error: error.message, code: error.code },
        'nbd: connection lost',
      );
      queueMicrotask(() => this.#dispatch());
    };
    this.#connections.push(connection);
  }
}

/** Rejects with `signal.reason` as soon as `signal` aborts, else settles as `promise`. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
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

/** Waits for all; on the first rejection calls `onFailure` (which stops the others) and rejects with it. */
async function firstFailure(promises: Promise<void>[], onFailure: (error: unknown) => void): Promise<void> {
  let first: { error: unknown } | undefined;
  await Promise.all(
    promises.map((promise) =>
      promise.catch((error: unknown) => {
        if (!first) {
          first = { error };
          onFailure(error);
        }
      }),
    ),
  );
  if (first) throw first.error;
}

function describeBuffer(value: unknown): string {
  return value instanceof Uint8Array ? `${value.length} bytes` : typeof value;
}
