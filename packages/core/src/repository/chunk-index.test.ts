import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, RepositoryCorruptError } from '../errors/drkit-error.js';
import {
  CHUNK_INDEX_HEADER_BYTES,
  createChunkIndex,
  decodeChunkIndex,
  encodeChunkIndex,
  forEachNonZeroId,
} from './chunk-index.js';
import type { ChunkIndex } from './types.js';

const CHUNK = 256 * 1024;

function filledIndex(count: number, seed: number) {
  const index = createChunkIndex(count);
  for (let i = 0; i < count; i++) {
    if ((i + seed) % 3 === 0) continue; // zero chunk
    index.setId(i, new Uint8Array(32).fill(((i * 7 + seed) % 255) + 1));
  }
  return index;
}

function expectCorrupt(action: () => unknown): void {
  let thrown: unknown;
  try {
    action();
  } catch (error) {
    thrown = error;
  }
  expect(RepositoryCorruptError.isInstance(thrown)).toBe(true);
}

describe('chunk index', () => {
  it('keeps 32 bytes per chunk, zero by default', () => {
    const index = createChunkIndex(5);
    expect(index.chunkCount).toBe(5);
    for (let i = 0; i < 5; i++) expect(index.isZero(i)).toBe(true);
    const id = new Uint8Array(32).fill(9);
    index.setId(3, id);
    expect(index.isZero(3)).toBe(false);
    expect([...index.idAt(3)]).toEqual([...id]);
    index.setZero(3);
    expect(index.isZero(3)).toBe(true);
  });

  it('rejects out-of-range positions and malformed ids', () => {
    const index = createChunkIndex(2);
    expect(() => index.idAt(2)).toThrow(InvalidArgumentError);
    expect(() => index.setId(-1, new Uint8Array(32))).toThrow(InvalidArgumentError);
    expect(() => index.setId(0, new Uint8Array(31))).toThrow(InvalidArgumentError);
    expect(() => createChunkIndex(1.5)).toThrow(InvalidArgumentError);
  });

  it('round-trips through the blob format with its exact layout', () => {
    const capacityBytes = 7 * CHUNK + 123;
    const index = filledIndex(8, 1);
    const blob = encodeChunkIndex(index, { chunkSize: CHUNK, capacityBytes });
    expect(blob.byteLength).toBe(CHUNK_INDEX_HEADER_BYTES + 8 * 32 + 32);
    expect(Buffer.from(blob.subarray(0, 4)).toString('latin1')).toBe('DRKI');
    const view = new DataView(blob.buffer);
    expect(blob[4]).toBe(1);
    expect(view.getUint32(8, true)).toBe(CHUNK);
    expect(view.getBigUint64(12, true)).toBe(BigInt(capacityBytes));
    expect(view.getUint32(20, true)).toBe(8);
    const decoded = decodeChunkIndex(blob);
    expect(decoded.chunkSize).toBe(CHUNK);
    expect(decoded.capacityBytes).toBe(capacityBytes);
    expect(decoded.index.chunkCount).toBe(8);
    for (let i = 0; i < 8; i++) {
      expect(decoded.index.isZero(i)).toBe(index.isZero(i));
      expect(Buffer.compare(decoded.index.idAt(i), index.idAt(i))).toBe(0);
    }
  });

  it('encodes any ChunkIndex implementation, not only its own', () => {
    const own = filledIndex(3, 2);
    const foreign: ChunkIndex = {
      chunkCount: 3,
      idAt: (i) => own.idAt(i).slice(),
      isZero: (i) => own.isZero(i),
    };
    const layout = { chunkSize: CHUNK, capacityBytes: 3 * CHUNK };
    expect(Buffer.compare(encodeChunkIndex(foreign, layout), encodeChunkIndex(own, layout))).toBe(0);
  });

  it('refuses an index whose count does not fit the layout', () => {
    expect(() =>
      encodeChunkIndex(createChunkIndex(2), { chunkSize: CHUNK, capacityBytes: 3 * CHUNK }),
    ).toThrow(InvalidArgumentError);
  });

  it('visits exactly the non-zero positions', () => {
    const index = filledIndex(10, 0);
    const seen: number[] = [];
    forEachNonZeroId(index, (_bytes, _offset, position) => seen.push(position));
    expect(seen).toEqual([1, 2, 4, 5, 7, 8]);
  });

  it('detects truncation, a wrong magic and a wrong version', () => {
    const blob = encodeChunkIndex(filledIndex(4, 0), { chunkSize: CHUNK, capacityBytes: 4 * CHUNK });
    expectCorrupt(() => decodeChunkIndex(blob.subarray(0, blob.byteLength - 1)));
    expectCorrupt(() => decodeChunkIndex(new Uint8Array(10)));
    const magic = blob.slice();
    magic[0] = 0x58;
    expectCorrupt(() => decodeChunkIndex(magic));
    const version = blob.slice();
    version[4] = 2;
    expectCorrupt(() => decodeChunkIndex(version));
  });

  it('detects any single bit flip anywhere in the blob (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 40 }),
        fc.integer({ min: 0, max: 1000 }),
        fc.nat(),
        fc.integer({ min: 0, max: 7 }),
        (count, seed, where, bit) => {
          const capacityBytes = count === 0 ? 0 : (count - 1) * CHUNK + 1 + (seed % CHUNK);
          const blob = encodeChunkIndex(filledIndex(count, seed), { chunkSize: CHUNK, capacityBytes });
          const decoded = decodeChunkIndex(blob.slice());
          expect(decoded.index.chunkCount).toBe(count);
          const flipped = blob.slice();
          const at = where % flipped.byteLength;
          flipped[at] = flipped[at]! ^ (1 << bit);
          expectCorrupt(() => decodeChunkIndex(flipped));
        },
      ),
      { numRuns: 500 },
    );
  });
});
