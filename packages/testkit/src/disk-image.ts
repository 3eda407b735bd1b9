import { createCipheriv, createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import type { CallOptions, Extent } from '@drkit/core';

/** The kinds of content {@link writeDiskImage} lays out, in runs. */
export type DiskImageRunKind =
  /** Text-like bytes (words, numbers, punctuation, lines): compress about 3:1, like logs and source files. */
  | 'text'
  /** Random bytes: incompressible, like compressed or encrypted files. */
  | 'random'
  /** Zeros written to the file: allocated, reading as zeros (freshly formatted or zeroed blocks). */
  | 'zero'
  /** Skipped regions of the sparse file: real holes, reading as zeros, not allocated. */
  | 'hole';

/** One run of {@link DiskImageLayout}. */
export interface DiskImageRun extends Extent {
  readonly kind: DiskImageRunKind;
}

/** What {@link writeDiskImage} wrote. */
export interface DiskImageLayout {
  /** Size of the image in bytes (equal to the `size` asked for). */
  readonly sizeBytes: number;
  /** The runs, sorted, disjoint, covering `[0, sizeBytes)`. */
  readonly runs: readonly DiskImageRun[];
  /** Total bytes per kind of run. */
  readonly bytesByKind: Readonly<Record<DiskImageRunKind, number>>;
}

/** Options of {@link writeDiskImage}. */
export interface WriteDiskImageOptions extends CallOptions {
  /** Size of the image in bytes. Any non-negative safe integer; runs are 4 KiB-aligned except the tail. */
  readonly size: number;
  /** The same seed and options always write the same bytes and holes. */
  readonly seed: number | string;
  /** Relative weights of the kinds of run. Default `{ text: 35, random: 25, zero: 10, hole: 30 }`. */
  readonly mix?: Partial<Readonly<Record<DiskImageRunKind, number>>>;
  /** Shortest run, a multiple of 4096. Default 4 KiB. */
  readonly minRunBytes?: number;
  /** Longest run, a multiple of 4096. Default 16 MiB. Run lengths are log-uniform between the two. */
  readonly maxRunBytes?: number;
}

const BLOCK = 4096;
/** Bytes generated and written per write call (and per buffer; two buffers alternate). */
const WRITE_BUFFER_BYTES = 4 * 1024 * 1024;
const TEXT_POOL_BYTES = 1024 * 1024;
const DEFAULT_MIX: Readonly<Record<DiskImageRunKind, number>> = { text: 35, random: 25, zero: 10, hole: 30 };
const KINDS: readonly DiskImageRunKind[] = ['text', 'random', 'zero', 'hole'];

/**
 * Writes a deterministic, disk-like raw image: runs of text-like, random and zero bytes and real holes (regions
 * of the sparse file that are never written). Streams in two 4 MiB buffers, so any size takes the same memory;
 * 2 GiB take a few seconds. An existing file is replaced.
 *
 * @throws `RangeError` for a bad size, run length or mix; the file system's errors; `signal.reason` when aborted
 * (the file is then left partly written).
 *
 * @example
 * ```ts
 * const layout = await writeDiskImage('/tmp/disk.raw', { size: 64 * 1024 * 1024, seed: 42 });
 * console.log(layout.bytesByKind.hole); // bytes left as holes
 * ```
 */
export async function writeDiskImage(path: string, options: WriteDiskImageOptions): Promise<DiskImageLayout> {
  const { size, signal } = options;
  if (!Number.isSafeInteger(size) || size < 0)
    throw new RangeError(`size must be a non-negative integer: ${size}`);
  const minRun = options.minRunBytes ?? BLOCK;
  const maxRun = options.maxRunBytes ?? 16 * 1024 * 1024;
  if (!isBlockMultiple(minRun) || !isBlockMultiple(maxRun) || maxRun < minRun) {
    throw new RangeError(`minRunBytes and maxRunBytes must be multiples of 4096 with min <= max`);
  }
  const mix = { ...DEFAULT_MIX, ...options.mix };
  const totalWeight = KINDS.reduce((sum, kind) => sum + mix[kind], 0);
  if (KINDS.some((kind) => !(mix[kind] >= 0)) || !(totalWeight > 0)) {
    throw new RangeError('mix weights must be non-negative numbers, not all zero');
  }
  signal?.throwIfAborted();
  const random = createSeededRandom(`${options.seed}:layout`);
  const keystream = createKeystream(`${options.seed}:random`);
  const text = createTextPool(createSeededRandom(`${options.seed}:text`));
  const runs: DiskImageRun[] = [];
  const bytesByKind: Record<DiskImageRunKind, number> = { text: 0, random: 0, zero: 0, hole: 0 };
  const handle = await open(path, 'w');
  try {
    const writer = new BufferedWriter(handle, signal);
    let position = 0;
    let textCursor = 0;
    while (position < size) {
      const kind = pickKind(random, mix, totalWeight);
      const length = Math.min(size - position, randomRunLength(random, minRun, maxRun));
      runs.push({ kind, offset: position, length });
      bytesByKind[kind] += length;
      if (kind === 'hole') {
        await writer.skipTo(position + length);
      } else {
        let remaining = length;
        while (remaining > 0) {
          const target = await writer.reserve(remaining);
          if (kind === 'zero') target.fill(0);
          else if (kind === 'random') keystream(target);
          else textCursor = fillText(target, text, textCursor, random);
          remaining -= target.length;
        }
      }
      position += length;
    }
    await writer.flush();
    await handle.truncate(size);
  } finally {
    await handle.close();
  }
  return { sizeBytes: size, runs, bytesByKind };
}

/** Options of {@link mutateDiskImage}. */
export interface MutateDiskImageOptions extends CallOptions {
  /** About this fraction of the image (after any resize) is overwritten, in random 4 KiB–256 KiB writes. */
  readonly fraction: number;
  /** The same seed, options and image always make the same changes. */
  readonly seed: number | string;
  /**
   * Ranges to overwrite with zeros (written zeros, still allocated): a count of random 4 KiB–256 KiB ranges, or
   * the ranges themselves (clipped to the image).
   */
  readonly zeroRanges?: number | readonly Extent[];
  /** Also change the last byte of the image (to a value different from the current one). */
  readonly lastByte?: boolean;
  /** Grow the image by this many bytes first; the new bytes are a hole (zeros). */
  readonly grow?: number;
  /** Shrink the image by this many bytes first (at most its size). */
  readonly shrink?: number;
}

/** What {@link mutateDiskImage} changed. */
export interface DiskImageMutation {
  readonly previousSizeBytes: number;
  readonly sizeBytes: number;
  /** The data writes, in the order made (they may overlap). */
  readonly writes: readonly Extent[];
  /** The ranges overwritten with zeros, after the writes. */
  readonly zeroed: readonly Extent[];
  /**
   * Every byte whose content may differ from the image before, read as zeros past its old end: the sorted,
   * merged union of writes, zeroed ranges and the last byte, within the new size.
   */
  readonly changed: readonly Extent[];
}

/**
 * Changes an existing image deterministically: an optional resize, then random writes of text-like or random
 * bytes covering about `fraction` of it, optional zeroed ranges, and optionally its last byte. Bounded memory.
 *
 * @throws `RangeError` for bad options; the file system's errors; `signal.reason` when aborted.
 *
 * @example
 * ```ts
 * const { changed } = await mutateDiskImage('/tmp/disk.raw', { fraction: 0.01, seed: 7, lastByte: true });
 * ```
 */
export async function mutateDiskImage(
  path: string,
  options: MutateDiskImageOptions,
): Promise<DiskImageMutation> {
  const { fraction, signal } = options;
  if (!(fraction >= 0 && fraction <= 1))
    throw new RangeError(`fraction must be between 0 and 1: ${fraction}`);
  const grow = options.grow ?? 0;
  const shrink = options.shrink ?? 0;
  for (const [name, value] of [
    ['grow', grow],
    ['shrink', shrink],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 0)
      throw new RangeError(`${name} must be a non-negative integer`);
  }
  signal?.throwIfAborted();
  const random = createSeededRandom(`${options.seed}:mutate`);
  const keystream = createKeystream(`${options.seed}:mutate-random`);
  const text = createTextPool(createSeededRandom(`${options.seed}:mutate-text`));
  const handle = await open(path, 'r+');
  try {
    const previousSizeBytes = (await handle.stat()).size;
    const sizeBytes = Math.max(0, previousSizeBytes + grow - shrink);
    if (sizeBytes !== previousSizeBytes) await handle.truncate(sizeBytes);
    const writes: Extent[] = [];
    const zeroed: Extent[] = [];
    const buffer = Buffer.allocUnsafe(MAX_MUTATION_BYTES);
    let textCursor = Math.floor(random.float() * TEXT_POOL_BYTES);
    const target = Math.round(fraction * sizeBytes);
    let written = 0;
    while (written < target && sizeBytes > 0) {
      signal?.throwIfAborted();
      const extent = randomExtent(random, sizeBytes, Math.min(MAX_MUTATION_BYTES, target - written));
      const slice = buffer.subarray(0, extent.length);
      if (random.float() < 0.5) keystream(slice);
      else textCursor = fillText(slice, text, textCursor, random);
      await writeFully(handle, slice, extent.offset);
      writes.push(extent);
      written += extent.length;
    }
    const zeroList =
      typeof options.zeroRanges === 'number'
        ? Array.from({ length: sizeBytes > 0 ? options.zeroRanges : 0 }, () =>
            randomExtent(random, sizeBytes, MAX_MUTATION_BYTES),
          )
        : (options.zeroRanges ?? []);
    for (const range of zeroList) {
      const end = Math.min(sizeBytes, range.offset + range.length);
      for (let offset = range.offset; offset < end; offset += MAX_MUTATION_BYTES) {
        signal?.throwIfAborted();
        const length = Math.min(MAX_MUTATION_BYTES, end - offset);
        await writeFully(handle, buffer.fill(0, 0, length).subarray(0, length), offset);
      }
      if (end > range.offset) zeroed.push({ offset: range.offset, length: end - range.offset });
    }
    const touched: Extent[] = [...writes, ...zeroed];
    if (options.lastByte && sizeBytes > 0) {
      const last = Buffer.alloc(1);
      await handle.read(last, 0, 1, sizeBytes - 1);
      last[0] = (last[0]! + 1 + Math.floor(random.float() * 255)) % 256;
      await writeFully(handle, last, sizeBytes - 1);
      touched.push({ offset: sizeBytes - 1, length: 1 });
    }
    return { previousSizeBytes, sizeBytes, writes, zeroed, changed: mergeRanges(touched) };
  } finally {
    await handle.close();
  }
}

/**
 * SHA-256 (hex) of a file's bytes, streamed. Holes read as zeros.
 *
 * @throws the file system's errors; `signal.reason` when aborted.
 *
 * @example
 * ```ts
 * expect(await hashDiskImage(restoredPath)).toBe(await hashDiskImage(sourcePath));
 * ```
 */
export async function hashDiskImage(path: string, options: CallOptions = {}): Promise<string> {
  options.signal?.throwIfAborted();
  const hash = createHash('sha256');
  const stream = createReadStream(path, {
    highWaterMark: WRITE_BUFFER_BYTES,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  try {
    for await (const chunk of stream) hash.update(chunk as Buffer);
  } catch (error) {
    if (options.signal?.aborted) throw options.signal.reason;
    throw error;
  }
  return hash.digest('hex');
}

const MAX_MUTATION_BYTES = 256 * 1024;

/** A 4 KiB-aligned extent of 4 KiB–`maxLength` bytes (log-uniform) inside `[0, size)`. */
function randomExtent(random: SeededRandom, size: number, maxLength: number): Extent {
  const upper = Math.max(BLOCK, Math.floor(maxLength / BLOCK) * BLOCK);
  let length = Math.min(randomRunLength(random, BLOCK, Math.min(upper, MAX_MUTATION_BYTES)), size);
  const slots = Math.floor((size - length) / BLOCK);
  let offset = Math.floor(random.float() * (slots + 1)) * BLOCK;
  if (offset + length > size) length = size - offset;
  if (length <= 0) {
    offset = 0;
    length = size;
  }
  return { offset, length };
}

async function writeFully(handle: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await handle.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

/** Sorts and merges overlapping or touching ranges. */
function mergeRanges(ranges: readonly Extent[]): Extent[] {
  const sorted = ranges.filter((range) => range.length > 0).sort((a, b) => a.offset - b.offset);
  const out: { offset: number; length: number }[] = [];
  for (const range of sorted) {
    const last = out[out.length - 1];
    if (last && range.offset <= last.offset + last.length) {
      last.length = Math.max(last.length, range.offset + range.length - last.offset);
    } else out.push({ offset: range.offset, length: range.length });
  }
  return out;
}

/**
 * Fills two alternating buffers and writes one while the other is filled, so generation and I/O overlap.
 * Positions only move forward; {@link BufferedWriter.skipTo} leaves a hole.
 */
class BufferedWriter {
  readonly #handle: FileHandle;
  readonly #signal: AbortSignal | undefined;
  readonly #buffers = [Buffer.allocUnsafe(WRITE_BUFFER_BYTES), Buffer.allocUnsafe(WRITE_BUFFER_BYTES)];
  #current = 0;
  /** File position of the current buffer's first byte. */
  #start = 0;
  #used = 0;
  #pending: Promise<void> | undefined;

  constructor(handle: FileHandle, signal: AbortSignal | undefined) {
    this.#handle = handle;
    this.#signal = signal;
  }

  /** A slice of at most `length` bytes to fill, at the current position. */
  async reserve(length: number): Promise<Buffer> {
    if (this.#used === WRITE_BUFFER_BYTES) await this.#swap();
    const take = Math.min(length, WRITE_BUFFER_BYTES - this.#used);
    const slice = this.#buffers[this.#current]!.subarray(this.#used, this.#used + take);
    this.#used += take;
    return slice;
  }

  /** Moves the position forward without writing: the bytes in between stay a hole. */
  async skipTo(position: number): Promise<void> {
    await this.#swap();
    this.#start = position;
  }

  async flush(): Promise<void> {
    await this.#swap();
    await this.#pending;
    this.#pending = undefined;
  }

  /** Starts writing the current buffer and switches to the other one once its own write finished. */
  async #swap(): Promise<void> {
    this.#signal?.throwIfAborted();
    const previous = this.#pending;
    if (this.#used > 0) {
      const data = this.#buffers[this.#current]!.subarray(0, this.#used);
      const position = this.#start;
      const write = (previous ?? Promise.resolve()).then(() => writeFully(this.#handle, data, position));
      write.catch(() => {});
      this.#pending = write;
      this.#start += this.#used;
      this.#used = 0;
      this.#current = 1 - this.#current;
      // The buffer now current was written by `previous`: wait for it before filling it again.
      await previous;
    } else {
      await previous;
      this.#pending = undefined;
    }
  }
}

function isBlockMultiple(value: number): boolean {
  return Number.isSafeInteger(value) && value > 0 && value % BLOCK === 0;
}

function pickKind(
  random: SeededRandom,
  mix: Readonly<Record<DiskImageRunKind, number>>,
  total: number,
): DiskImageRunKind {
  let point = random.float() * total;
  for (const kind of KINDS) {
    point -= mix[kind];
    if (point < 0) return kind;
  }
  return KINDS.findLast((kind) => mix[kind] > 0)!;
}

/** A multiple of 4096 between `min` and `max`, log-uniform. */
function randomRunLength(random: SeededRandom, min: number, max: number): number {
  const blocks = Math.exp(Math.log(min / BLOCK) + random.float() * Math.log(max / min));
  return Math.min(max, Math.max(min, Math.round(blocks) * BLOCK));
}

/** Fills `target` from the text pool starting at `cursor` (wrapping); returns the next cursor. */
function fillText(target: Uint8Array, pool: Buffer, cursor: number, random: SeededRandom): number {
  let done = 0;
  let at = cursor;
  while (done < target.length) {
    const take = Math.min(target.length - done, pool.length - at);
    pool.copy(target, done, at, at + take);
    done += take;
    // Jump to a random place now and then, so equal text does not repeat at equal alignment (no easy dedup).
    at = at + take >= pool.length ? Math.floor(random.float() * pool.length) : at + take;
  }
  return at;
}

/** 1 MiB of text-like bytes: words of a random vocabulary, numbers, punctuation and lines. */
function createTextPool(random: SeededRandom): Buffer {
  const letters = 'etaoinshrdlcumwfgypbvkjxqz';
  const vocabulary = Array.from({ length: 600 }, () => {
    const length = 2 + Math.floor(random.float() * random.float() * 10);
    let word = '';
    for (let i = 0; i < length; i++)
      word += letters[Math.floor(random.float() * random.float() * letters.length)];
    return word;
  });
  const pool = Buffer.allocUnsafe(TEXT_POOL_BYTES);
  let at = 0;
  let column = 0;
  while (at < pool.length) {
    const roll = random.float();
    let token: string;
    if (roll < 0.05) token = String(Math.floor(random.float() * 100000));
    else if (roll < 0.08) token = ['=', ':', '{', '}', '(', ')', ';', ','][Math.floor(random.float() * 8)]!;
    else token = vocabulary[Math.floor(random.float() * random.float() * vocabulary.length)]!;
    column += token.length + 1;
    const separator = column > 60 + random.float() * 40 ? '\n' : ' ';
    if (separator === '\n') column = 0;
    at += pool.write(token + separator, at, 'latin1');
  }
  return pool;
}

/** A small seeded PRNG (sfc32), for decisions rather than bulk bytes. @internal */
export interface SeededRandom {
  /** Uniform in `[0, 1)`. */
  float(): number;
  /** Uniform 32-bit unsigned integer. */
  uint32(): number;
}

/** sfc32 seeded from SHA-256 of the seed: fast, well distributed, deterministic. @internal */
export function createSeededRandom(seed: number | string): SeededRandom {
  const digest = createHash('sha256').update(`drkit-testkit:${seed}`).digest();
  let a = digest.readUInt32LE(0);
  let b = digest.readUInt32LE(4);
  let c = digest.readUInt32LE(8);
  let d = digest.readUInt32LE(12);
  const uint32 = (): number => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return t >>> 0;
  };
  for (let i = 0; i < 12; i++) uint32();
  return { uint32, float: () => uint32() / 4294967296 };
}

/**
 * Deterministic random bytes at memory speed: the AES-256-CTR keystream of a key derived from the seed (AES
 * runs in hardware, several GB/s). Each call continues the stream. @internal
 */
export function createKeystream(seed: number | string): (target: Uint8Array) => void {
  const key = createHash('sha256').update(`drkit-testkit-keystream:${seed}`).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const zeros = Buffer.alloc(WRITE_BUFFER_BYTES);
  return (target) => {
    for (let done = 0; done < target.length; ) {
      const take = Math.min(zeros.length, target.length - done);
      const block = cipher.update(zeros.subarray(0, take));
      target.set(block, done);
      done += block.length;
    }
  };
}
