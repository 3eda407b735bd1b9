import { InvalidArgumentError, RepositoryCorruptError } from '../errors/drkit-error.js';
import type { ChunkCodec } from '../workers/chunk-worker-pool.js';
import { chunkIdFromHash, isChunkId } from './chunk-id.js';
import type { ChunkId } from './types.js';

/** The four bytes every chunk blob starts with: ASCII `DRKC`. */
export const CHUNK_BLOB_MAGIC: Uint8Array = new Uint8Array([0x44, 0x52, 0x4b, 0x43]);
/** The chunk blob format version this code writes and reads. */
export const CHUNK_BLOB_VERSION = 1;
/** Size of the chunk blob header in bytes; the payload follows it. */
export const CHUNK_BLOB_HEADER_BYTES = 12;
/** The largest plain chunk a blob may hold (the largest chunk size a lineage may use). */
export const MAX_CHUNK_BYTES: number = 4 * 1024 * 1024;

const ZSTD_MAGIC = 0xfd2fb528;

/** A chunk blob's content once its header is checked. */
export interface ChunkBlob {
  /** 0 raw, 1 zstd. */
  readonly codec: ChunkCodec;
  /** Length of the plain data. */
  readonly plainLength: number;
  /** The stored bytes (a view into the blob). */
  readonly payload: Uint8Array;
}

/** Reads the content size a zstd frame header declares, or explains why it cannot. */
function zstdContentSize(payload: Uint8Array): number | string {
  if (payload.byteLength < 6) return 'the zstd frame is shorter than its header';
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  if (view.getUint32(0, true) !== ZSTD_MAGIC) return 'the payload is not a zstd frame';
  const descriptor = payload[4]!;
  const contentSizeFlag = descriptor >> 6;
  const singleSegment = (descriptor >> 5) & 1;
  if ((descriptor >> 3) & 1) return 'the zstd frame header has its reserved bit set';
  const dictionaryBytes = [0, 1, 2, 4][descriptor & 3]!;
  const sizeBytes = contentSizeFlag === 0 ? singleSegment : [0, 2, 4, 8][contentSizeFlag]!;
  if (sizeBytes === 0) return 'the zstd frame does not declare its content size';
  const at = 5 + (singleSegment ? 0 : 1) + dictionaryBytes;
  if (payload.byteLength < at + sizeBytes) return 'the zstd frame is shorter than its header';
  switch (sizeBytes) {
    case 1:
      return view.getUint8(at);
    case 2:
      return view.getUint16(at, true) + 256;
    case 4:
      return view.getUint32(at, true);
    default: {
      const size = view.getBigUint64(at, true);
      return size > BigInt(MAX_CHUNK_BYTES) ? `the zstd frame declares ${size} bytes` : Number(size);
    }
  }
}

/** Checks the codec/payload/length triple; returns the problem or undefined. */
function payloadProblem(codec: number, payload: Uint8Array, plainLength: number): string | undefined {
  if (!Number.isInteger(plainLength) || plainLength < 1 || plainLength > MAX_CHUNK_BYTES) {
    return `plain length ${plainLength} is outside 1..${MAX_CHUNK_BYTES}`;
  }
  if (codec === 0) {
    return payload.byteLength === plainLength
      ? undefined
      : `raw payload is ${payload.byteLength} bytes, plain length is ${plainLength}`;
  }
  if (codec === 1) {
    // The writer keeps a chunk raw when zstd does not shrink it, so a zstd payload is always smaller.
    if (payload.byteLength >= plainLength) {
      return `zstd payload of ${payload.byteLength} bytes is not smaller than its plain length ${plainLength}`;
    }
    const declared = zstdContentSize(payload);
    if (typeof declared === 'string') return declared;
    if (declared !== plainLength)
      return `the zstd frame declares ${declared} bytes, plain length is ${plainLength}`;
    return undefined;
  }
  return `unknown codec ${codec}`;
}

/**
 * Frames an encoded chunk as a chunk blob: the 12-byte header (`DRKC`, version, codec, two zero bytes, plain
 * length as uint32 little-endian) followed by the payload. The layout is in `docs/repository-format.md`.
 *
 * @throws {@link InvalidArgumentError} when the codec is unknown, the plain length is out of range, a raw
 * payload's length differs from the plain length, or a zstd payload is not one frame declaring that length.
 */
export function encodeChunkBlob(chunk: {
  readonly codec: ChunkCodec;
  readonly payload: Uint8Array;
  readonly plainLength: number;
  readonly frameInPlace?: boolean;
}): Uint8Array {
  const problem = payloadProblem(chunk.codec, chunk.payload, chunk.plainLength);
  if (problem !== undefined) throw new InvalidArgumentError(`cannot store the chunk: ${problem}`);
  const { payload } = chunk;
  const inPlace = chunk.frameInPlace === true && payload.byteOffset >= CHUNK_BLOB_HEADER_BYTES;
  const blob = inPlace
    ? new Uint8Array(
        payload.buffer,
        payload.byteOffset - CHUNK_BLOB_HEADER_BYTES,
        CHUNK_BLOB_HEADER_BYTES + payload.byteLength,
      )
    : new Uint8Array(CHUNK_BLOB_HEADER_BYTES + payload.byteLength);
  blob.fill(0, 0, CHUNK_BLOB_HEADER_BYTES);
  blob.set(CHUNK_BLOB_MAGIC, 0);
  blob[4] = CHUNK_BLOB_VERSION;
  blob[5] = chunk.codec;
  new DataView(blob.buffer, blob.byteOffset, CHUNK_BLOB_HEADER_BYTES).setUint32(8, chunk.plainLength, true);
  if (!inPlace) blob.set(payload, CHUNK_BLOB_HEADER_BYTES);
  return blob;
}

/**
 * Checks a chunk blob's header and returns its codec, plain length and payload (a view, not a copy). It does
 * not decompress or hash: the chunk worker pool does that.
 *
 * @param what - Names the blob in error messages (e.g. its key).
 * @throws {@link RepositoryCorruptError} when the magic, version, codec, reserved bytes or length do not check.
 */
export function decodeChunkBlob(blob: Uint8Array, what = 'chunk blob'): ChunkBlob {
  const fail = (problem: string): never => {
    throw new RepositoryCorruptError(`${what} is damaged: ${problem}; run verify and back the disk up again`);
  };
  if (blob.byteLength < CHUNK_BLOB_HEADER_BYTES) fail(`${blob.byteLength} bytes is shorter than the header`);
  for (let i = 0; i < 4; i++) if (blob[i] !== CHUNK_BLOB_MAGIC[i]) fail('it does not start with "DRKC"');
  if (blob[4] !== CHUNK_BLOB_VERSION) fail(`unknown chunk format version ${blob[4]}`);
  if (blob[6] !== 0 || blob[7] !== 0) fail('reserved header bytes are not zero');
  const codec = blob[5]!;
  const plainLength = new DataView(blob.buffer, blob.byteOffset, blob.byteLength).getUint32(8, true);
  const payload = blob.subarray(CHUNK_BLOB_HEADER_BYTES);
  const problem = payloadProblem(codec, payload, plainLength);
  if (problem !== undefined) fail(problem);
  return { codec: codec as ChunkCodec, plainLength, payload };
}

/**
 * The store key of a chunk: `chunks/<first 2 hex digits>/<64 hex digits>`.
 *
 * @throws {@link InvalidArgumentError} when `id` is neither a chunk id nor a 32-byte hash.
 */
export function chunkKey(id: ChunkId | Uint8Array): string {
  const hex = typeof id === 'string' ? id : chunkIdFromHash(id);
  if (!isChunkId(hex)) throw new InvalidArgumentError(`${JSON.stringify(hex)} is not a chunk id`);
  return `chunks/${hex.slice(0, 2)}/${hex}`;
}

/** The chunk id named by a chunk key, or undefined if the key is not a well-formed chunk key. */
export function chunkIdFromKey(key: string): ChunkId | undefined {
  const match = /^chunks\/([0-9a-f]{2})\/([0-9a-f]{64})$/.exec(key);
  return match !== null && match[2]!.startsWith(match[1]!) ? match[2] : undefined;
}
