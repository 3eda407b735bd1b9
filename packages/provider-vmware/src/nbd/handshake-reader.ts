import type { Duplex } from 'node:stream';
import type { SocketInput } from './socket-input.js';

/** How many bytes the handshake reader keeps before it pauses the socket (TCP then pushes back on the server). */
const HIGH_WATER_BYTES = 64 * 1024;

/**
 * Reads exact byte counts from a socket during the handshake, where every step is request then reply. It holds at
 * most about {@link HIGH_WATER_BYTES} beyond what was asked for: past that it pauses the socket until a read takes
 * the bytes. `detach()` hands the bytes read ahead to the transmission phase and removes its listeners.
 */
export class HandshakeReader {
  readonly #socket: Duplex;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #ended: Error | undefined;
  #waiter: { length: number; resolve: (data: Buffer) => void; reject: (error: Error) => void } | undefined;
  readonly #closedError: () => Error;
  readonly #input: SocketInput | undefined;

  /**
   * `closedError` makes the error a read rejects with when the socket ends before the bytes arrive. With `input`
   * (a socket read through `onread`) the bytes come from it, else from `data` events.
   */
  constructor(socket: Duplex, closedError: () => Error, input?: SocketInput) {
    this.#socket = socket;
    this.#closedError = closedError;
    this.#input = input;
    // The input's scratch buffer is reused by the next read: keep a copy.
    if (input) input.sink = (chunk) => this.#onData(Buffer.from(chunk));
    else socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('close', this.#onEnd);
    socket.on('error', this.#onError);
  }

  /** Resolves with exactly `length` bytes; rejects when the socket ends, fails or `signal` aborts first. */
  read(length: number, signal?: AbortSignal): Promise<Buffer> {
    if (this.#waiter) throw new Error('HandshakeReader.read() called while a read is pending');
    if (this.#buffered >= length) return Promise.resolve(this.#take(length));
    if (this.#ended) return Promise.reject(this.#ended);
    signal?.throwIfAborted();
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.#waiter = undefined;
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiter = {
        length,
        resolve: (data) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(data);
        },
        reject: (error) => {
          signal?.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
      this.#socket.resume();
    });
  }

  /** Stops reading and returns the bytes received but not read (normally none), with the socket paused. */
  detach(): Buffer {
    this.#socket.pause();
    if (this.#input) this.#input.sink = () => undefined;
    else this.#socket.off('data', this.#onData);
    this.#socket.off('end', this.#onEnd);
    this.#socket.off('close', this.#onEnd);
    this.#socket.off('error', this.#onError);
    const rest = Buffer.concat(this.#chunks, this.#buffered);
    this.#chunks = [];
    this.#buffered = 0;
    return rest;
  }

  #take(length: number): Buffer {
    const all = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks, this.#buffered);
    const data = all.subarray(0, length);
    const rest = all.subarray(length);
    this.#chunks = rest.length > 0 ? [rest] : [];
    this.#buffered = rest.length;
    if (this.#buffered < HIGH_WATER_BYTES) this.#socket.resume();
    return data;
  }

  readonly #onData = (chunk: Buffer): void => {
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    const waiter = this.#waiter;
    if (waiter && this.#buffered >= waiter.length) {
      this.#waiter = undefined;
      waiter.resolve(this.#take(waiter.length));
    }
    if (this.#buffered >= HIGH_WATER_BYTES && !this.#waiter) this.#socket.pause();
  };

  readonly #onEnd = (): void => {
    this.#fail(this.#closedError());
  };

  readonly #onError = (error: Error): void => {
    this.#fail(error);
  };

  #fail(error: Error): void {
    this.#ended ??= error;
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.reject(this.#ended);
  }
}
