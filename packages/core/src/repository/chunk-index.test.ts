import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, RepositoryCorruptError } from '../errors/drkit-error.js';
import { CHUNK_ID_BYTES } from './chunk-id.js';
import {
  decodeManifest,
  decodeSegment,
  encodeManifest,
  encodeSegment,
  MAX_CAPACITY_BYTES,
  MAX_CHUNK_COUNT,
  MAX_SEGMENT_COUNT,
  MIN_CHUNK_SIZE,
  openPointIndex,
  SEGMENT_CHUNKS,
  segmentKey,
} from './chunk-index.js';
import type { Store } from './store.js';

const CHUNK = 256 * 1024;

function sha(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function ids(count: number, seed: number): Uint8Array {
  const out = new Uint8Array(count * CHUNK_ID_BYTES);
  for (let i = 0; i < count; i++) {
    if ((i + seed) % 3 === 0) continue; // zero chunk
    out.fill(((i * 7 + seed) % 255) + 1, i * 32, (i + 1) * 32);
  }
  return out;
}

function thrown(action: () => unknown): unknown {
  try {
    action();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}

/** A store of blobs in a Map that counts reads (only what the index reader uses). */
function mapStore(blobs: Map<string, Uint8Array>) {
  const stats = { gets: 0, inFlight: 0, maxInFlight: 0 };
  const store = {
    kind: 'memory',
    location: 'test',
    async get(key: string) {
      stats.gets++;
      stats.inFlight++;
      stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
      await new Promise((resolve) => setImmediate(resolve));
      stats.inFlight--;
      const blob = blobs.get(key);
      if (blob === undefined) throw Object.assign(new Error(`no ${key}`), { code: 'NOT_FOUND' });
      return blob;
    },
  } as unknown as Store;
  return { store, stats };
}

describe('index segments', () => {
  it('round-trips, compresses zero runs, and gives an all-zero segment the zero id and no blob', () => {
    const plain = ids(SEGMENT_CHUNKS, 1);
    const { id, blob } = encodeSegment(plain);
    expect(blob).toBeDefined();
    expect(sha(plain)).toBe(Buffer.from(id).toString('hex'));
    expect(decodeSegment(blob!, id, SEGMENT_CHUNKS, 'segment')).toEqual(plain);
    const sparse = new Uint8Array(SEGMENT_CHUNKS * 32);
    sparse.fill(7, 32 * 100, 32 * 101);
    const packed = encodeSegment(sparse);
    expect(packed.blob![5]).toBe(1); // zstd
    expect(packed.blob!.byteLength).toBeLessThan(250);
    const zero = encodeSegment(new Uint8Array(32 * 10));
    expect(zero.blob).toBeUndefined();
    expect(zero.id).toEqual(new Uint8Array(32));
    expect(segmentKey(id)).toBe(`segments/${sha(plain).slice(0, 2)}/${sha(plain)}`);
    expect(InvalidArgumentError.isInstance(thrown(() => encodeSegment(new Uint8Array(33))))).toBe(true);
  });

  it('detects every flipped bit of a segment blob, naming the blob', () => {
    for (const plain of [ids(SEGMENT_CHUNKS, 2), ids(5, 3)]) {
      const count = plain.byteLength / 32;
      const { id, blob } = encodeSegment(plain);
      for (let byte = 0; byte < blob!.byteLength; byte += Math.max(1, Math.floor(blob!.byteLength / 97))) {
        for (const bit of [0, 5]) {
          const bad = blob!.slice();
          bad[byte]! ^= 1 << bit;
          const error = thrown(() => decodeSegment(bad, id, count, 'segment blob segments/ab/x'));
          expect(RepositoryCorruptError.isInstance(error)).toBe(true);
          expect((error as Error).message).toContain('segments/ab/x');
        }
      }
      expect(RepositoryCorruptError.isInstance(thrown(() => decodeSegment(blob!, id, count + 1, 's')))).toBe(
        true,
      );
      const trailing = new Uint8Array(blob!.byteLength + 1);
      trailing.set(blob!);
      expect(RepositoryCorruptError.isInstance(thrown(() => decodeSegment(trailing, id, count, 's')))).toBe(
        true,
      );
    }
  });
});

describe('manifest', () => {
  it('agrees on the limits: capacity, chunk count and segment count', () => {
    expect(MAX_CAPACITY_BYTES).toBe(2 ** 48);
    expect(MAX_CHUNK_COUNT).toBe(MAX_CAPACITY_BYTES / MIN_CHUNK_SIZE);
    expect(MAX_CHUNK_COUNT).toBeLessThan(2 ** 32);
    expect(MAX_SEGMENT_COUNT).toBe(MAX_CHUNK_COUNT / SEGMENT_CHUNKS);
    const tooBig = thrown(() =>
      encodeManifest({
        chunkSize: CHUNK,
        capacityBytes: MAX_CAPACITY_BYTES + 1,
        segmentIds: new Uint8Array(0),
      }),
    );
    expect(InvalidArgumentError.isInstance(tooBig)).toBe(true);
    const smallChunks = thrown(() =>
      encodeManifest({ chunkSize: 4096, capacityBytes: 4096, segmentIds: new Uint8Array(32) }),
    );
    expect(InvalidArgumentError.isInstance(smallChunks)).toBe(true);
  });

  it('round-trips and detects every flipped bit and trailing bytes', () => {
    const capacityBytes = 3 * SEGMENT_CHUNKS * CHUNK - 1000;
    const segmentIds = new Uint8Array(3 * 32);
    segmentIds.fill(9, 32, 64);
    const blob = encodeManifest({ chunkSize: CHUNK, capacityBytes, segmentIds });
    const decoded = decodeManifest(blob);
    expect(decoded).toMatchObject({ chunkSize: CHUNK, capacityBytes, segmentCount: 3 });
    expect(decoded.chunkCount).toBe(3 * SEGMENT_CHUNKS);
    expect(decoded.segmentIds).toEqual(segmentIds);
    for (let byte = 0; byte < blob.byteLength; byte++) {
      const bad = blob.slice();
      bad[byte]! ^= 0x10;
      const error = thrown(() => decodeManifest(bad, 'manifest blob indexes/p'));
      expect(RepositoryCorruptError.isInstance(error)).toBe(true);
      expect((error as Error).message).toContain('indexes/p');
    }
    const trailing = new Uint8Array(blob.byteLength + 1);
    trailing.set(blob);
    expect(RepositoryCorruptError.isInstance(thrown(() => decodeManifest(trailing)))).toBe(true);
  });

  it('reads the index of a 64 TiB virtual disk segment by segment, in memory bounded by counts', async () => {
    // 64 TiB in 256 KiB chunks: 2^28 positions (past what one array of ids could hold), 2^18 segments.
    const capacityBytes = 64 * 2 ** 40;
    const chunkCount = capacityBytes / CHUNK;
    const segmentCount = chunkCount / SEGMENT_CHUNKS;
    expect(segmentCount).toBe(2 ** 18);
    // One stored segment (one non-zero chunk at its position 7), referenced by every 4096th segment and the last.
    const plain = new Uint8Array(SEGMENT_CHUNKS * 32);
    plain.fill(0xab, 7 * 32, 8 * 32);
    const { id, blob } = encodeSegment(plain);
    const segmentIds = new Uint8Array(segmentCount * 32);
    const referencing: number[] = [];
    for (let s = 0; s < segmentCount; s += 4096) referencing.push(s);
    referencing.push(segmentCount - 1);
    for (const s of referencing) segmentIds.set(id, s * 32);
    const manifest = encodeManifest({ chunkSize: CHUNK, capacityBytes, segmentIds });
    // Nothing is stored per zero segment: the manifest of 2^18 segments compresses to a few KiB.
    expect(manifest.byteLength).toBeLessThan(64 * 1024);
    const blobs = new Map([
      ['indexes/p', manifest],
      [segmentKey(id), blob!],
    ]);
    const { store, stats } = mapStore(blobs);
    const point = { id: 'p', indexDigest: sha(manifest), chunkSize: CHUNK, capacityBytes };
    const index = await openPointIndex(store, point, 'indexes/p', 'memory store', undefined);
    expect(index.chunkCount).toBe(chunkCount);
    expect(index.segmentCount).toBe(segmentCount);
    let seen = 0;
    let nonZero = 0;
    let nonZeroIds = 0;
    let lastPosition = -1;
    for await (const segment of index.segments()) {
      expect(segment.firstPosition).toBe(seen * SEGMENT_CHUNKS);
      expect(segment.firstPosition).toBeGreaterThan(lastPosition);
      lastPosition = segment.firstPosition;
      seen++;
      if (segment.zero) continue;
      nonZero++;
      for (let at = 0; at < segment.ids.byteLength; at += 32) if (segment.ids[at] !== 0) nonZeroIds++;
    }
    expect(seen).toBe(segmentCount);
    expect(nonZero).toBe(referencing.length);
    expect(nonZeroIds).toBe(referencing.length);
    // Reads: the manifest once, one segment blob per non-zero segment; at most a few at once.
    expect(stats.gets).toBe(1 + referencing.length);
    expect(stats.maxInFlight).toBeLessThanOrEqual(4);
    expect(index.segmentsRead).toBe(referencing.length);
    // Random access reads only the segment it needs.
    const before = stats.gets;
    expect((await index.idAt(referencing[3]! * SEGMENT_CHUNKS + 7))[0]).toBe(0xab);
    expect((await index.idAt(12345))[0]).toBe(0); // a zero segment: no read
    expect((await index.idAt(referencing[3]! * SEGMENT_CHUNKS + 8))[0]).toBe(0); // cached
    expect(stats.gets - before).toBe(1);
  }, 60_000);

  it('names the manifest when it is missing or does not match the point', async () => {
    const manifest = encodeManifest({
      chunkSize: CHUNK,
      capacityBytes: CHUNK,
      segmentIds: new Uint8Array(32),
    });
    const { store } = mapStore(new Map([['indexes/p', manifest]]));
    const point = { id: 'p', indexDigest: sha(manifest), chunkSize: CHUNK, capacityBytes: CHUNK };
    const wrongDigest = await openPointIndex(
      store,
      { ...point, indexDigest: '0'.repeat(64) },
      'indexes/p',
      'm',
      undefined,
    ).catch((e: unknown) => e);
    expect(RepositoryCorruptError.isInstance(wrongDigest)).toBe(true);
    expect((wrongDigest as Error).message).toContain('indexes/p');
    const wrongSize = await openPointIndex(
      store,
      { ...point, capacityBytes: 2 * CHUNK },
      'indexes/p',
      'm',
      undefined,
    ).catch((e: unknown) => e);
    expect(RepositoryCorruptError.isInstance(wrongSize)).toBe(true);
  });
});
