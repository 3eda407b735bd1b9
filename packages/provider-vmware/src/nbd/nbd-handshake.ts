import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { DrkitError, SourceProtocolError } from '@drkit/core';
import { HandshakeReader } from './handshake-reader.js';
import { closedError, optionReplyError, socketError } from './nbd-errors.js';
import type { NbdTlsOptions } from './nbd-export.js';
import {
  BASE_ALLOCATION,
  DEFAULT_MAXIMUM_PAYLOAD,
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_HAS_FLAGS,
  FLAG_NO_ZEROES,
  INFO_BLOCK_SIZE,
  INFO_DESCRIPTION,
  INFO_EXPORT,
  INIT_MAGIC,
  MAX_STRING_BYTES,
  OLDSTYLE_MAGIC,
  OPT_ABORT,
  OPT_EXPORT_NAME,
  OPT_GO,
  OPT_SET_META_CONTEXT,
  OPT_STARTTLS,
  OPT_STRUCTURED_REPLY,
  OPTION_MAGIC,
  OPTION_REPLY_MAGIC,
  optionName,
  REP_ACK,
  REP_ERR_POLICY,
  REP_ERR_SHUTDOWN,
  REP_ERR_TLS_REQD,
  REP_ERR_UNSUP,
  REP_FLAG_ERROR,
  REP_INFO,
  REP_META_CONTEXT,
} from './nbd-protocol.js';
import type { SocketInput } from './socket-input.js';

/** The longest option reply this client reads; every reply it asks for is far shorter. */
const MAX_OPTION_REPLY_BYTES = 64 * 1024;

/** What the handshake settled. */
export interface NegotiatedExport {
  readonly size: number;
  readonly transmissionFlags: number;
  readonly structuredReplies: boolean;
  /** The id of `base:allocation`, when the server selected it. */
  readonly allocationContextId: number | undefined;
  readonly blockSize: { readonly minimum: number; readonly preferred: number; readonly maximum: number };
  readonly description: string | undefined;
  readonly tls: boolean;
}

/** What the handshake needs to know. */
export interface HandshakeSettings {
  readonly exportName: string;
  /** The server as messages name it (`nbd://127.0.0.1:10809/name`). */
  readonly server: string;
  /** TLS options and the host for its default servername; undefined: no TLS. */
  readonly tls: (NbdTlsOptions & { readonly host: string | undefined }) | undefined;
}

/** The socket after the handshake (a TLS socket when TLS was negotiated) and the bytes read ahead. */
export interface HandshakeResult {
  readonly socket: Duplex;
  readonly negotiated: NegotiatedExport;
  readonly leftover: Buffer;
}

interface OptionReply {
  readonly type: number;
  readonly data: Buffer;
}

/**
 * Runs the fixed newstyle handshake on a connected socket: client flags, `NBD_OPT_STARTTLS` when TLS is
 * configured, `NBD_OPT_STRUCTURED_REPLY`, `NBD_OPT_SET_META_CONTEXT` for `base:allocation`, then `NBD_OPT_GO` with
 * `NBD_INFO_BLOCK_SIZE` (falling back to `NBD_OPT_EXPORT_NAME` for a server without `NBD_OPT_GO`, or one that is
 * not fixed newstyle). On a refusal it sends `NBD_OPT_ABORT` before rejecting; the caller closes the socket.
 */
export async function negotiate(
  socket: Duplex,
  settings: HandshakeSettings,
  signal: AbortSignal | undefined,
  input?: SocketInput,
): Promise<HandshakeResult> {
  const session = new Handshake(socket, settings, signal, input);
  return session.run();
}

class Handshake {
  #socket: Duplex;
  #reader: HandshakeReader;
  readonly #settings: HandshakeSettings;
  readonly #signal: AbortSignal | undefined;
  #tls = false;

  constructor(
    socket: Duplex,
    settings: HandshakeSettings,
    signal: AbortSignal | undefined,
    input: SocketInput | undefined,
  ) {
    this.#socket = socket;
    this.#settings = settings;
    this.#signal = signal;
    this.#reader = this.#newReader(socket, input);
  }

  #newReader(socket: Duplex, input?: SocketInput): HandshakeReader {
    return new HandshakeReader(
      socket,
      () => closedError(this.#settings.server, 'during the handshake'),
      input,
    );
  }

  async run(): Promise<HandshakeResult> {
    const server = this.#settings.server;
    const greeting = await this.#read(18);
    if (greeting.readBigUInt64BE(0) !== INIT_MAGIC) {
      throw new SourceProtocolError(`${server} is not an NBD server (its first bytes are not NBDMAGIC)`);
    }
    const second = greeting.readBigUInt64BE(8);
    if (second === OLDSTYLE_MAGIC) {
      throw new SourceProtocolError(
        `${server} speaks the oldstyle NBD handshake, which this client does not: start the server in newstyle ` +
          'mode (the default of nbdkit and qemu-nbd)',
      );
    }
    if (second !== OPTION_MAGIC) {
      throw new SourceProtocolError(`${server} sent an unknown NBD handshake magic 0x${second.toString(16)}`);
    }
    const handshakeFlags = greeting.readUInt16BE(16);
    const fixed = (handshakeFlags & FLAG_FIXED_NEWSTYLE) !== 0;
    const noZeroes = (handshakeFlags & FLAG_NO_ZEROES) !== 0;
    const clientFlags = Buffer.alloc(4);
    clientFlags.writeUInt32BE((fixed ? FLAG_C_FIXED_NEWSTYLE : 0) | (noZeroes ? FLAG_C_NO_ZEROES : 0));
    this.#write(clientFlags);

    if (!fixed) {
      if (this.#settings.tls) {
        throw new SourceProtocolError(
          `${server} does not speak the fixed newstyle handshake, so it cannot start TLS, which \`tls\` requires`,
        );
      }
      return this.#exportName(noZeroes, false);
    }
    if (this.#settings.tls) await this.#startTls(this.#settings.tls);

    const structuredReplies = await this.#structuredReplies();
    const allocationContextId = structuredReplies ? await this.#selectAllocation() : undefined;
    const go = await this.#go();
    if (go === 'unsupported') return this.#exportName(noZeroes, structuredReplies);
    const negotiated: NegotiatedExport = {
      ...go,
      structuredReplies,
      allocationContextId,
      tls: this.#tls,
    };
    return { socket: this.#socket, negotiated, leftover: this.#reader.detach() };
  }

  async #startTls(tls: NbdTlsOptions & { readonly host: string | undefined }): Promise<void> {
    const reply = await this.#option(OPT_STARTTLS, Buffer.alloc(0));
    if (reply.type !== REP_ACK) {
      if (reply.type & REP_FLAG_ERROR) {
        await this.#abort();
        throw optionReplyError(OPT_STARTTLS, reply.type, errorMessage(reply.data), this.#context());
      }
      throw this.#unexpected(OPT_STARTTLS, reply.type);
    }
    const leftover = this.#reader.detach();
    if (leftover.length > 0) {
      throw new SourceProtocolError(
        `${this.#settings.server} sent bytes after acknowledging NBD_OPT_STARTTLS`,
      );
    }
    const plain = this.#socket;
    // The name checked against the certificate; sent as SNI unless it is an IP address (RFC 6066 forbids that).
    const name = tls.servername ?? tls.host ?? 'localhost';
    const secure = tlsConnect({
      socket: plain,
      host: name,
      ...(isIP(name) === 0 ? { servername: name } : {}),
      ...(tls.ca !== undefined ? { ca: tls.ca as string | Buffer | (string | Buffer)[] } : {}),
      ...(tls.cert !== undefined ? { cert: tls.cert } : {}),
      ...(tls.key !== undefined ? { key: tls.key } : {}),
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
    });
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error) => {
        cleanup();
        reject(socketError(error, this.#settings.server, 'while starting TLS'));
      };
      const onAbort = () => {
        cleanup();
        reject(this.#signal?.reason);
      };
      const cleanup = () => {
        secure.off('secureConnect', onSecure);
        secure.off('error', onError);
        this.#signal?.removeEventListener('abort', onAbort);
      };
      const onSecure = () => {
        cleanup();
        resolve();
      };
      secure.once('secureConnect', onSecure);
      secure.once('error', onError);
      this.#signal?.addEventListener('abort', onAbort, { once: true });
    }).catch((error: unknown) => {
      secure.destroy();
      throw error;
    });
    secure.on('error', () => undefined);
    this.#socket = secure;
    this.#reader = this.#newReader(secure);
    this.#tls = true;
  }

  async #structuredReplies(): Promise<boolean> {
    const reply = await this.#option(OPT_STRUCTURED_REPLY, Buffer.alloc(0));
    if (reply.type === REP_ACK) return true;
    if (reply.type === REP_ERR_UNSUP || reply.type === REP_ERR_POLICY) return false;
    throw await this.#refused(OPT_STRUCTURED_REPLY, reply);
  }

  /** `NBD_OPT_SET_META_CONTEXT` for `base:allocation`: its context id, or undefined when the server has none. */
  async #selectAllocation(): Promise<number | undefined> {
    const name = Buffer.from(this.#settings.exportName, 'utf8');
    const query = Buffer.from(BASE_ALLOCATION, 'utf8');
    const data = Buffer.alloc(4 + name.length + 4 + 4 + query.length);
    let at = data.writeUInt32BE(name.length, 0);
    at += name.copy(data, at);
    at = data.writeUInt32BE(1, at);
    at = data.writeUInt32BE(query.length, at);
    query.copy(data, at);
    this.#sendOption(OPT_SET_META_CONTEXT, data);
    let id: number | undefined;
    for (;;) {
      const reply = await this.#reply(OPT_SET_META_CONTEXT);
      if (reply.type === REP_META_CONTEXT) {
        if (reply.data.length < 5)
          throw this.#malformed(OPT_SET_META_CONTEXT, 'a context reply shorter than 5 bytes');
        if (reply.data.subarray(4).toString('utf8') === BASE_ALLOCATION) id = reply.data.readUInt32BE(0);
        continue;
      }
      if (reply.type === REP_ACK) return id;
      if (reply.type === REP_ERR_TLS_REQD || reply.type === REP_ERR_SHUTDOWN) {
        throw await this.#refused(OPT_SET_META_CONTEXT, reply);
      }
      // Any other error leaves no context selected: block status is then not used (spec: the command "replaces
      // all previously-set metadata contexts (including when this command fails)").
      if (reply.type & REP_FLAG_ERROR) return undefined;
      throw this.#unexpected(OPT_SET_META_CONTEXT, reply.type);
    }
  }

  async #go(): Promise<
    Pick<NegotiatedExport, 'size' | 'transmissionFlags' | 'blockSize' | 'description'> | 'unsupported'
  > {
    const name = Buffer.from(this.#settings.exportName, 'utf8');
    const data = Buffer.alloc(4 + name.length + 2 + 2);
    let at = data.writeUInt32BE(name.length, 0);
    at += name.copy(data, at);
    at = data.writeUInt16BE(1, at);
    data.writeUInt16BE(INFO_BLOCK_SIZE, at);
    this.#sendOption(OPT_GO, data);
    let exportInfo: { size: number; transmissionFlags: number } | undefined;
    let blockSize: NegotiatedExport['blockSize'] | undefined;
    let description: string | undefined;
    for (;;) {
      const reply = await this.#reply(OPT_GO);
      if (reply.type === REP_INFO) {
        if (reply.data.length < 2) throw this.#malformed(OPT_GO, 'an NBD_REP_INFO shorter than 2 bytes');
        const type = reply.data.readUInt16BE(0);
        if (type === INFO_EXPORT) {
          if (reply.data.length !== 12) throw this.#malformed(OPT_GO, 'an NBD_INFO_EXPORT not 12 bytes long');
          exportInfo = {
            size: this.#size(reply.data.readBigUInt64BE(2)),
            transmissionFlags: reply.data.readUInt16BE(10),
          };
        } else if (type === INFO_BLOCK_SIZE) {
          if (reply.data.length !== 14)
            throw this.#malformed(OPT_GO, 'an NBD_INFO_BLOCK_SIZE not 14 bytes long');
          blockSize = this.#blockSize(
            reply.data.readUInt32BE(2),
            reply.data.readUInt32BE(6),
            reply.data.readUInt32BE(10),
          );
        } else if (type === INFO_DESCRIPTION) {
          description = reply.data.subarray(2).toString('utf8');
        }
        // NBD_INFO_NAME and unknown types are ignored, as the spec asks.
        continue;
      }
      if (reply.type === REP_ACK) {
        if (!exportInfo) throw this.#malformed(OPT_GO, 'NBD_REP_ACK without NBD_INFO_EXPORT');
        this.#checkTransmissionFlags(exportInfo.transmissionFlags);
        return {
          ...exportInfo,
          blockSize: blockSize ?? defaultBlockSize(),
          description,
        };
      }
      if (reply.type === REP_ERR_UNSUP) return 'unsupported';
      throw await this.#refused(OPT_GO, reply);
    }
  }

  /** `NBD_OPT_EXPORT_NAME`: the old way into transmission, for servers without `NBD_OPT_GO`. */
  async #exportName(noZeroes: boolean, structuredReplies: boolean): Promise<HandshakeResult> {
    this.#sendOption(OPT_EXPORT_NAME, Buffer.from(this.#settings.exportName, 'utf8'));
    let answer: Buffer;
    try {
      answer = await this.#read(noZeroes ? 10 : 134);
    } catch (error) {
      if (this.#signal?.aborted) throw error;
      throw new SourceProtocolError(
        `${this.#settings.server} closed the connection when asked for the export ` +
          `${JSON.stringify(this.#settings.exportName)} with NBD_OPT_EXPORT_NAME (the export does not exist, or ` +
          'the server requires TLS)',
        { cause: error },
      );
    }
    const transmissionFlags = answer.readUInt16BE(8);
    this.#checkTransmissionFlags(transmissionFlags);
    const negotiated: NegotiatedExport = {
      size: this.#size(answer.readBigUInt64BE(0)),
      transmissionFlags,
      // Without NBD_OPT_GO the server saw no NBD_OPT_SET_META_CONTEXT for the export it now serves.
      structuredReplies,
      allocationContextId: undefined,
      blockSize: defaultBlockSize(),
      description: undefined,
      tls: this.#tls,
    };
    return { socket: this.#socket, negotiated, leftover: this.#reader.detach() };
  }

  #size(size: bigint): number {
    if (size > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new SourceProtocolError(
        `${this.#settings.server} advertised an export of ${size} bytes, beyond 2^53`,
      );
    }
    return Number(size);
  }

  #blockSize(minimum: number, preferred: number, maximum: number): NegotiatedExport['blockSize'] {
    const powerOfTwo = (value: number) => value > 0 && (value & (value - 1)) === 0;
    if (!powerOfTwo(minimum) || minimum > 65536) {
      throw this.#malformed(OPT_GO, `a minimum block size of ${minimum} (must be a power of 2 up to 65536)`);
    }
    if (!powerOfTwo(preferred) || preferred < Math.max(minimum, 512)) {
      throw this.#malformed(
        OPT_GO,
        `a preferred block size of ${preferred} (must be a power of 2, at least 512)`,
      );
    }
    if (maximum < preferred) {
      throw this.#malformed(
        OPT_GO,
        `a maximum payload of ${maximum}, below the preferred block size ${preferred}`,
      );
    }
    return { minimum, preferred, maximum };
  }

  #checkTransmissionFlags(flags: number): void {
    if ((flags & FLAG_HAS_FLAGS) === 0) {
      throw new SourceProtocolError(
        `${this.#settings.server} sent transmission flags without NBD_FLAG_HAS_FLAGS`,
      );
    }
  }

  #context(): { server: string; exportName: string } {
    return { server: this.#settings.server, exportName: this.#settings.exportName };
  }

  /** Sends `option` and reads its one reply. */
  async #option(option: number, data: Buffer): Promise<OptionReply> {
    this.#sendOption(option, data);
    return this.#reply(option);
  }

  async #refused(option: number, reply: OptionReply): Promise<DrkitError> {
    if ((reply.type & REP_FLAG_ERROR) === 0) return this.#unexpected(option, reply.type);
    await this.#abort();
    return optionReplyError(option, reply.type, errorMessage(reply.data), this.#context());
  }

  /** A soft disconnect (`NBD_OPT_ABORT`), answered or not: the spec lets the server close without a reply. */
  async #abort(): Promise<void> {
    try {
      this.#sendOption(OPT_ABORT, Buffer.alloc(0));
      const ended = new AbortController();
      const timer = setTimeout(() => ended.abort(), 1000);
      timer.unref?.();
      try {
        await this.#reply(
          OPT_ABORT,
          AbortSignal.any([ended.signal, ...(this.#signal ? [this.#signal] : [])]),
        );
      } finally {
        clearTimeout(timer);
      }
    } catch {
      // The session is over either way; the caller closes the socket.
    }
  }

  #sendOption(option: number, data: Buffer): void {
    const header = Buffer.alloc(16);
    header.writeBigUInt64BE(OPTION_MAGIC, 0);
    header.writeUInt32BE(option, 8);
    header.writeUInt32BE(data.length, 12);
    this.#write(data.length > 0 ? Buffer.concat([header, data]) : header);
  }

  #write(data: Buffer): void {
    this.#socket.write(data);
  }

  async #reply(option: number, signal = this.#signal): Promise<OptionReply> {
    const header = await this.#read(20, signal);
    if (header.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) {
      throw this.#malformed(option, 'a reply without the option reply magic');
    }
    const answered = header.readUInt32BE(8);
    if (answered !== option) throw this.#malformed(option, `a reply to ${optionName(answered)} instead`);
    const type = header.readUInt32BE(12);
    const length = header.readUInt32BE(16);
    if (length > MAX_OPTION_REPLY_BYTES) {
      throw this.#malformed(
        option,
        `a reply of ${length} bytes (this client reads at most ${MAX_OPTION_REPLY_BYTES})`,
      );
    }
    const data = length > 0 ? Buffer.from(await this.#read(length, signal)) : Buffer.alloc(0);
    return { type, data };
  }

  async #read(length: number, signal = this.#signal): Promise<Buffer> {
    try {
      return await this.#reader.read(length, signal);
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (DrkitError.isInstance(error)) throw error;
      throw socketError(error, this.#settings.server, 'during the handshake');
    }
  }

  #unexpected(option: number, type: number): SourceProtocolError {
    return this.#malformed(option, `an unexpected reply type ${type}`);
  }

  #malformed(option: number, what: string): SourceProtocolError {
    return new SourceProtocolError(`${this.#settings.server} answered ${optionName(option)} with ${what}`);
  }
}

function defaultBlockSize(): NegotiatedExport['blockSize'] {
  return { minimum: 1, preferred: 4096, maximum: DEFAULT_MAXIMUM_PAYLOAD };
}

function errorMessage(data: Buffer): string {
  return data.subarray(0, MAX_STRING_BYTES).toString('utf8');
}
