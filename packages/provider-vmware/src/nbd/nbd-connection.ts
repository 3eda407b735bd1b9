import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { type DrkitError, SourceProtocolError, UnreachableError } from '@drkit/core';
import { ByteCoverage } from './byte-coverage.js';
import { closedError, commandError, socketError } from './nbd-errors.js';
import { type HandshakeSettings, type NegotiatedExport, negotiate } from './nbd-handshake.js';
import {
  CMD_BLOCK_STATUS,
  CMD_DISC,
  CMD_READ,
  MAX_BLOCK_STATUS_DESCRIPTORS,
  MAX_STRING_BYTES,
  NBD_ESHUTDOWN,
  REPLY_FLAG_DONE,
  REPLY_TYPE_BLOCK_STATUS,
  REPLY_TYPE_ERROR,
  REPLY_TYPE_ERROR_OFFSET,
  REPLY_TYPE_FLAG_ERROR,
  REPLY_TYPE_NONE,
  REPLY_TYPE_OFFSET_DATA,
  REPLY_TYPE_OFFSET_HOLE,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  STATE_HOLE,
  STATE_ZERO,
  STRUCTURED_REPLY_MAGIC,
} from './nbd-protocol.js';
import { SocketInput } from './socket-input.js';

/** Where the server listens. */
export type NbdEndpoint =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'unix'; readonly path: string };

/** One extent of a block status reply, inside the request's range. */
export interface RawExtent {
  readonly offset: number;
  readonly length: number;
  /** The `base:allocation` status flags. */
  readonly flags: number;
}

/** A request sent and not yet answered; `abandon()` stops it writing into its buffer and ignores its outcome. */
export interface SentRequest<T> {
  readonly done: Promise<T>;
  abandon(): void;
}

interface ReadState {
  readonly kind: 'read';
  readonly offset: number;
  readonly length: number;
  /** Where the data goes; undefined once abandoned (then it is read and dropped). */
  target: Uint8Array | undefined;
  /** Index in `target` of the byte at `offset`. */
  readonly targetOffset: number;
  readonly coverage: ByteCoverage;
  error: DrkitError | undefined;
  /** Nobody waits for the outcome any more (the caller aborted). */
  abandoned: boolean;
  readonly settle: (error: DrkitError | undefined) => void;
}

interface StatusState {
  readonly kind: 'status';
  readonly offset: number;
  readonly length: number;
  readonly extents: RawExtent[];
  /** Bytes the descriptors of the one status chunk described so far, from `offset`. */
  described: number;
  chunks: number;
  error: DrkitError | undefined;
  abandoned: boolean;
  readonly settle: (error: DrkitError | undefined) => void;
}

type RequestState = ReadState | StatusState;

enum Parse {
  Header,
  Fixed,
  Data,
}

/** What a chunk's fixed part is, once read. */
enum Fixed {
  OffsetData,
  OffsetHole,
  StatusContext,
  StatusDescriptor,
  Error,
}

/** Reads of at least this much data go straight into the read's buffer (see SocketInput). */
const DIRECT_READ_MIN_BYTES = 16 * 1024;

/** Bytes of the largest fixed part this client reads at once: an error chunk with the longest message. */
const MAX_FIXED_BYTES = 14 + MAX_STRING_BYTES + 2048;

/**
 * One connection to one export, in the transmission phase. Replies are parsed as they arrive, synchronously, with
 * data copied straight into each request's buffer: nothing is buffered beyond the requests in flight, whose
 * number the pool bounds (a server can only send what was asked for; anything else is a protocol error that
 * drops the connection).
 */
export class NbdConnection {
  readonly negotiated: NegotiatedExport;
  readonly #socket: Duplex;
  readonly #server: string;
  readonly #pending = new Map<number, RequestState>();
  #nextHandle = 1;
  #lost: DrkitError | undefined;
  #draining = false;
  #closing = false;
  #reportedLost = false;
  /** Requests written in this turn wait in the socket until {@link NbdConnection.#uncork}. */
  #corked = false;
  #onIdle: (() => void) | undefined;
  /** Told once when the connection is lost (not when it is closed on purpose). */
  onLost: ((error: DrkitError) => void) | undefined;
  /** Told after every request settles. */
  onSettled: (() => void) | undefined;

  // Parser state.
  #parse = Parse.Header;
  readonly #header = Buffer.alloc(20);
  #headerLength = 0;
  readonly #fixedBuffer = Buffer.alloc(MAX_FIXED_BYTES);
  #fixedNeed = 0;
  #fixedLength = 0;
  #fixedKind = Fixed.OffsetData;
  #chunkRequest: RequestState | undefined;
  #chunkHandle = 0;
  #chunkFlags = 0;
  #chunkType = 0;
  #chunkLength = 0;
  #descriptorsLeft = 0;
  #dataLeft = 0;
  /** Bytes of data of the chunk being read. */
  #dataLength = 0;
  /** Bytes of read replies' data copied from the scratch buffer, and read straight into the reads' buffers. */
  #copiedBytes = 0;
  #directBytes = 0;
  #dataTarget: ReadState | undefined;
  #dataAt = 0;

  private constructor(socket: Duplex, negotiated: NegotiatedExport, server: string) {
    this.#socket = socket;
    this.negotiated = negotiated;
    this.#server = server;
  }

  /** Connects, runs the handshake and enters the transmission phase. */
  static async open(
    endpoint: NbdEndpoint,
    settings: HandshakeSettings,
    signal: AbortSignal | undefined,
  ): Promise<NbdConnection> {
    signal?.throwIfAborted();
    // A plain socket is read through `onread` (reply data straight into the reads' buffers); TLS wraps the
    // socket's handle, so a socket that will carry TLS is read through `data` events.
    const input = settings.tls ? undefined : new SocketInput();
    const socket = await connectSocket(endpoint, settings.server, signal, input);
    let result: Awaited<ReturnType<typeof negotiate>>;
    try {
      result = await negotiate(socket, settings, signal, input);
    } catch (error) {
      socket.destroy();
      throw error;
    }
    const connection = new NbdConnection(result.socket, result.negotiated, settings.server);
    connection.#start(result.leftover, input);
    return connection;
  }

  /** Requests in flight, abandoned ones included until their reply arrives. */
  get inFlight(): number {
    return this.#pending.size;
  }

  /** Bytes of read replies' data copied into the reads' buffers from the socket's scratch buffer. */
  get copiedBytes(): number {
    return this.#copiedBytes;
  }

  /** Bytes of read replies' data the socket read straight into the reads' buffers. */
  get directBytes(): number {
    return this.#directBytes;
  }

  /** Whether new requests may be sent. */
  get usable(): boolean {
    return this.#lost === undefined && !this.#draining && !this.#closing;
  }

  /** Why the connection was lost, if it was. */
  get lost(): DrkitError | undefined {
    return this.#lost;
  }

  /** Sends `NBD_CMD_READ` for `[offset, offset + length)`, answered into `target` from `targetOffset`. */
  read(offset: number, length: number, target: Uint8Array, targetOffset: number): SentRequest<void> {
    let settle!: (error: DrkitError | undefined) => void;
    const done = new Promise<void>((resolve, reject) => {
      settle = (error) => (error ? reject(error) : resolve());
    });
    const state: ReadState = {
      kind: 'read',
      offset,
      length,
      target,
      targetOffset,
      coverage: new ByteCoverage(),
      error: undefined,
      abandoned: false,
      settle,
    };
    this.#send(CMD_READ, 0, offset, length, state);
    return {
      done,
      abandon: () => {
        state.target = undefined;
        this.#abandon(state, done);
      },
    };
  }

  /** Sends `NBD_CMD_BLOCK_STATUS` for the range; resolves with its extents, clipped to the range. */
  blockStatus(offset: number, length: number): SentRequest<RawExtent[]> {
    let settle!: (error: DrkitError | undefined) => void;
    const state: StatusState = {
      kind: 'status',
      offset,
      length,
      extents: [],
      described: 0,
      chunks: 0,
      error: undefined,
      abandoned: false,
      settle: (error) => settle(error),
    };
    const done = new Promise<RawExtent[]>((resolve, reject) => {
      settle = (error) => (error ? reject(error) : resolve(state.extents));
    });
    this.#send(CMD_BLOCK_STATUS, 0, offset, length, state);
    return { done, abandon: () => this.#abandon(state, done) };
  }

  #abandon(state: RequestState, done: Promise<unknown>): void {
    done.catch(() => undefined);
    if (state.abandoned) return;
    state.abandoned = true;
    this.#wakeIfIdle();
  }

  /** Requests in flight someone still waits for. */
  #awaited(): number {
    let count = 0;
    for (const request of this.#pending.values()) if (!request.abandoned) count++;
    return count;
  }

  #wakeIfIdle(): void {
    if (this.#awaited() > 0) return;
    const idle = this.#onIdle;
    this.#onIdle = undefined;
    idle?.();
  }

  /**
   * Soft disconnect: waits for the requests in flight that a caller still waits for, sends `NBD_CMD_DISC` and
   * half-closes; the server then closes. When only abandoned requests are left (a server that never answered
   * them), it does not wait for the server. An aborted `signal` drops the connection at once.
   */
  async close(signal?: AbortSignal): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    if (this.#lost) return;
    try {
      if (this.#awaited() > 0) {
        await new Promise<void>((resolve, reject) => {
          const onAbort = () => reject(signal?.reason);
          signal?.addEventListener('abort', onAbort, { once: true });
          this.#onIdle = () => {
            signal?.removeEventListener('abort', onAbort);
            resolve();
          };
        });
      }
      if (this.#lost) return;
      await this.#disconnect(signal, this.#pending.size === 0);
    } finally {
      this.#socket.destroy();
    }
  }

  /** Drops the connection (a hard disconnect) and fails what is in flight with `error`. */
  destroy(error: DrkitError): void {
    this.#fail(error);
  }

  async #disconnect(signal: AbortSignal | undefined, waitForServer: boolean): Promise<void> {
    const request = Buffer.alloc(28);
    request.writeUInt32BE(REQUEST_MAGIC, 0);
    request.writeUInt16BE(CMD_DISC, 6);
    if (!waitForServer) {
      await new Promise<void>((resolve) => this.#socket.end(request, () => resolve()));
      return;
    }
    const closed = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 2000);
      timer.unref?.();
      const onAbort = () => resolve();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#socket.once('close', () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
    });
    this.#socket.end(request);
    await closed;
  }

  #start(leftover: Buffer, input: SocketInput | undefined): void {
    const socket = this.#socket;
    if (input) {
      input.sink = this.#onData;
      input.direct = this.#directView;
      input.advance = this.#onDirect;
      input.scratchLimit = this.#scratchLimit;
    } else {
      socket.on('data', this.#onData);
    }
    socket.on('error', (error: Error) => this.#fail(socketError(error, this.#server, 'while reading')));
    socket.on('end', this.#onEnd);
    socket.on('close', this.#onEnd);
    if (leftover.length > 0) this.#onData(leftover);
    socket.resume();
  }

  #send(command: number, flags: number, offset: number, length: number, state: RequestState): void {
    if (this.#lost) {
      state.settle(this.#lost);
      return;
    }
    let handle = this.#nextHandle;
    while (this.#pending.has(handle)) handle = handle >= 0xffffffff ? 1 : handle + 1;
    this.#nextHandle = handle >= 0xffffffff ? 1 : handle + 1;
    this.#pending.set(handle, state);
    const request = Buffer.allocUnsafe(28);
    request.writeUInt32BE(REQUEST_MAGIC, 0);
    request.writeUInt16BE(flags, 4);
    request.writeUInt16BE(command, 6);
    request.writeUInt32BE(0, 8);
    request.writeUInt32BE(handle, 12);
    request.writeBigUInt64BE(BigInt(offset), 16);
    request.writeUInt32BE(length, 24);
    if (!this.#corked) {
      // The requests sent in this turn of the event loop (the pieces of a read, the reads started together) go
      // out in one write (writev) rather than a system call of 28 bytes each.
      this.#corked = true;
      this.#socket.cork();
      queueMicrotask(this.#uncork);
    }
    this.#socket.write(request);
  }

  readonly #uncork = (): void => {
    this.#corked = false;
    if (!this.#socket.destroyed) this.#socket.uncork();
  };

  readonly #onEnd = (): void => {
    if (this.#lost) return;
    const inFlight = this.#pending.size;
    if (this.#closing && inFlight === 0) {
      this.#lost = closedError(this.#server, 'after NBD_CMD_DISC');
      return;
    }
    this.#fail(
      inFlight > 0
        ? closedError(this.#server, `with ${inFlight} request${inFlight === 1 ? '' : 's'} in flight`)
        : closedError(this.#server, 'while idle'),
    );
  };

  #fail(error: DrkitError): void {
    if (this.#lost) return;
    this.#lost = error;
    this.#socket.destroy();
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const request of pending) request.settle(error);
    if (!this.#closing) this.#reportLost(error);
    this.#onIdle?.();
  }

  #protocolError(message: string): SourceProtocolError {
    return new SourceProtocolError(`${this.#server} broke the NBD protocol: ${message}`);
  }

  readonly #onData = (chunk: Buffer): void => {
    try {
      let at = 0;
      while (at < chunk.length && !this.#lost) {
        if (this.#parse === Parse.Data) {
          const take = Math.min(this.#dataLeft, chunk.length - at);
          const target = this.#dataTarget?.target;
          if (target) {
            target.set(chunk.subarray(at, at + take), this.#dataAt);
            this.#copiedBytes += take;
          }
          at += take;
          this.#dataAt += take;
          this.#dataLeft -= take;
          if (this.#dataLeft === 0) this.#endOfChunk();
        } else if (this.#parse === Parse.Header) {
          const need = this.#headerLength < 4 ? 4 : this.#headerSize();
          const take = Math.min(need - this.#headerLength, chunk.length - at);
          chunk.copy(this.#header, this.#headerLength, at, at + take);
          at += take;
          this.#headerLength += take;
          if (this.#headerLength === 4) this.#headerSize();
          if (this.#headerLength >= 16 && this.#headerLength === this.#headerSize()) this.#onHeader();
        } else {
          const take = Math.min(this.#fixedNeed - this.#fixedLength, chunk.length - at);
          chunk.copy(this.#fixedBuffer, this.#fixedLength, at, at + take);
          at += take;
          this.#fixedLength += take;
          if (this.#fixedLength === this.#fixedNeed) this.#onFixed();
        }
      }
    } catch (error) {
      this.#fail(
        SourceProtocolError.isInstance(error)
          ? error
          : this.#protocolError(error instanceof Error ? error.message : String(error)),
      );
    }
  };

  /**
   * Where the socket may read next, straight into a read's buffer: the rest of a data chunk of at least 16 KiB
   * (smaller ones come through the scratch buffer with the replies around them).
   */
  readonly #directView = (): Uint8Array | undefined => {
    if (this.#parse !== Parse.Data || this.#dataLength < DIRECT_READ_MIN_BYTES || this.#lost)
      return undefined;
    const target = this.#dataTarget?.target;
    return target?.subarray(this.#dataAt, this.#dataAt + this.#dataLeft);
  };

  /**
   * When the next bytes are a reply's start, the bytes left of it: a structured chunk's 20-byte header and a data
   * chunk's 8-byte offset (a simple reply's 16-byte header), so that the socket reads no data into the scratch
   * buffer; else 0 (read as much as is waiting). Also while no read is in flight: the socket takes the buffer for
   * its next read at once, before the next requests are sent. See SocketInput.
   */
  readonly #scratchLimit = (): number => {
    if (this.#lost) return 0;
    if (this.#parse === Parse.Header) {
      const simple = this.#headerLength >= 4 && this.#header.readUInt32BE(0) === SIMPLE_REPLY_MAGIC;
      return simple ? 16 - this.#headerLength : 28 - this.#headerLength;
    }
    if (this.#parse === Parse.Fixed && this.#fixedKind === Fixed.OffsetData) {
      return this.#fixedNeed - this.#fixedLength;
    }
    return 0;
  };

  /** `bytes` of data landed in the view {@link NbdConnection.#directView} gave. */
  readonly #onDirect = (bytes: number): void => {
    if (this.#lost || this.#parse !== Parse.Data) return;
    try {
      this.#dataAt += bytes;
      this.#dataLeft -= bytes;
      this.#directBytes += bytes;
      if (this.#dataLeft === 0) this.#endOfChunk();
    } catch (error) {
      this.#fail(
        SourceProtocolError.isInstance(error)
          ? error
          : this.#protocolError(error instanceof Error ? error.message : String(error)),
      );
    }
  };

  /** 16 for a simple reply, 20 for a structured chunk, from the magic. */
  #headerSize(): number {
    const magic = this.#header.readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) return 16;
    if (magic === STRUCTURED_REPLY_MAGIC) return 20;
    throw this.#protocolError(`a reply with the unknown magic 0x${magic.toString(16)}`);
  }

  #request(handleHigh: number, handleLow: number): RequestState {
    const request = handleHigh === 0 ? this.#pending.get(handleLow) : undefined;
    if (!request) {
      const handle = (BigInt(handleHigh) << 32n) | BigInt(handleLow);
      throw this.#protocolError(`a reply for the handle ${handle}, which no request in flight has`);
    }
    return request;
  }

  #onHeader(): void {
    const header = this.#header;
    this.#headerLength = 0;
    if (header.readUInt32BE(0) === SIMPLE_REPLY_MAGIC) {
      this.#onSimpleReply(header.readUInt32BE(4), header.readUInt32BE(8), header.readUInt32BE(12));
      return;
    }
    if (!this.negotiated.structuredReplies) {
      throw this.#protocolError('a structured reply chunk, which was not negotiated');
    }
    const flags = header.readUInt16BE(4);
    const type = header.readUInt16BE(6);
    const handleLow = header.readUInt32BE(12);
    const request = this.#request(header.readUInt32BE(8), handleLow);
    const length = header.readUInt32BE(16);
    this.#chunkRequest = request;
    this.#chunkHandle = handleLow;
    this.#chunkFlags = flags;
    this.#chunkType = type;
    this.#chunkLength = length;
    switch (type) {
      case REPLY_TYPE_NONE:
        if (length !== 0) throw this.#protocolError(`an NBD_REPLY_TYPE_NONE chunk of ${length} bytes`);
        if ((flags & REPLY_FLAG_DONE) === 0)
          throw this.#protocolError('an NBD_REPLY_TYPE_NONE chunk without DONE');
        this.#endOfChunk();
        return;
      case REPLY_TYPE_OFFSET_DATA:
        if (request.kind !== 'read')
          throw this.#protocolError('a data chunk in reply to a block status request');
        if (length < 9) throw this.#protocolError(`an NBD_REPLY_TYPE_OFFSET_DATA chunk of ${length} bytes`);
        this.#expectFixed(Fixed.OffsetData, 8);
        return;
      case REPLY_TYPE_OFFSET_HOLE:
        if (request.kind !== 'read')
          throw this.#protocolError('a hole chunk in reply to a block status request');
        if (length !== 12)
          throw this.#protocolError(`an NBD_REPLY_TYPE_OFFSET_HOLE chunk of ${length} bytes`);
        this.#expectFixed(Fixed.OffsetHole, 12);
        return;
      case REPLY_TYPE_BLOCK_STATUS: {
        if (request.kind !== 'status') throw this.#protocolError('a block status chunk in reply to a read');
        const descriptors = (length - 4) / 8;
        if (length < 12 || !Number.isInteger(descriptors)) {
          throw this.#protocolError(
            `an NBD_REPLY_TYPE_BLOCK_STATUS chunk of ${length} bytes (not 4 + 8n, n > 0)`,
          );
        }
        if (descriptors > MAX_BLOCK_STATUS_DESCRIPTORS) {
          throw this.#protocolError(`a block status chunk of ${descriptors} extents (more than 2^20)`);
        }
        if (++request.chunks > 1)
          throw this.#protocolError('two block status chunks for one request and context');
        this.#descriptorsLeft = descriptors;
        this.#expectFixed(Fixed.StatusContext, 4);
        return;
      }
      default:
        if ((type & REPLY_TYPE_FLAG_ERROR) === 0) {
          throw this.#protocolError(`a structured reply chunk of the unknown type ${type}`);
        }
        if (length < 6 || length > MAX_FIXED_BYTES) {
          throw this.#protocolError(`an error chunk of ${length} bytes`);
        }
        this.#expectFixed(Fixed.Error, length);
    }
  }

  #onSimpleReply(error: number, handleHigh: number, handleLow: number): void {
    const request = this.#request(handleHigh, handleLow);
    if (request.kind === 'read') {
      if (this.negotiated.structuredReplies) {
        throw this.#protocolError('a simple reply to NBD_CMD_READ after structured replies were negotiated');
      }
      if (error !== 0) {
        this.#finish(handleLow, request, this.#serverError(error, '', request));
        return;
      }
      this.#chunkRequest = request;
      this.#chunkHandle = handleLow;
      this.#chunkFlags = REPLY_FLAG_DONE;
      this.#chunkType = -1;
      request.coverage.add(request.offset, request.offset + request.length);
      this.#startData(request, request.targetOffset, request.length);
      return;
    }
    if (error === 0) throw this.#protocolError('a simple reply without error to NBD_CMD_BLOCK_STATUS');
    this.#finish(handleLow, request, this.#serverError(error, '', request));
  }

  #expectFixed(kind: Fixed, length: number): void {
    this.#fixedKind = kind;
    this.#fixedNeed = length;
    this.#fixedLength = 0;
    this.#parse = Parse.Fixed;
  }

  #startData(request: ReadState, at: number, length: number): void {
    this.#dataTarget = request;
    this.#dataAt = at;
    this.#dataLeft = length;
    this.#dataLength = length;
    this.#parse = Parse.Data;
  }

  #onFixed(): void {
    const fixed = this.#fixedBuffer;
    const request = this.#chunkRequest!;
    switch (this.#fixedKind) {
      case Fixed.OffsetData: {
        const read = request as ReadState;
        const offset = this.#offset(fixed.readBigUInt64BE(0));
        const length = this.#chunkLength - 8;
        this.#checkContent(read, offset, length, 'data');
        this.#startData(read, read.targetOffset + (offset - read.offset), length);
        return;
      }
      case Fixed.OffsetHole: {
        const read = request as ReadState;
        const offset = this.#offset(fixed.readBigUInt64BE(0));
        const length = fixed.readUInt32BE(8);
        if (length === 0) throw this.#protocolError('a hole chunk of 0 bytes');
        this.#checkContent(read, offset, length, 'hole');
        const start = read.targetOffset + (offset - read.offset);
        read.target?.fill(0, start, start + length);
        this.#endOfChunk();
        return;
      }
      case Fixed.StatusContext: {
        const id = fixed.readUInt32BE(0);
        if (id !== this.negotiated.allocationContextId) {
          throw this.#protocolError(`block status for the metadata context ${id}, which was not selected`);
        }
        this.#expectFixed(Fixed.StatusDescriptor, 8);
        return;
      }
      case Fixed.StatusDescriptor: {
        this.#onDescriptor(request as StatusState, fixed.readUInt32BE(0), fixed.readUInt32BE(4));
        if (--this.#descriptorsLeft > 0) this.#expectFixed(Fixed.StatusDescriptor, 8);
        else this.#endOfChunk();
        return;
      }
      case Fixed.Error:
        this.#onErrorChunk(request, fixed.subarray(0, this.#chunkLength));
        this.#endOfChunk();
        return;
    }
  }

  #offset(offset: bigint): number {
    if (offset > BigInt(Number.MAX_SAFE_INTEGER)) throw this.#protocolError(`a chunk at offset ${offset}`);
    return Number(offset);
  }

  #checkContent(read: ReadState, offset: number, length: number, what: string): void {
    const end = offset + length;
    if (offset < read.offset || end > read.offset + read.length) {
      throw this.#protocolError(
        `a ${what} chunk for [${offset}, ${end}) outside the read of [${read.offset}, ${read.offset + read.length})`,
      );
    }
    if (!read.coverage.add(offset, end)) {
      throw this.#protocolError(`a ${what} chunk for [${offset}, ${end}) that overlaps an earlier chunk`);
    }
  }

  #onDescriptor(status: StatusState, length: number, flags: number): void {
    if (length === 0) throw this.#protocolError('a block status extent of 0 bytes');
    if (status.described >= status.length) {
      throw this.#protocolError(
        `block status extents past the ${status.length} bytes asked for (only the last one may go beyond)`,
      );
    }
    const offset = status.offset + status.described;
    status.described += length;
    if (status.offset + status.described > this.negotiated.size) {
      throw this.#protocolError(
        `block status for [${offset}, ${offset + length}), past the export's size of ${this.negotiated.size} bytes`,
      );
    }
    const clipped = Math.min(length, status.length - (offset - status.offset));
    const state = flags & (STATE_HOLE | STATE_ZERO);
    const last = status.extents.at(-1);
    if (last && last.flags === state) {
      status.extents[status.extents.length - 1] = {
        offset: last.offset,
        length: last.length + clipped,
        flags: state,
      };
    } else {
      status.extents.push({ offset, length: clipped, flags: state });
    }
  }

  #onErrorChunk(request: RequestState, payload: Buffer): void {
    const error = payload.readUInt32BE(0);
    const messageLength = payload.readUInt16BE(4);
    const fixedTail = this.#chunkType === REPLY_TYPE_ERROR_OFFSET ? 8 : 0;
    if (error === 0) throw this.#protocolError('an error chunk with error 0');
    if (messageLength > MAX_STRING_BYTES || 6 + messageLength + fixedTail > payload.length) {
      throw this.#protocolError(`an error chunk whose message of ${messageLength} bytes does not fit`);
    }
    if (this.#chunkType === REPLY_TYPE_ERROR && payload.length !== 6 + messageLength) {
      throw this.#protocolError('an NBD_REPLY_TYPE_ERROR chunk longer than its message');
    }
    const message = payload.subarray(6, 6 + messageLength).toString('utf8');
    let where = '';
    if (this.#chunkType === REPLY_TYPE_ERROR_OFFSET) {
      if (payload.length !== 14 + messageLength) {
        throw this.#protocolError('an NBD_REPLY_TYPE_ERROR_OFFSET chunk of the wrong length');
      }
      const offset = this.#offset(payload.readBigUInt64BE(6 + messageLength));
      if (offset < request.offset || offset >= request.offset + request.length) {
        throw this.#protocolError(`an error at offset ${offset}, outside the request`);
      }
      where = ` at offset ${offset}`;
    }
    request.error ??= this.#serverError(error, message, request, where);
  }

  #serverError(error: number, message: string, request: RequestState, where = ''): DrkitError {
    if (error === NBD_ESHUTDOWN) this.#drain();
    const what =
      request.kind === 'read'
        ? `the NBD read of [${request.offset}, ${request.offset + request.length})${where} from ${this.#server}`
        : `the NBD block status of [${request.offset}, ${request.offset + request.length})${where} from ${this.#server}`;
    return commandError(error, message, what);
  }

  /** `NBD_ESHUTDOWN`: the spec asks for a soft disconnect; no new requests go to this connection. */
  #drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    this.#reportLost(new UnreachableError(`${this.#server} is shutting down`));
  }

  #reportLost(error: DrkitError): void {
    if (this.#reportedLost) return;
    this.#reportedLost = true;
    this.onLost?.(error);
  }

  #endOfChunk(): void {
    this.#parse = Parse.Header;
    this.#dataTarget = undefined;
    const request = this.#chunkRequest!;
    this.#chunkRequest = undefined;
    if ((this.#chunkFlags & REPLY_FLAG_DONE) === 0) return;
    let error = request.error;
    if (!error && request.kind === 'read' && request.coverage.covered !== request.length) {
      throw this.#protocolError(
        `a read of ${request.length} bytes at ${request.offset} marked done with ${request.coverage.covered} ` +
          'bytes sent',
      );
    }
    if (!error && request.kind === 'status' && request.chunks !== 1) {
      error = this.#protocolError('a block status reply without a block status chunk');
    }
    this.#finish(this.#chunkHandle, request, error);
  }

  #finish(handle: number, request: RequestState, error: DrkitError | undefined): void {
    this.#pending.delete(handle);
    if (request.kind === 'read') request.target = undefined;
    request.settle(error);
    this.onSettled?.();
    this.#wakeIfIdle();
    if (this.#draining && !this.#closing && this.#awaited() === 0) void this.close();
  }
}

/** Opens the TCP or Unix socket; honours `signal`; errors become `UnreachableError`. */
function connectSocket(
  endpoint: NbdEndpoint,
  server: string,
  signal: AbortSignal | undefined,
  input: SocketInput | undefined,
): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const onread = input ? { onread: input.onread } : {};
    const socket =
      endpoint.kind === 'tcp'
        ? netConnect({ host: endpoint.host, port: endpoint.port, noDelay: true, ...onread })
        : netConnect({ path: endpoint.path, ...onread });
    const cleanup = () => {
      socket.off('connect', onConnect);
      socket.off('error', onError);
      signal?.removeEventListener('abort', onAbort);
    };
    const onConnect = () => {
      cleanup();
      // The handshake and the connection listen for errors while they run; between them (and after a hard
      // disconnect) an error must not go unheard: 'close' follows it, and that is what they act on.
      socket.on('error', () => undefined);
      resolve(socket);
    };
    const onError = (error: Error) => {
      cleanup();
      socket.destroy();
      reject(socketError(error, server, 'to connect'));
    };
    const onAbort = () => {
      cleanup();
      socket.destroy();
      reject(signal?.reason);
    };
    socket.once('connect', onConnect);
    socket.once('error', onError);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
