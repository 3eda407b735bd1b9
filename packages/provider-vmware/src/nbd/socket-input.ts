import type { OnReadOpts } from 'node:net';

/** Bytes of the buffer the socket reads into when no request's buffer is the destination. */
const SCRATCH_BYTES = 64 * 1024;

/**
 * Bytes of each read during the handshake (before the connection sets `scratchLimit`): the socket picks the
 * buffer of its next read as soon as a read ends, so the read after the handshake's last reply goes into this
 * buffer too. Small reads there keep the first reply's data out of it (the handshake's few hundred bytes cost a
 * few more system calls, once per connection).
 */
const HANDSHAKE_READ_BYTES = 28;

/**
 * The input side of a plain (TCP or Unix) NBD socket, read with Node's `onread` option instead of `data` events:
 * the kernel copies into a buffer this object chooses before each read. Usually that is one reused scratch buffer,
 * whose bytes go to `sink` (which must consume them before returning); at the start of a reply only the reply's
 * header is read there (`scratchLimit`). While a read reply's data is expected,
 * `direct` may name the destination itself (a view into the read's buffer): the kernel then writes the data
 * straight where it belongs, with no copy in between, and `advance` is told how many bytes landed.
 *
 * Node asks for the next buffer right after each read's callback, and reads into it later; so a view handed out
 * may still be written after the request it belongs to was abandoned, at most the bytes of that view.
 */
export class SocketInput {
  readonly #scratch = Buffer.allocUnsafe(SCRATCH_BYTES);
  #lastWasDirect = false;
  /** Receives the bytes read into the scratch buffer; they are only valid during the call. */
  sink: (chunk: Buffer) => void = () => undefined;
  /** The view to read into next, when the data expected next has a destination; else undefined. */
  direct: () => Uint8Array | undefined = () => undefined;
  /** Told how many bytes were read into the last view `direct` returned. */
  advance: (bytes: number) => void = () => undefined;
  /**
   * How many bytes to read into the scratch buffer next: all of it (0), or only the rest of a reply's start (its
   * header and a data chunk's offset) while a read waits for its data. The data after it is then read straight
   * into the read's buffer, not copied: libuv reads again at once while bytes are waiting, so the short read costs
   * a system call, not a turn of the event loop.
   */
  scratchLimit: () => number = () => HANDSHAKE_READ_BYTES;

  /** The `onread` option of `net.connect`. */
  readonly onread: OnReadOpts = {
    buffer: () => {
      const view = this.direct();
      this.#lastWasDirect = view !== undefined;
      if (view) return view;
      const limit = this.scratchLimit();
      return limit > 0 ? this.#scratch.subarray(0, limit) : this.#scratch;
    },
    callback: (bytes: number, buffer: Uint8Array) => {
      if (this.#lastWasDirect) this.advance(bytes);
      else this.sink((buffer as Buffer).subarray(0, bytes));
      return true;
    },
  };
}
