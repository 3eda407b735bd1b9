import { createHash } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { InvalidArgumentError, RepositoryCorruptError } from '../errors/drkit-error.js';
import { ChunkWorkerPool } from '../workers/chunk-worker-pool.js';
import {
  CHUNK_BLOB_HEADER_BYTES,
  chunkIdFromKey,
  chunkKey,
  decodeChunkBlob,
  encodeChunkBlob,
} from './chunk-blob.js';
import { randomish } from './repository-fixture.js';

const pool = new ChunkWorkerPool(1);
afterAll(() => pool.close());

async function encoded(plain: Uint8Array) {
  const plainLength = plain.byteLength;
  const result = await pool.encode(plain.slice());
  if (result.kind !== 'data') throw new Error(`expected data, got ${result.kind}`);
  return { ...result, plainLength };
}

function corrupt(blob: Uint8Array): unknown {
  try {
    decodeChunkBlob(blob);
  } catch (error) {
    return error;
  }
  return undefined;
}

describe('chunk blob', () => {
  it('frames a zstd chunk with the 12-byte header and gives the payload back', async () => {
    const plain = new TextEncoder().encode('compress me '.repeat(5000));
    const chunk = await encoded(plain);
    expect(chunk.codec).toBe(1);
    const blob = encodeChunkBlob(chunk);
    expect(blob.byteLength).toBe(CHUNK_BLOB_HEADER_BYTES + chunk.payload.byteLength);
    expect([...blob.subarray(0, 8)]).toEqual([0x44, 0x52, 0x4b, 0x43, 1, 1, 0, 0]);
    expect(new DataView(blob.buffer).getUint32(8, true)).toBe(plain.byteLength);
    const decoded = decodeChunkBlob(blob);
    expect(decoded.codec).toBe(1);
    expect(decoded.plainLength).toBe(plain.byteLength);
    const back = await pool.decode(decoded.payload, decoded.codec, decoded.plainLength);
    expect(Buffer.compare(back.plain, plain)).toBe(0);
    expect(Buffer.from(back.hash).toString('hex')).toBe(createHash('sha256').update(plain).digest('hex'));
  });

  it('frames in place, in the headroom the worker left before the payload, without copying', async () => {
    const plain = new TextEncoder().encode('in place '.repeat(4000));
    const result = await pool.encode(plain.slice(), { headroom: CHUNK_BLOB_HEADER_BYTES });
    if (result.kind !== 'data') throw new Error(`expected data, got ${result.kind}`);
    const chunk = { ...result, plainLength: plain.byteLength };
    const copied = encodeChunkBlob(chunk);
    const inPlace = encodeChunkBlob({ ...chunk, frameInPlace: true });
    expect(inPlace.buffer).toBe(result.payload.buffer);
    expect(inPlace.byteOffset).toBe(result.payload.byteOffset - CHUNK_BLOB_HEADER_BYTES);
    expect(Buffer.compare(inPlace, copied)).toBe(0);
    // Without headroom there is nothing to frame in: it copies.
    const noRoom = await pool.encode(plain.slice());
    if (noRoom.kind !== 'data') throw new Error('expected data');
    const framed = encodeChunkBlob({ ...noRoom, plainLength: plain.byteLength, frameInPlace: true });
    expect(framed.buffer).not.toBe(noRoom.payload.buffer);
    expect(Buffer.compare(framed, copied)).toBe(0);
  });

  it('frames an incompressible chunk raw', async () => {
    const plain = randomish(4096, 1);
    const chunk = await encoded(plain);
    expect(chunk.codec).toBe(0);
    const decoded = decodeChunkBlob(encodeChunkBlob(chunk));
    expect(decoded.codec).toBe(0);
    expect(Buffer.compare(decoded.payload, plain)).toBe(0);
  });

  it('refuses to frame inconsistent chunks', () => {
    const payload = new Uint8Array(10);
    expect(() => encodeChunkBlob({ codec: 0, payload, plainLength: 11 })).toThrow(InvalidArgumentError);
    expect(() => encodeChunkBlob({ codec: 1, payload, plainLength: 100 })).toThrow(InvalidArgumentError);
    expect(() => encodeChunkBlob({ codec: 0, payload: new Uint8Array(0), plainLength: 0 })).toThrow(
      InvalidArgumentError,
    );
  });

  it('detects garbage in every header field', async () => {
    const good = encodeChunkBlob(await encoded(new TextEncoder().encode('abc'.repeat(3000))));
    expect(decodeChunkBlob(good).plainLength).toBe(9000);
    const set = (at: number, value: number) => (b: Uint8Array) => {
      b[at] = value;
      return b;
    };
    const length = (value: number) => (b: Uint8Array) => {
      new DataView(b.buffer).setUint32(8, value, true);
      return b;
    };
    const cases: [string, (b: Uint8Array) => Uint8Array][] = [
      ['short', (b) => b.subarray(0, 11)],
      ['magic', set(1, 0)],
      ['version', set(4, 9)],
      ['codec', set(5, 2)],
      ['reserved', set(7, 1)],
      ['plain length', length(9001)],
      ['zero length', length(0)],
      ['zstd magic', set(12, 0)],
      ['random bytes', () => randomish(500, 7)],
    ];
    for (const [name, damage] of cases) {
      const error = corrupt(damage(good.slice()));
      expect(RepositoryCorruptError.isInstance(error), name).toBe(true);
    }
  });

  it('keys chunks by the first two hex digits', () => {
    const id = 'ab'.padEnd(64, '0');
    expect(chunkKey(id)).toBe(`chunks/ab/${id}`);
    expect(chunkKey(Buffer.from(id, 'hex'))).toBe(`chunks/ab/${id}`);
    expect(chunkIdFromKey(`chunks/ab/${id}`)).toBe(id);
    expect(chunkIdFromKey(`chunks/ac/${id}`)).toBeUndefined();
    expect(() => chunkKey('xyz')).toThrow(InvalidArgumentError);
  });
});
