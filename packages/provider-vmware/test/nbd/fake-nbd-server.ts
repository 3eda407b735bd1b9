// A tiny NBD server in the test process (Node `net`), for what real servers will not do: lie about sizes, answer
// unknown handles, send chunks outside a request, drop the connection mid-chunk, refuse options in every way the
// protocol allows. It speaks the fixed newstyle handshake and the transmission phase from doc/proto.md of
// NetworkBlockDevice/nbd; by default it serves `content` correctly, and `onRequest` replaces its answers.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  STARTTLS: 5,
  GO: 7,
  STRUCTURED_REPLY: 8,
  SET_META_CONTEXT: 10,
};
export const REP = {
  ACK: 1,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
};
export const CMD = { READ: 0, DISC: 2, BLOCK_STATUS: 7 };
export const CHUNK = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
};
export const DONE = 1;
export const EIO = 5;
export const EINVAL = 22;
export const ESHUTDOWN = 108;
const FLAG_HAS_FLAGS = 1;
const FLAG_READ_ONLY = 2;
const FLAG_CAN_MULTI_CONN = 1 << 8;

/** One request the server received in the transmission phase. */
export interface FakeRequest {
  readonly command: number;
  readonly flags: number;
  readonly handle: bigint;
  readonly offset: number;
  readonly length: number;
}

/** An option reply the test wants instead of the default one. */
export interface OptionAnswer {
  readonly replies: readonly { type: number; data?: Buffer }[];
}

export interface FakeNbdServerOptions {
  /** What the export holds; its length is the size advertised unless `advertisedSize` says otherwise. */
  readonly content: Buffer;
  readonly advertisedSize?: bigint;
  /** Raw bytes to greet with instead of the newstyle greeting. */
  readonly greeting?: Buffer;
  readonly handshakeFlags?: number;
  readonly transmissionFlags?: number;
  /** Sent as NBD_INFO_BLOCK_SIZE when given. */
  readonly blockSize?: readonly [minimum: number, preferred: number, maximum: number];
  /** The id given to base:allocation. Default 7. */
  readonly contextId?: number;
  /** Replaces the answer to an option (by option number); `undefined` keeps the default. */
  readonly onOption?: (option: number, data: Buffer, connection: number) => OptionAnswer | undefined;
  /**
   * Answers one request. Default: {@link FakeConnection.answer}. Called in arrival order; it may answer later,
   * out of order, or never.
   */
  readonly onRequest?: (request: FakeRequest, connection: FakeConnection) => unknown;
  /** Describes `[offset, offset + length)` for block status. Default: one allocated extent. */
  readonly extents?: (offset: number, length: number) => readonly [length: number, flags: number][];
  /** `unix` (default, a socket in a temp dir) or `tcp` on 127.0.0.1. */
  readonly transport?: 'unix' | 'tcp';
}

/** The server side of one connection, in the transmission phase. */
export interface FakeConnection {
  /** 1 for the first connection the server accepted. */
  readonly id: number;
  readonly structured: boolean;
  readonly socket: Socket;
  write(data: Buffer): void;
  /** The default, correct answer to a request. */
  answer(request: FakeRequest): void;
  /** Requests received and not yet answered with a final reply. */
  readonly outstanding: number;
}

export interface FakeNbdServer {
  readonly address: { readonly socketPath: string } | { readonly host: string; readonly port: number };
  /** Every request received, on every connection, in order. */
  readonly requests: FakeRequest[];
  /** Connections accepted so far. */
  readonly connections: () => number;
  /** Connections open now (accepted, and the client has not ended them). */
  readonly open: () => number;
  /** The largest number of connections open at once. */
  readonly maxOpen: () => number;
  /** The largest number of requests outstanding on one connection at once. */
  readonly maxOutstanding: () => number;
  /** Options received, in order, on every connection. */
  readonly options: { connection: number; option: number; data: Buffer }[];
  /** Whether a connection sent NBD_CMD_DISC. */
  readonly disconnects: () => number;
  /** Drops every connection (a hard disconnect). */
  dropAll(): void;
  close(): Promise<void>;
}

// Frames.

export function structuredChunk(flags: number, type: number, handle: bigint, payload: Buffer): Buffer {
  const header = Buffer.alloc(20);
  header.writeUInt32BE(0x668e33ef, 0);
  header.writeUInt16BE(flags, 4);
  header.writeUInt16BE(type, 6);
  header.writeBigUInt64BE(handle, 8);
  header.writeUInt32BE(payload.length, 16);
  return Buffer.concat([header, payload]);
}

export function dataChunk(handle: bigint, offset: number, data: Buffer, flags = DONE): Buffer {
  const payload = Buffer.alloc(8 + data.length);
  payload.writeBigUInt64BE(BigInt(offset), 0);
  data.copy(payload, 8);
  return structuredChunk(flags, CHUNK.OFFSET_DATA, handle, payload);
}

export function holeChunk(handle: bigint, offset: number, length: number, flags = DONE): Buffer {
  const payload = Buffer.alloc(12);
  payload.writeBigUInt64BE(BigInt(offset), 0);
  payload.writeUInt32BE(length, 8);
  return structuredChunk(flags, CHUNK.OFFSET_HOLE, handle, payload);
}

export function errorChunk(handle: bigint, error: number, message: string, flags = DONE): Buffer {
  const text = Buffer.from(message);
  const payload = Buffer.alloc(6 + text.length);
  payload.writeUInt32BE(error, 0);
  payload.writeUInt16BE(text.length, 4);
  text.copy(payload, 6);
  return structuredChunk(flags, CHUNK.ERROR, handle, payload);
}

export function statusChunk(
  handle: bigint,
  contextId: number,
  extents: readonly [number, number][],
  flags = DONE,
): Buffer {
  const payload = Buffer.alloc(4 + 8 * extents.length);
  payload.writeUInt32BE(contextId, 0);
  extents.forEach(([length, state], index) => {
    payload.writeUInt32BE(length, 4 + index * 8);
    payload.writeUInt32BE(state, 8 + index * 8);
  });
  return structuredChunk(flags, CHUNK.BLOCK_STATUS, handle, payload);
}

export function noneChunk(handle: bigint): Buffer {
  return structuredChunk(DONE, CHUNK.NONE, handle, Buffer.alloc(0));
}

export function simpleReply(handle: bigint, error: number, data?: Buffer): Buffer {
  const header = Buffer.alloc(16);
  header.writeUInt32BE(0x67446698, 0);
  header.writeUInt32BE(error, 4);
  header.writeBigUInt64BE(handle, 8);
  return data ? Buffer.concat([header, data]) : header;
}

function optionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(20);
  header.writeBigUInt64BE(0x3e889045565a9n, 0);
  header.writeUInt32BE(option, 8);
  header.writeUInt32BE(type >>> 0, 12);
  header.writeUInt32BE(data.length, 16);
  return Buffer.concat([header, data]);
}

function info(type: number, body: Buffer): Buffer {
  const data = Buffer.alloc(2 + body.length);
  data.writeUInt16BE(type, 0);
  body.copy(data, 2);
  return data;
}

/** Reads exact byte counts from a socket. */
class Bytes {
  #buffer = Buffer.alloc(0);
  #waiting: { length: number; resolve: (data: Buffer) => void; reject: (error: Error) => void } | undefined;
  #ended = false;

  constructor(socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk]);
      this.#wake();
    });
    const end = () => {
      this.#ended = true;
      this.#wake();
    };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', end);
  }

  read(length: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.#waiting = { length, resolve, reject };
      this.#wake();
    });
  }

  #wake(): void {
    const waiting = this.#waiting;
    if (!waiting) return;
    if (this.#buffer.length >= waiting.length) {
      this.#waiting = undefined;
      const data = this.#buffer.subarray(0, waiting.length);
      this.#buffer = this.#buffer.subarray(waiting.length);
      waiting.resolve(data);
    } else if (this.#ended) {
      this.#waiting = undefined;
      waiting.reject(new Error('closed'));
    }
  }
}

export async function startFakeNbdServer(options: FakeNbdServerOptions): Promise<FakeNbdServer> {
  const requests: FakeRequest[] = [];
  const optionsSeen: FakeNbdServer['options'] = [];
  const sockets = new Set<Socket>();
  let connections = 0;
  let open = 0;
  let maxOpen = 0;
  let maxOutstanding = 0;
  let disconnects = 0;
  const contextId = options.contextId ?? 7;
  const size = options.advertisedSize ?? BigInt(options.content.length);

  const serve = async (socket: Socket, id: number) => {
    const bytes = new Bytes(socket);
    if (options.greeting) {
      socket.write(options.greeting);
      return;
    }
    const greeting = Buffer.alloc(18);
    greeting.writeBigUInt64BE(0x4e42444d41474943n, 0);
    greeting.writeBigUInt64BE(0x49484156454f5054n, 8);
    const handshakeFlags = options.handshakeFlags ?? 3;
    greeting.writeUInt16BE(handshakeFlags, 16);
    socket.write(greeting);
    const clientFlags = (await bytes.read(4)).readUInt32BE(0);
    const noZeroes = (clientFlags & 2) !== 0;
    const transmissionFlags =
      options.transmissionFlags ?? FLAG_HAS_FLAGS | FLAG_READ_ONLY | FLAG_CAN_MULTI_CONN;
    let structured = false;
    let selected = false;
    for (;;) {
      const header = await bytes.read(16);
      const option = header.readUInt32BE(8);
      const data = Buffer.from(await bytes.read(header.readUInt32BE(12)));
      optionsSeen.push({ connection: id, option, data });
      if (option === OPT.EXPORT_NAME) {
        const answer = Buffer.alloc(noZeroes ? 10 : 134);
        answer.writeBigUInt64BE(size, 0);
        answer.writeUInt16BE(transmissionFlags, 8);
        socket.write(answer);
        selected = false;
        break;
      }
      const custom = options.onOption?.(option, data, id);
      if (custom) {
        for (const reply of custom.replies) socket.write(optionReply(option, reply.type, reply.data));
        if (option === OPT.STRUCTURED_REPLY && custom.replies.at(-1)?.type === REP.ACK) structured = true;
        if (option === OPT.GO && custom.replies.at(-1)?.type === REP.ACK) break;
        if (option === OPT.ABORT) {
          socket.end();
          return;
        }
        continue;
      }
      if (option === OPT.ABORT) {
        socket.end(optionReply(option, REP.ACK));
        return;
      }
      if (option === OPT.STRUCTURED_REPLY) {
        structured = true;
        socket.write(optionReply(option, REP.ACK));
      } else if (option === OPT.SET_META_CONTEXT) {
        const context = Buffer.alloc(4 + 'base:allocation'.length);
        context.writeUInt32BE(contextId, 0);
        context.write('base:allocation', 4);
        selected = true;
        socket.write(optionReply(option, REP.META_CONTEXT, context));
        socket.write(optionReply(option, REP.ACK));
      } else if (option === OPT.GO) {
        const exportInfo = Buffer.alloc(10);
        exportInfo.writeBigUInt64BE(size, 0);
        exportInfo.writeUInt16BE(transmissionFlags, 8);
        socket.write(optionReply(option, REP.INFO, info(0, exportInfo)));
        if (options.blockSize) {
          const sizes = Buffer.alloc(12);
          options.blockSize.forEach((value, index) => void sizes.writeUInt32BE(value, index * 4));
          socket.write(optionReply(option, REP.INFO, info(3, sizes)));
        }
        socket.write(optionReply(option, REP.ACK));
        break;
      } else {
        socket.write(optionReply(option, REP.ERR_UNSUP));
      }
    }
    void selected;
    let outstanding = 0;
    const connection: FakeConnection = {
      id,
      structured,
      socket,
      get outstanding() {
        return outstanding;
      },
      write: (data) => {
        // A final reply ends a request (DONE flag, or any simple reply).
        if (data.length >= 16 && data.readUInt32BE(0) === 0x67446698) outstanding--;
        else if (data.length >= 20 && (data.readUInt16BE(4) & DONE) !== 0) outstanding--;
        socket.write(data);
      },
      answer: (request) => {
        if (request.command === CMD.READ) {
          const data = options.content.subarray(request.offset, request.offset + request.length);
          connection.write(
            structured
              ? dataChunk(request.handle, request.offset, data)
              : simpleReply(request.handle, 0, data),
          );
        } else if (request.command === CMD.BLOCK_STATUS) {
          const extents = options.extents?.(request.offset, request.length) ?? [[request.length, 0]];
          connection.write(statusChunk(request.handle, contextId, extents));
        }
      },
    };
    for (;;) {
      const header = await bytes.read(28);
      const request: FakeRequest = {
        flags: header.readUInt16BE(4),
        command: header.readUInt16BE(6),
        handle: header.readBigUInt64BE(8),
        offset: Number(header.readBigUInt64BE(16)),
        length: header.readUInt32BE(24),
      };
      if (request.command === CMD.DISC) {
        disconnects++;
        socket.end();
        return;
      }
      requests.push(request);
      outstanding++;
      maxOutstanding = Math.max(maxOutstanding, outstanding);
      if (options.onRequest) void options.onRequest(request, connection);
      else connection.answer(request);
    }
  };

  const server: Server = createServer((socket) => {
    sockets.add(socket);
    open++;
    maxOpen = Math.max(maxOpen, open);
    let ended = false;
    const gone = () => {
      if (ended) return;
      ended = true;
      open--;
    };
    // The client's half-close ('end') counts: it comes before the client sees the connection closed.
    socket.on('end', gone);
    socket.on('close', () => {
      gone();
      sockets.delete(socket);
    });
    socket.on('error', () => undefined);
    connections++;
    serve(socket, connections).catch(() => socket.destroy());
  });
  let dir: string | undefined;
  let address: FakeNbdServer['address'];
  if ((options.transport ?? 'unix') === 'unix') {
    dir = await mkdtemp(join(tmpdir(), 'drkit-fake-nbd-'));
    const socketPath = join(dir, 'nbd.sock');
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    address = { socketPath };
  } else {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const bound = server.address();
    if (typeof bound !== 'object' || !bound) throw new Error('no address');
    address = { host: '127.0.0.1', port: bound.port };
  }
  return {
    address,
    requests,
    options: optionsSeen,
    connections: () => connections,
    open: () => open,
    maxOpen: () => maxOpen,
    maxOutstanding: () => maxOutstanding,
    disconnects: () => disconnects,
    dropAll: () => {
      for (const socket of sockets) socket.destroy();
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (dir) await rm(dir, { recursive: true, force: true });
    },
  };
}

/** `length` bytes where each 8-byte word holds its own offset (as nbdkit's pattern plugin does). */
export function pattern(length: number): Buffer {
  const data = Buffer.alloc(length);
  for (let at = 0; at + 8 <= length; at += 8) data.writeBigUInt64BE(BigInt(at), at);
  return data;
}
