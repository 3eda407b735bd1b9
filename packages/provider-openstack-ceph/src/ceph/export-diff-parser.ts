import { SourceProtocolError } from '@drkit/core';

/** The first bytes of every `rbd export-diff` stream of format v1. */
export const EXPORT_DIFF_V1_HEADER = 'rbd diff v1\n';

/** Longest snapshot name the parser accepts in an `f` or `t` record, in bytes. */
export const EXPORT_DIFF_MAX_NAME_BYTES = 4096;

/**
 * One element of an `rbd export-diff` v1 stream, in stream order:
 * - `from-snapshot` / `to-snapshot`: the `f` and `t` records (the snapshot the diff starts from, and the one it
 *   reads), when present;
 * - `size`: the `s` record, the image size at the `to` snapshot; it comes before any data;
 * - `data`: (part of) a `w` record: the range `[offset, offset + data.length)` now holds `data`;
 * - `zero`: a `z` record: the range now reads as zeros.
 *
 * Data and zero ranges are sorted, disjoint and inside the declared size.
 */
export type ExportDiffEvent =
  | { readonly kind: 'from-snapshot'; readonly name: string }
  | { readonly kind: 'to-snapshot'; readonly name: string }
  | { readonly kind: 'size'; readonly sizeBytes: number }
  | { readonly kind: 'data'; readonly offset: number; readonly data: Uint8Array }
  | { readonly kind: 'zero'; readonly offset: number; readonly length: number };

/** Options of {@link parseExportDiff}. */
export interface ParseExportDiffOptions {
  /**
   * Data of a `w` record is cut at multiples of this many bytes of the image (the engine's chunk size), so each
   * yielded buffer lies inside one piece and is at most this long. A positive whole number; default 4 MiB.
   */
  readonly pieceSize?: number;
  /**
   * Gives the buffer for `length` bytes of data (e.g. the engine's recycled chunk buffers); each buffer is used
   * for one `data` event only. Default: a new `Uint8Array` that owns its `ArrayBuffer`.
   */
  readonly allocate?: (length: number) => Uint8Array;
  /** Aborts the parse: it rejects with `signal.reason`. */
  readonly signal?: AbortSignal;
}

const DEFAULT_PIECE_SIZE = 4 * 1024 * 1024;
const HEADER = new TextEncoder().encode(EXPORT_DIFF_V1_HEADER);
const utf8 = new TextDecoder('utf-8', { fatal: false });

/** Reads bytes from an async iterable of byte arrays and counts the offset of every byte consumed. */
class ByteSource {
  readonly #iterator: AsyncIterator<Uint8Array>;
  #chunk: Uint8Array = new Uint8Array(0);
  #position = 0;
  #ended = false;
  /** Offset in the stream of the next byte to consume. */
  offset = 0;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.#iterator = source[Symbol.asyncIterator]();
  }

  /** Bytes of the current chunk not yet consumed; loads the next chunk when empty. False at the end. */
  async #fill(): Promise<boolean> {
    while (this.#position >= this.#chunk.length) {
      if (this.#ended) return false;
      const next = await this.#iterator.next();
      if (next.done) {
        this.#ended = true;
        return false;
      }
      const value: unknown = next.value;
      if (!(value instanceof Uint8Array)) {
        throw new SourceProtocolError(
          `the export-diff stream yielded ${typeof value}, not bytes, at byte ${this.offset}`,
        );
      }
      this.#chunk = value;
      this.#position = 0;
    }
    return true;
  }

  /** Whether the stream has more bytes. */
  async atEnd(): Promise<boolean> {
    return !(await this.#fill());
  }

  /** Copies exactly `target.length` bytes into `target`; false when the stream ends first. */
  async readInto(target: Uint8Array): Promise<boolean> {
    let done = 0;
    while (done < target.length) {
      if (!(await this.#fill())) return false;
      const take = Math.min(target.length - done, this.#chunk.length - this.#position);
      target.set(this.#chunk.subarray(this.#position, this.#position + take), done);
      this.#position += take;
      this.offset += take;
      done += take;
    }
    return true;
  }

  /** Stops the underlying iterator (e.g. kills the producer) when parsing ends early. */
  async close(): Promise<void> {
    if (!this.#ended) {
      this.#ended = true;
      await this.#iterator.return?.();
    }
  }
}

/** Reads a little-endian unsigned 64-bit integer that must be a safe JavaScript integer. */
function readUint64(bytes: Uint8Array, at: number, what: string, streamOffset: number): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const low = view.getUint32(at, true);
  const high = view.getUint32(at + 4, true);
  if (high >= 0x200000) {
    throw new SourceProtocolError(
      `the export-diff stream declares a ${what} of 2^53 bytes or more at byte ${streamOffset}: ` +
        'not a valid image offset or length',
    );
  }
  return high * 0x100000000 + low;
}

function tagName(tag: number): string {
  return tag >= 0x20 && tag < 0x7f
    ? `'${String.fromCharCode(tag)}'`
    : `0x${tag.toString(16).padStart(2, '0')}`;
}

/**
 * Parses an `rbd export-diff` stream of format v1 (what `rbd export-diff [--from-snap A] POOL/IMAGE@B -` writes)
 * as it arrives, in bounded memory whatever the record sizes: the data of a `w` record is yielded in pieces cut
 * at multiples of `pieceSize` of the image, each in a buffer of its own (at most one piece long).
 *
 * The format: the header `rbd diff v1\n`, then records of a one-byte tag: `f` and `t` (le32 length, then the
 * snapshot name), `s` (le64 image size), `w` (le64 offset, le64 length, then the data), `z` (le64 offset,
 * le64 length: zeros), and `e` (the end). The parser checks that the stream is whole and consistent: one size
 * record before any data, ranges sorted, disjoint, non-empty and inside the declared size, nothing after `e`.
 * When it stops early (a `break`, an error, an abort) it ends the source's iterator, e.g. killing `rbd`.
 *
 * @throws {@link @drkit/core!SourceProtocolError} naming the byte offset when the stream is malformed: a wrong header,
 * an unknown tag, a truncated record, data past the declared size, overlapping or unsorted records, bytes after
 * the end record. Rejects with `signal.reason` when aborted.
 *
 * @example
 * ```ts
 * const child = spawn('rbd', ['export-diff', '--from-snap', 'a', 'volumes/vm1@b', '-']);
 * for await (const event of parseExportDiff(child.stdout, { pieceSize: 1024 * 1024 })) {
 *   if (event.kind === 'data') console.log('data', event.offset, event.data.length);
 * }
 * ```
 */
export async function* parseExportDiff(
  source: AsyncIterable<Uint8Array>,
  options: ParseExportDiffOptions = {},
): AsyncGenerator<ExportDiffEvent, void, undefined> {
  const pieceSize = options.pieceSize ?? DEFAULT_PIECE_SIZE;
  if (!Number.isSafeInteger(pieceSize) || pieceSize <= 0) {
    throw new RangeError(`pieceSize must be a positive whole number, got ${String(pieceSize)}`);
  }
  const allocate = options.allocate ?? ((length: number) => new Uint8Array(length));
  const { signal } = options;
  const input = new ByteSource(source);
  const scratch = new Uint8Array(16);
  try {
    signal?.throwIfAborted();
    const header = new Uint8Array(HEADER.length);
    if (!(await input.readInto(header)) || header.some((byte, i) => byte !== HEADER[i])) {
      throw new SourceProtocolError(
        'the stream does not start with the header "rbd diff v1\\n" at byte 0: not an rbd export-diff v1 ' +
          'stream (or it was cut short)',
      );
    }
    let size: number | undefined;
    let end = 0;
    let sawRange = false;
    let sawFrom = false;
    let sawTo = false;
    for (;;) {
      signal?.throwIfAborted();
      const at = input.offset;
      const tagByte = scratch.subarray(0, 1);
      if (!(await input.readInto(tagByte))) {
        throw new SourceProtocolError(
          `the export-diff stream is truncated at byte ${at}: it ended before the end record 'e'`,
        );
      }
      const tag = tagByte[0]!;
      switch (tag) {
        case 0x66 /* f */:
        case 0x74 /* t */:
          {
            const from = tag === 0x66;
            if (sawRange || size !== undefined) {
              throw new SourceProtocolError(
                `snapshot record ${tagName(tag)} at byte ${at} comes after the size or data records`,
              );
            }
            if (from ? sawFrom : sawTo) {
              throw new SourceProtocolError(`second snapshot record ${tagName(tag)} at byte ${at}`);
            }
            if (from) sawFrom = true;
            else sawTo = true;
            const lengthBytes = scratch.subarray(0, 4);
            if (!(await input.readInto(lengthBytes))) throw truncated(at, tag, input.offset);
            const length = new DataView(lengthBytes.buffer, lengthBytes.byteOffset, 4).getUint32(0, true);
            if (length > EXPORT_DIFF_MAX_NAME_BYTES) {
              throw new SourceProtocolError(
                `snapshot record ${tagName(tag)} at byte ${at} declares a name of ${length} bytes ` +
                  `(more than ${EXPORT_DIFF_MAX_NAME_BYTES})`,
              );
            }
            const name = new Uint8Array(length);
            if (!(await input.readInto(name))) throw truncated(at, tag, input.offset);
            yield { kind: from ? 'from-snapshot' : 'to-snapshot', name: utf8.decode(name) };
            break;
          }
        case 0x73 /* s */:
          {
            if (size !== undefined) {
              throw new SourceProtocolError(`second image size record 's' at byte ${at}`);
            }
            if (sawRange) {
              throw new SourceProtocolError(`image size record 's' at byte ${at} comes after data records`);
            }
            const bytes = scratch.subarray(0, 8);
            if (!(await input.readInto(bytes))) throw truncated(at, tag, input.offset);
            size = readUint64(bytes, 0, 'image size', at + 1);
            yield { kind: 'size', sizeBytes: size };
            break;
          }
        case 0x77 /* w */:
        case 0x7a /* z */:
          {
            const bytes = scratch.subarray(0, 16);
            if (!(await input.readInto(bytes))) throw truncated(at, tag, input.offset);
            const offset = readUint64(bytes, 0, 'record offset', at + 1);
            const length = readUint64(bytes, 8, 'record length', at + 9);
            if (size === undefined) {
              throw new SourceProtocolError(
                `record ${tagName(tag)} at byte ${at} comes before the image size record 's'`,
              );
            }
            if (length === 0) {
              throw new SourceProtocolError(`record ${tagName(tag)} at byte ${at} is empty (length 0)`);
            }
            if (offset < end) {
              throw new SourceProtocolError(
                `record ${tagName(tag)} at byte ${at} starts at image offset ${offset}, before the end of the ` +
                  `previous record (${end}): records overlap or are out of order`,
              );
            }
            if (offset + length > size) {
              throw new SourceProtocolError(
                `record ${tagName(tag)} at byte ${at} covers [${offset}, ${offset + length}), past the declared ` +
                  `image size ${size}`,
              );
            }
            sawRange = true;
            end = offset + length;
            if (tag === 0x7a) {
              yield { kind: 'zero', offset, length };
              break;
            }
            let position = offset;
            while (position < end) {
              signal?.throwIfAborted();
              const pieceEnd = Math.min(end, (Math.floor(position / pieceSize) + 1) * pieceSize);
              const data = allocate(pieceEnd - position);
              if (data.length !== pieceEnd - position) {
                throw new RangeError(`allocate(${pieceEnd - position}) returned ${data.length} bytes`);
              }
              if (!(await input.readInto(data))) {
                throw new SourceProtocolError(
                  `the export-diff stream is truncated at byte ${input.offset}: inside the data of the 'w' record ` +
                    `at byte ${at} (image range [${offset}, ${end}))`,
                );
              }
              yield { kind: 'data', offset: position, data };
              position = pieceEnd;
            }
            break;
          }
        case 0x65 /* e */:
          {
            if (size === undefined) {
              throw new SourceProtocolError(`end record 'e' at byte ${at} without an image size record 's'`);
            }
            if (!(await input.atEnd())) {
              throw new SourceProtocolError(
                `the export-diff stream goes on after the end record 'e' at byte ${at} (byte ${input.offset})`,
              );
            }
            return;
          }
        default:
          throw new SourceProtocolError(
            `unknown record tag ${tagName(tag)} at byte ${at} of the export-diff stream`,
          );
      }
    }
  } finally {
    await input.close();
  }
}

function truncated(at: number, tag: number, offset: number): SourceProtocolError {
  return new SourceProtocolError(
    `the export-diff stream is truncated at byte ${offset}: inside the ${tagName(tag)} record at byte ${at}`,
  );
}
