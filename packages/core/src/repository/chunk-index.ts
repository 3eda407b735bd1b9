import { createHash } from 'node:crypto';
import { InvalidArgumentError, RepositoryCorruptError } from '../errors/drkit-error.js';
import { CHUNK_ID_BYTES, isZeroId } from './chunk-id.js';
import type { ChunkIndex } from './types.js';

/** The four bytes every index blob starts with: ASCII `DRKI`. */
export const CHUNK_INDEX_MAGIC: Uint8Array = new Uint8Array([0x44, 0x52, 0x4b, 0x49]);
/** The index blob format version this code writes and reads. */
export const CHUNK_INDEX_VERSION = 1;
/** Size of the index blob header in bytes; the chunk ids follow it, then a 32-byte SHA-256 trailer. */
export const CHUNK_INDEX_HEADER_BYTES = 24;
/** The largest number of chunks an index can hold (its count field is a uint32). */
export const MAX_CHUNK_COUNT = 0xffff_ffff;

/** A {@link ChunkIndex} that can be filled in, as the backup engine builds a point. */
export interface MutableChunkIndex extends ChunkIndex {
  /**
   * Sets the 32-byte id of position `i` (copied). The all-zero id marks an all-zero chunk.
   *
   * @throws {@link InvalidArgumentError} when `i` is out of range or `id` is not 32 bytes.
   */
  setId(i: number, id: Uint8Array): void;
  /**
   * Marks position `i` as an all-zero chunk (the default of every position).
   *
   * @throws {@link InvalidArgumentError} when `i` is out of range.
   */
  setZero(i: number): void;
}

/** What {@link decodeChunkIndex} returns: the index and the layout the blob records. */
export interface DecodedChunkIndex {
  readonly index: ChunkIndex;
  /** Chunk size in bytes. */
  readonly chunkSize: number;
  /** Disk size in bytes. */
  readonly capacityBytes: number;
}

/** The index over one `Uint8Array` of `32 * chunkCount` bytes. */
class BytesChunkIndex implements MutableChunkIndex {
  constructor(
    readonly ids: Uint8Array,
    readonly chunkCount: number,
  ) {}

  private check(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.chunkCount) {
      throw new InvalidArgumentError(`chunk position ${i} is outside 0..${this.chunkCount - 1}`);
    }
  }

  idAt(i: number): Uint8Array {
    this.check(i);
    return this.ids.subarray(i * CHUNK_ID_BYTES, (i + 1) * CHUNK_ID_BYTES);
  }

  isZero(i: number): boolean {
    this.check(i);
    return isZeroId(this.ids, i * CHUNK_ID_BYTES);
  }

  setId(i: number, id: Uint8Array): void {
    this.check(i);
    if (!(id instanceof Uint8Array) || id.byteLength !== CHUNK_ID_BYTES) {
      throw new InvalidArgumentError(`a chunk id must be ${CHUNK_ID_BYTES} bytes`);
    }
    this.ids.set(id, i * CHUNK_ID_BYTES);
  }

  setZero(i: number): void {
    this.check(i);
    this.ids.fill(0, i * CHUNK_ID_BYTES, (i + 1) * CHUNK_ID_BYTES);
  }
}

function checkCount(chunkCount: number): void {
  if (!Number.isInteger(chunkCount) || chunkCount < 0 || chunkCount > MAX_CHUNK_COUNT) {
    throw new InvalidArgumentError(`chunk count ${chunkCount} is not an integer in 0..${MAX_CHUNK_COUNT}`);
  }
}

/** Number of chunks of a disk: `ceil(capacityBytes / chunkSize)`. */
export function chunkCountOf(capacityBytes: number, chunkSize: number): number {
  return Math.ceil(capacityBytes / chunkSize);
}

/**
 * A new index of `chunkCount` positions, every one an all-zero chunk, in one `Uint8Array` of `32 * chunkCount`
 * bytes (nothing per chunk on the JS heap).
 *
 * @throws {@link InvalidArgumentError} when `chunkCount` is not an integer in `0..2^32-1`.
 *
 * @example
 * ```ts
 * const index = createChunkIndex(Math.ceil(capacityBytes / chunkSize));
 * const encoded = await workers.encode(data);
 * if (encoded.kind !== 'zero') index.setId(position, encoded.hash);
 * ```
 */
export function createChunkIndex(chunkCount: number): MutableChunkIndex {
  checkCount(chunkCount);
  return new BytesChunkIndex(new Uint8Array(chunkCount * CHUNK_ID_BYTES), chunkCount);
}

/**
 * Serialises an index as an index blob: 24-byte header (`DRKI`, version, three zero bytes, chunk size uint32,
 * capacity uint64, chunk count uint32, all little-endian), the ids, and a SHA-256 of everything before it. The
 * layout is in `docs/repository-format.md`.
 *
 * @throws {@link InvalidArgumentError} when the chunk size or capacity is not a positive integer, or the index
 * does not have `ceil(capacityBytes / chunkSize)` positions.
 */
export function encodeChunkIndex(
  index: ChunkIndex,
  layout: { readonly chunkSize: number; readonly capacityBytes: number },
): Uint8Array {
  const { chunkSize, capacityBytes } = layout;
  if (!Number.isInteger(chunkSize) || chunkSize < 1 || chunkSize > 0xffff_ffff) {
    throw new InvalidArgumentError(`chunk size ${chunkSize} is not a positive 32-bit integer`);
  }
  if (!Number.isSafeInteger(capacityBytes) || capacityBytes < 0) {
    throw new InvalidArgumentError(`capacity ${capacityBytes} is not a non-negative safe integer`);
  }
  const count = index.chunkCount;
  checkCount(count);
  if (count !== chunkCountOf(capacityBytes, chunkSize)) {
    throw new InvalidArgumentError(
      `the index has ${count} chunks but a ${capacityBytes}-byte disk in ${chunkSize}-byte chunks has ${chunkCountOf(capacityBytes, chunkSize)}`,
    );
  }
  const bodyBytes = CHUNK_INDEX_HEADER_BYTES + count * CHUNK_ID_BYTES;
  const blob = new Uint8Array(bodyBytes + 32);
  const view = new DataView(blob.buffer);
  blob.set(CHUNK_INDEX_MAGIC, 0);
  blob[4] = CHUNK_INDEX_VERSION;
  view.setUint32(8, chunkSize, true);
  view.setBigUint64(12, BigInt(capacityBytes), true);
  view.setUint32(20, count, true);
  if (index instanceof BytesChunkIndex) {
    blob.set(index.ids, CHUNK_INDEX_HEADER_BYTES);
  } else {
    for (let i = 0; i < count; i++) {
      const id = index.idAt(i);
      if (id.byteLength !== CHUNK_ID_BYTES)
        throw new InvalidArgumentError(`the id at position ${i} is not 32 bytes`);
      blob.set(id, CHUNK_INDEX_HEADER_BYTES + i * CHUNK_ID_BYTES);
    }
  }
  blob.set(createHash('sha256').update(blob.subarray(0, bodyBytes)).digest(), bodyBytes);
  return blob;
}

/**
 * Parses and checks an index blob: magic, version, reserved bytes, exact length, the SHA-256 trailer, and that
 * the count is `ceil(capacity / chunkSize)`. The returned index is a view of `blob` (not a copy).
 *
 * @param what - Names the blob in error messages (e.g. its key).
 * @throws {@link RepositoryCorruptError} when any check fails.
 */
export function decodeChunkIndex(blob: Uint8Array, what = 'index blob'): DecodedChunkIndex {
  const fail = (problem: string): never => {
    throw new RepositoryCorruptError(`${what} is damaged: ${problem}; the point cannot be restored from it`);
  };
  if (blob.byteLength < CHUNK_INDEX_HEADER_BYTES + 32)
    fail(`${blob.byteLength} bytes is shorter than an empty index`);
  for (let i = 0; i < 4; i++) if (blob[i] !== CHUNK_INDEX_MAGIC[i]) fail('it does not start with "DRKI"');
  if (blob[4] !== CHUNK_INDEX_VERSION) fail(`unknown index format version ${blob[4]}`);
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const count = view.getUint32(20, true);
  const bodyBytes = CHUNK_INDEX_HEADER_BYTES + count * CHUNK_ID_BYTES;
  if (blob.byteLength !== bodyBytes + 32) {
    fail(`it is ${blob.byteLength} bytes but ${count} chunks need ${bodyBytes + 32}`);
  }
  const digest = createHash('sha256').update(blob.subarray(0, bodyBytes)).digest();
  if (Buffer.compare(digest, blob.subarray(bodyBytes)) !== 0)
    fail('its SHA-256 trailer does not match its content');
  if (blob[5] !== 0 || blob[6] !== 0 || blob[7] !== 0) fail('reserved header bytes are not zero');
  const chunkSize = view.getUint32(8, true);
  const capacity = view.getBigUint64(12, true);
  if (chunkSize === 0) fail('chunk size is 0');
  if (capacity > BigInt(Number.MAX_SAFE_INTEGER)) fail(`capacity ${capacity} is too large`);
  const capacityBytes = Number(capacity);
  if (count !== chunkCountOf(capacityBytes, chunkSize)) {
    fail(
      `it has ${count} chunks but a ${capacityBytes}-byte disk in ${chunkSize}-byte chunks has ${chunkCountOf(capacityBytes, chunkSize)}`,
    );
  }
  return {
    index: new BytesChunkIndex(blob.subarray(CHUNK_INDEX_HEADER_BYTES, bodyBytes), count),
    chunkSize,
    capacityBytes,
  };
}

/**
 * Calls `callback(bytes, offset, position)` for every non-zero position, where the id is the 32 bytes of
 * `bytes` at `offset` (valid only during the call). Avoids a view per chunk for indexes made by this module.
 *
 * @internal
 */
export function forEachNonZeroId(
  index: ChunkIndex,
  callback: (bytes: Uint8Array, offset: number, position: number) => void,
): void {
  if (index instanceof BytesChunkIndex) {
    const { ids } = index;
    for (let i = 0; i < index.chunkCount; i++) {
      const offset = i * CHUNK_ID_BYTES;
      if (!isZeroId(ids, offset)) callback(ids, offset, i);
    }
    return;
  }
  for (let i = 0; i < index.chunkCount; i++) {
    if (!index.isZero(i)) callback(index.idAt(i), 0, i);
  }
}
