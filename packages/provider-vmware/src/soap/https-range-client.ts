import type { OnReadOpts } from 'node:net';
import { type ConnectionOptions, connect, type TLSSocket } from 'node:tls';
import { type DrkitError, SourceProtocolError, TimeoutError } from '@drkit/core';
import { transportError } from './vim-soap-client.js';
import type { TlsTrust } from './vmware-tls.js';

/** Bytes the socket reads into while no body has a destination (headers, chunk framing). */
const SCRATCH_BYTES = 64 * 1024;
/** An answer's status line and headers may take this much at most. */
const MAX_HEAD_BYTES = 64 * 1024;
/** Keep-alive connections idle this long are closed (vSphere's proxies close theirs after about a minute). */
const IDLE_MS = 30_000;

/** One ranged GET. @internal */
export interface RangeRequest {
  /** Path and query, already encoded. */
  readonly path: string;
  readonly offset: number;
  readonly length: number;
  /** Extra request headers (`cookie`), lower-case names. */
  readonly headers: Readonly<Record<string, string>>;
  readonly signal: AbortSignal | undefined;
  /** Milliseconds since the epoch: the whole exchange (connecting included) must end by then. */
  readonly deadline: number;
  /** The buffer the body goes into, asked for once the answer is known to be a 206 of the right length. */
  readonly allocate: (length: number) => Uint8Array;
  /** For messages: `GET host/path at offset`. */
  readonly what: string;
}

/** A 206 answer with its body in the allocated buffer, or another status (its body discarded). @internal */
export type RangeAnswer =
  | { readonly status: 206; readonly data: Uint8Array; readonly contentRange: string }
  | { readonly status: number; readonly headers: ReadonlyMap<string, string> };

/** HTTPS range GETs on keep-alive connections of one host. @internal */
export interface HttpsRangeClient {
  get(request: RangeRequest): Promise<RangeAnswer>;
  /**
   * Closes the idle connections; those in use close when their answer is through. A later `get` opens new ones
   * (the platform may be used again after `close`).
   */
  close(): void;
}

/** Where a response is in its parsing. */
interface Exchange {
  readonly request: RangeRequest;
  readonly resolve: (answer: RangeAnswer) => void;
  readonly reject: (error: unknown) => void;
  head: Buffer[];
  headBytes: number;
  /** Bytes of any kind received for this exchange (a reused connection that fails before any may be retried). */
  received: number;
  status: number;
  headers: Map<string, string> | undefined;
  /** The body's destination (206), filled up to `filled`. */
  target: Uint8Array | undefined;
  filled: number;
  /** Body bytes still to come (Content-Length), or -1 while chunked. */
  bodyLeft: number;
  chunked: ChunkedState | undefined;
  keepAlive: boolean;
}

interface ChunkedState {
  /** `size` reading a chunk-size line, `data` inside a chunk, `crlf` after one, `trailer` after the last. */
  phase: 'size' | 'data' | 'crlf' | 'trailer';
  line: string;
  left: number;
}

/**
 * A small HTTP/1.1 client for the datastore file reads, on TLS sockets read with Node's `onread`: the cleartext of a
 * 206's body is decrypted straight into the read's buffer (no Buffer per TLS record, no stream or HTTP parser
 * layer in between). It speaks exactly what the reads need: `GET` with `Range`, keep-alive, answers with
 * `Content-Length` or chunked; any other status is returned with its headers and the connection closed (its body
 * is not read). No pipelining: one exchange per connection at a time, at most `maxConnections` open. A request
 * on a reused connection that the server closed before answering (a keep-alive race) is sent once more on a new
 * connection; anything else fails the request.
 * @internal
 */
export function createHttpsRangeClient(options: {
  readonly host: string;
  readonly port: number;
  /** The TLS trust, made once (a thumbprint is read then). */
  readonly trust: () => Promise<TlsTrust>;
  readonly maxConnections: number;
  /** For transport error messages. */
  readonly url: URL;
}): HttpsRangeClient {
  const { host, port, url } = options;
  const idle: RangeConnection[] = [];
  const waiting: (() => void)[] = [];
  let open = 0;
  /** Bumped by close(): connections opened before it are not kept once their answer is through. */
  let generation = 0;

  async function connection(request: RangeRequest, fresh: boolean): Promise<RangeConnection> {
    for (;;) {
      if (!fresh) {
        const reused = idle.pop();
        if (reused) {
          reused.unidle();
          return reused;
        }
      }
      if (open < options.maxConnections) {
        open += 1;
        try {
          const opened = await RangeConnection.open(host, port, await options.trust(), request, url, () => {
            open -= 1;
            waiting.shift()?.();
          });
          opened.generation = generation;
          return opened;
        } catch (error) {
          open -= 1;
          waiting.shift()?.();
          throw error;
        }
      }
      if (fresh && idle.length > 0) {
        idle.shift()!.destroy();
        continue;
      }
      await new Promise<void>((resolve, reject) => {
        const wake = () => {
          request.signal?.removeEventListener('abort', onAbort);
          resolve();
        };
        const onAbort = () => {
          const index = waiting.indexOf(wake);
          if (index >= 0) waiting.splice(index, 1);
          reject(request.signal!.reason);
        };
        request.signal?.addEventListener('abort', onAbort, { once: true });
        waiting.push(wake);
      });
      request.signal?.throwIfAborted();
    }
  }

  function release(connection: RangeConnection): void {
    if (connection.generation !== generation || !connection.reusable) {
      connection.destroy();
      return;
    }
    const next = waiting.shift();
    connection.idle(IDLE_MS, () => {
      const index = idle.indexOf(connection);
      if (index >= 0) idle.splice(index, 1);
    });
    idle.push(connection);
    next?.();
  }

  return {
    async get(request) {
      request.signal?.throwIfAborted();
      let first = await connection(request, false);
      const reused = first.used;
      try {
        const answer = await first.exchange(request);
        release(first);
        return answer;
      } catch (error) {
        first.destroy();
        if (!(error instanceof StaleConnection) || !reused) throw unwrap(error);
      }
      // The server had closed the idle connection before it read the request: once more on a new one.
      first = await connection(request, true);
      try {
        const answer = await first.exchange(request);
        release(first);
        return answer;
      } catch (error) {
        first.destroy();
        throw unwrap(error);
      }
    },
    close() {
      generation += 1;
      for (const connection of idle.splice(0)) connection.destroy();
    },
  };
}

/** A reused connection that ended before any byte of the answer: the request may be sent again. */
class StaleConnection extends Error {
  constructor(readonly error: DrkitError) {
    super(error.message);
  }
}

function unwrap(error: unknown): unknown {
  return error instanceof StaleConnection ? error.error : error;
}

/** One TLS connection carrying one exchange at a time. */
class RangeConnection {
  readonly #socket: TLSSocket;
  readonly #scratch = Buffer.allocUnsafe(SCRATCH_BYTES);
  readonly #url: URL;
  readonly #onGone: () => void;
  #exchange: Exchange | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #onAbort: (() => void) | undefined;
  #idleTimer: ReturnType<typeof setTimeout> | undefined;
  #onIdleGone: (() => void) | undefined;
  #lastWasDirect = false;
  #gone = false;
  /** Whether an exchange has run on it (a reused connection). */
  used = false;
  /** The client's generation when it was opened. */
  generation = 0;
  reusable = true;

  private constructor(socket: TLSSocket, url: URL, onGone: () => void) {
    this.#socket = socket;
    this.#url = url;
    this.#onGone = onGone;
    socket.on('error', (error) => this.#lost(transportError(error, 'GET', this.#url, 0)));
    socket.on('end', () => this.#lost(undefined));
    socket.on('close', () => this.#lost(undefined));
  }

  static open(
    host: string,
    port: number,
    trust: TlsTrust,
    request: RangeRequest,
    url: URL,
    onGone: () => void,
  ): Promise<RangeConnection> {
    return new Promise((resolve, reject) => {
      let connection: RangeConnection | undefined;
      const onread: OnReadOpts = {
        buffer: () => connection?.buffer() ?? Buffer.allocUnsafe(SCRATCH_BYTES),
        callback: (bytes, buffer) => {
          connection?.onBytes(bytes, buffer as Buffer);
          return true;
        },
      };
      const tlsOptions = {
        host,
        port,
        ...trust.connect,
        ALPNProtocols: ['http/1.1'],
        onread,
      } as ConnectionOptions & { onread: OnReadOpts };
      const socket = connect(tlsOptions);
      socket.setNoDelay(true);
      let settled = false;
      const finish = (error: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        request.signal?.removeEventListener('abort', onAbort);
        socket.off('secureConnect', onConnect);
        if (error !== undefined) {
          socket.destroy();
          onGone();
          reject(error);
          return;
        }
        connection = new RangeConnection(socket, url, onGone);
        resolve(connection);
      };
      const onConnect = () => finish(undefined);
      const onAbort = () => finish(request.signal!.reason);
      const timer = setTimeout(
        () => finish(new TimeoutError(`${request.what}: connecting did not finish by its deadline`)),
        Math.max(0, request.deadline - Date.now()),
      );
      socket.once('secureConnect', onConnect);
      socket.once('error', (error) => finish(transportError(error, 'GET', url, 0)));
      request.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  idle(ms: number, onGone: () => void): void {
    this.#onIdleGone = onGone;
    this.#idleTimer = setTimeout(() => this.destroy(), ms);
    this.#idleTimer.unref?.();
  }

  unidle(): void {
    clearTimeout(this.#idleTimer);
    this.#onIdleGone = undefined;
  }

  destroy(): void {
    this.reusable = false;
    this.#socket.destroy();
    this.#lost(undefined);
  }

  exchange(request: RangeRequest): Promise<RangeAnswer> {
    if (this.#gone) return Promise.reject(new StaleConnection(this.#closedError()));
    this.used = true;
    return new Promise((resolve, reject) => {
      const exchange: Exchange = {
        request,
        resolve,
        reject,
        head: [],
        headBytes: 0,
        received: 0,
        status: 0,
        headers: undefined,
        target: undefined,
        filled: 0,
        bodyLeft: 0,
        chunked: undefined,
        keepAlive: true,
      };
      const onAbort = () => this.#fail(request.signal!.reason);
      if (request.signal?.aborted) {
        reject(request.signal.reason);
        return;
      }
      this.#exchange = exchange;
      this.#onAbort = onAbort;
      request.signal?.addEventListener('abort', onAbort, { once: true });
      this.#timer = setTimeout(
        () =>
          this.#fail(
            new TimeoutError(
              `${request.what} did not finish by its deadline ${new Date(request.deadline).toISOString()}`,
            ),
          ),
        Math.max(0, request.deadline - Date.now()),
      );
      let head =
        `GET ${request.path} HTTP/1.1\r\nhost: ${this.#url.host}\r\n` +
        `range: bytes=${request.offset}-${request.offset + request.length - 1}\r\n` +
        'accept: application/octet-stream\r\n';
      for (const [name, value] of Object.entries(request.headers)) head += `${name}: ${value}\r\n`;
      this.#socket.write(`${head}\r\n`, 'latin1');
    });
  }

  /** The next buffer the socket decrypts into: the body's destination when it is known, else the scratch. */
  buffer(): Uint8Array {
    const exchange = this.#exchange;
    if (exchange?.target && exchange.bodyLeft > 0) {
      this.#lastWasDirect = true;
      return exchange.target.subarray(exchange.filled, exchange.filled + exchange.bodyLeft);
    }
    this.#lastWasDirect = false;
    return this.#scratch;
  }

  onBytes(bytes: number, buffer: Buffer): void {
    const exchange = this.#exchange;
    if (this.#lastWasDirect && exchange) {
      exchange.received += bytes;
      exchange.filled += bytes;
      exchange.bodyLeft -= bytes;
      if (exchange.bodyLeft === 0) this.#complete();
      return;
    }
    const chunk = buffer.subarray(0, bytes);
    if (!exchange) {
      // Nothing was asked: a keep-alive connection must stay silent between exchanges.
      this.destroy();
      return;
    }
    exchange.received += bytes;
    try {
      this.#parse(exchange, chunk);
    } catch (error) {
      this.#fail(error);
    }
  }

  #parse(exchange: Exchange, chunk: Buffer): void {
    let at = 0;
    if (!exchange.headers) {
      exchange.head.push(Buffer.from(chunk));
      exchange.headBytes += chunk.length;
      const all = exchange.head.length === 1 ? exchange.head[0]! : Buffer.concat(exchange.head);
      exchange.head = [all];
      const end = all.indexOf('\r\n\r\n', Math.max(0, all.length - chunk.length - 3), 'latin1');
      if (end < 0) {
        if (exchange.headBytes > MAX_HEAD_BYTES) {
          throw this.#protocolError(exchange, `an answer whose headers exceed ${MAX_HEAD_BYTES} bytes`);
        }
        return;
      }
      this.#onHead(exchange, all.subarray(0, end).toString('latin1'));
      if (this.#exchange !== exchange) return; // answered with its headers alone
      chunk = all.subarray(end + 4);
      exchange.head = [];
    }
    while (at < chunk.length && this.#exchange === exchange) {
      if (exchange.chunked) {
        at = this.#chunked(exchange, chunk, at);
        continue;
      }
      const take = Math.min(exchange.bodyLeft, chunk.length - at);
      if (take === 0) throw this.#protocolError(exchange, 'more bytes than the answer is long');
      exchange.target!.set(chunk.subarray(at, at + take), exchange.filled);
      exchange.filled += take;
      exchange.bodyLeft -= take;
      at += take;
      if (exchange.bodyLeft === 0) {
        if (at < chunk.length) throw this.#protocolError(exchange, 'more bytes than the answer is long');
        this.#complete();
      }
    }
  }

  #onHead(exchange: Exchange, text: string): void {
    const lines = text.split('\r\n');
    const status = /^HTTP\/1\.([01]) (\d{3})(?: |$)/.exec(lines[0] ?? '');
    if (!status)
      throw this.#protocolError(exchange, `an answer that is not HTTP/1.x: ${JSON.stringify(lines[0])}`);
    const headers = new Map<string, string>();
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon <= 0) throw this.#protocolError(exchange, `a malformed header line ${JSON.stringify(line)}`);
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value);
    }
    exchange.status = Number(status[2]);
    exchange.headers = headers;
    const connection = (headers.get('connection') ?? '').toLowerCase();
    exchange.keepAlive =
      status[1] === '1' ? !connection.includes('close') : connection.includes('keep-alive');
    if (exchange.status === 100) {
      exchange.headers = undefined; // an interim answer: the real one follows
      return;
    }
    if (exchange.status !== 206) {
      // Its body is not read: this connection is not used again.
      this.reusable = false;
      this.#settle(undefined, { status: exchange.status, headers });
      return;
    }
    const { request } = exchange;
    const contentRange = headers.get('content-range') ?? '';
    const match = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(contentRange);
    if (
      !match ||
      Number(match[1]) !== request.offset ||
      Number(match[2]) !== request.offset + request.length - 1
    ) {
      throw new SourceProtocolError(
        `${request.what} for ${request.length} bytes answered Content-Range ${JSON.stringify(contentRange)}`,
      );
    }
    const encoding = (headers.get('transfer-encoding') ?? '').toLowerCase();
    const contentLength = headers.get('content-length');
    if (encoding !== '') {
      if (encoding !== 'chunked') {
        throw this.#protocolError(exchange, `a 206 with Transfer-Encoding ${JSON.stringify(encoding)}`);
      }
      exchange.chunked = { phase: 'size', line: '', left: 0 };
      exchange.bodyLeft = -1;
    } else if (contentLength !== undefined) {
      if (!/^\d+$/.test(contentLength)) {
        throw this.#protocolError(exchange, `a Content-Length of ${JSON.stringify(contentLength)}`);
      }
      const length = Number(contentLength);
      if (length > request.length) {
        throw new SourceProtocolError(
          `${request.what}: the answer is longer than the ${request.length} bytes asked for (${length})`,
        );
      }
      if (length < request.length) {
        throw new SourceProtocolError(
          `${request.what}: the answer is ${length} of the ${request.length} bytes asked for`,
        );
      }
      exchange.bodyLeft = length;
    } else {
      throw this.#protocolError(exchange, 'a 206 with neither Content-Length nor chunked encoding');
    }
    const target = request.allocate(request.length);
    if (!(target instanceof Uint8Array) || target.length !== request.length) {
      throw new SourceProtocolError('allocate() returned a buffer of the wrong size');
    }
    exchange.target = target;
  }

  /** Parses chunked framing from `chunk` at `at`; returns where it stopped. */
  #chunked(exchange: Exchange, chunk: Buffer, at: number): number {
    const state = exchange.chunked!;
    if (state.phase === 'data') {
      const take = Math.min(state.left, chunk.length - at);
      if (exchange.filled + take > exchange.request.length) {
        throw new SourceProtocolError(
          `${exchange.request.what}: the answer is longer than the ${exchange.request.length} bytes asked for`,
        );
      }
      exchange.target!.set(chunk.subarray(at, at + take), exchange.filled);
      exchange.filled += take;
      state.left -= take;
      if (state.left === 0) state.phase = 'crlf';
      return at + take;
    }
    const newline = chunk.indexOf(0x0a, at);
    const end = newline < 0 ? chunk.length : newline + 1;
    state.line += chunk.subarray(at, end).toString('latin1');
    if (state.line.length > 4096) throw this.#protocolError(exchange, 'a chunk line of more than 4 KiB');
    if (newline < 0) return end;
    const line = state.line.replace(/\r?\n$/, '');
    state.line = '';
    if (state.phase === 'crlf') {
      if (line !== '') throw this.#protocolError(exchange, 'chunk data not followed by CRLF');
      state.phase = 'size';
    } else if (state.phase === 'size') {
      const size = /^([0-9a-fA-F]{1,12})(?:;.*)?$/.exec(line);
      if (!size) throw this.#protocolError(exchange, `a chunk size line ${JSON.stringify(line)}`);
      state.left = Number.parseInt(size[1]!, 16);
      state.phase = state.left === 0 ? 'trailer' : 'data';
    } else if (line === '') {
      if (exchange.filled !== exchange.request.length) {
        throw new SourceProtocolError(
          `${exchange.request.what}: the answer ended after ${exchange.filled} of the ${exchange.request.length} bytes asked for`,
        );
      }
      if (end < chunk.length) throw this.#protocolError(exchange, 'more bytes than the answer is long');
      this.#complete();
    }
    return end;
  }

  #complete(): void {
    const exchange = this.#exchange!;
    if (!exchange.keepAlive) this.reusable = false;
    this.#settle(undefined, {
      status: 206,
      data: exchange.target!,
      contentRange: exchange.headers?.get('content-range') ?? '',
    });
  }

  #settle(error: unknown, answer?: RangeAnswer): void {
    const exchange = this.#exchange;
    if (!exchange) return;
    this.#exchange = undefined;
    clearTimeout(this.#timer);
    if (this.#onAbort) exchange.request.signal?.removeEventListener('abort', this.#onAbort);
    this.#onAbort = undefined;
    if (error !== undefined) exchange.reject(error);
    else exchange.resolve(answer!);
  }

  /** Fails the exchange and drops the connection (its stream is somewhere inside an answer). */
  #fail(error: unknown): void {
    this.reusable = false;
    this.#settle(error);
    this.#socket.destroy();
  }

  #lost(error: DrkitError | undefined): void {
    if (!this.#gone) {
      this.#gone = true;
      this.reusable = false;
      clearTimeout(this.#idleTimer);
      this.#onIdleGone?.();
      this.#onGone();
    }
    const exchange = this.#exchange;
    if (!exchange) return;
    const closedError = error ?? this.#closedError(exchange);
    if (exchange.received === 0) this.#settle(new StaleConnection(closedError));
    else this.#settle(closedError);
  }

  #closedError(exchange?: Exchange): DrkitError {
    return transportError(
      Object.assign(
        new Error(
          exchange && exchange.received > 0
            ? 'the connection closed in the middle of the answer'
            : 'the connection closed before an answer',
        ),
        { code: 'ECONNRESET' },
      ),
      'GET',
      this.#url,
      0,
    );
  }

  #protocolError(exchange: Exchange, message: string): SourceProtocolError {
    return new SourceProtocolError(`${exchange.request.what}: the file service broke HTTP/1.1: ${message}`);
  }
}
