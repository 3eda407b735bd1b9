import { InvalidArgumentError } from '../errors/drkit-error.js';
import type { ChunkId } from './types.js';

/** Length of a chunk id (SHA-256) in bytes. */
export const CHUNK_ID_BYTES = 32;

const HEX_ID = /^[0-9a-f]{64}$/;

/** Whether a string is a well-formed {@link ChunkId} (64 lowercase hex digits). */
export function isChunkId(value: unknown): value is ChunkId {
  return typeof value === 'string' && HEX_ID.test(value);
}

/**
 * The {@link ChunkId} (lowercase hex) of a 32-byte SHA-256.
 *
 * @throws {@link InvalidArgumentError} when `hash` is not 32 bytes long.
 */
export function chunkIdFromHash(hash: Uint8Array): ChunkId {
  if (!(hash instanceof Uint8Array) || hash.byteLength !== CHUNK_ID_BYTES) {
    throw new InvalidArgumentError(`a chunk hash must be ${CHUNK_ID_BYTES} bytes`);
  }
  return Buffer.from(hash.buffer, hash.byteOffset, hash.byteLength).toString('hex');
}

/**
 * The 32 raw bytes of a {@link ChunkId}.
 *
 * @throws {@link InvalidArgumentError} when `id` is not 64 lowercase hex digits.
 */
export function chunkIdToHash(id: ChunkId): Uint8Array {
  if (!isChunkId(id))
    throw new InvalidArgumentError(`${JSON.stringify(id)} is not a chunk id (64 lowercase hex digits)`);
  return new Uint8Array(Buffer.from(id, 'hex'));
}

/** Whether 32 bytes are all zero: the id an index uses for an all-zero chunk. */
export function isZeroId(bytes: Uint8Array, offset = 0): boolean {
  for (let i = offset; i < offset + CHUNK_ID_BYTES; i++) if (bytes[i] !== 0) return false;
  return true;
}

/** Whether two 32-byte ids are equal. */
export function sameId(a: Uint8Array, aOffset: number, b: Uint8Array, bOffset: number): boolean {
  for (let i = 0; i < CHUNK_ID_BYTES; i++) if (a[aOffset + i] !== b[bOffset + i]) return false;
  return true;
}
