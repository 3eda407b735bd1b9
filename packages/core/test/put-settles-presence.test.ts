// Over a store whose create-only write proves a whole blob (`createOnlyProvesWhole`, as the S3 store declares), a
// backup asks no existence question per chunk: one create-only put per chunk the session does not know, a taken key
// counted as deduplicated. Over any other store it asks first (a cheap stat that spares a write). The store here is
// an in-memory map that counts the calls it serves, by kind and by key folder (counting-store.ts).
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type Change,
  type ChangedBlockSession,
  type DiskTask,
  type DiskTaskResult,
  openRepository,
  type Platform,
  type Repository,
  UnreachableError,
} from '../src/index.js';
import { ChunkWorkerPool, runDiskTask } from '../src/internal.js';
import { storeImage, TEST_LINEAGE } from '../src/repository/repository-fixture.js';
import { type CountingStore, countingStore } from './counting-store.js';

const CHUNK = 256 * 1024;

/** A platform whose one disk `diskId` is `image`, read in full on every backup. */
function imagePlatform(image: Uint8Array): Platform {
  return {
    specificationVersion: 'v2',
    id: 'image',
    kind: 'test',
    capabilities: { snapshots: 'none', quiesce: false, retainsSnapshotAsBase: false, changeTracking: 'none' },
    async verify() {
      return { status: 'normal', hostCount: 1, checkedAt: new Date().toISOString() };
    },
    async *hosts() {},
    changedBlockReader: {
      mode: 'stream',
      blockSize: 512,
      maxConcurrentReads: 1,
      async open(): Promise<ChangedBlockSession> {
        const close = async () => {};
        return {
          mode: 'stream',
          capacityBytes: image.byteLength,
          validity: { kind: 'full', reason: 'first-backup' },
          async *changes(): AsyncIterable<Change> {
            for (let offset = 0; offset < image.byteLength; offset += CHUNK) {
              yield { kind: 'data', offset, data: image.slice(offset, offset + CHUNK) };
            }
          },
          checkpoint: () => ({
            diskId: 'd',
            token: 't',
            capacityBytes: image.byteLength,
            createdAt: new Date().toISOString(),
          }),
          async commit() {},
          async abandon() {},
          close,
          [Symbol.asyncDispose]: close,
        };
      },
    },
  };
}

function task(diskId: string, capacity: number): DiskTask {
  const disk = { id: diskId, hostId: 'h', name: diskId, capacityBytes: capacity };
  return {
    id: `job/h/${diskId}`,
    jobId: 'job',
    platformId: 'image',
    host: { id: 'h', name: 'h', platformId: 'image', disks: [disk] },
    disk,
    fullReason: 'first-backup',
    chunkSize: CHUNK,
  };
}

/**
 * Ten chunks: six distinct data chunks (one of them also at a second and a third position), one all-zero chunk
 * and one more distinct chunk last. Distinct data chunks: 7; positions of repeated data: 2.
 */
function testImage(): Uint8Array {
  const image = new Uint8Array(10 * CHUNK);
  const fill = (position: number, seed: number) => {
    const chunk = image.subarray(position * CHUNK, (position + 1) * CHUNK);
    for (let i = 0; i < chunk.byteLength; i += 4096) chunk.fill((seed * 31 + i / 4096) & 0xff, i, i + 4096);
    chunk[0] = seed; // distinct per seed even where the fill pattern wraps
  };
  for (const [position, seed] of [
    [0, 1],
    [1, 2],
    [2, 3],
    [3, 1],
    [4, 4],
    [5, 5],
    [6, 6],
    [7, 1],
    [9, 7],
  ] as const) {
    fill(position, seed);
  }
  return image; // position 8 stays zero
}
const DISTINCT = 7;
const REPEATS = 2;

describe.each([
  { name: 'a store whose create-only write proves a whole blob (S3)', provesWhole: true, encrypted: false },
  {
    name: 'the same store, encrypted (SealedStore forwards the capability)',
    provesWhole: true,
    encrypted: true,
  },
  { name: 'a store without it (the local folder store asks first)', provesWhole: false, encrypted: false },
])('a backup over $name', ({ provesWhole, encrypted }) => {
  let store: CountingStore;
  let repository: Repository;
  let pool: ChunkWorkerPool;
  const image = testImage();

  beforeEach(async () => {
    store = countingStore(provesWhole);
    repository = await openRepository({
      store,
      create: true,
      ...(encrypted ? { encryption: { passphrase: 'correct horse', scrypt: { N: 1024, r: 8, p: 1 } } } : {}),
    });
    pool = new ChunkWorkerPool(1);
  });
  afterEach(async () => {
    await pool.close();
    await repository.close();
  });

  const backUp = async (diskId: string) => {
    const result = await runDiskTask(task(diskId, image.byteLength), {
      platform: imagePlatform(image),
      repository,
      pool,
    });
    return { result, point: await repository.point(result.pointId) };
  };

  /** Counts the chunks the pool compressed (encode answers of kind `data`). */
  const countCompressions = () => {
    const encode = pool.encode.bind(pool);
    const counter = { compressed: 0 };
    pool.encode = async (data, options) => {
      const encoded = await encode(data, options);
      if (encoded.kind === 'data') counter.compressed += 1;
      return encoded;
    };
    return counter;
  };

  it('asks about each new chunk only where that spares a request, and counts what was found as deduplicated', async () => {
    const counter = countCompressions();
    const first = await backUp('disk-a');
    // Every distinct chunk is compressed; a repeat may be too, when its lookup had not started yet.
    expect(counter.compressed).toBeGreaterThanOrEqual(DISTINCT);
    expect(counter.compressed).toBeLessThanOrEqual(DISTINCT + REPEATS);
    counter.compressed = 0;
    // Each distinct chunk is written once; the repeats are known to the session and cost no request at all.
    expect(store.count('put', 'chunks')).toBe(DISTINCT);
    expect(store.taken.get('put chunks') ?? 0).toBe(0);
    // A repeat looked up while the first copy of its bytes is still being compressed is looked up once more: at
    // most one lookup per position, never one for a chunk the session wrote.
    const lookups = store.count('has', 'chunks') + store.count('size', 'chunks');
    if (provesWhole) expect(lookups).toBe(0);
    else {
      expect(lookups).toBeGreaterThanOrEqual(DISTINCT);
      expect(lookups).toBeLessThanOrEqual(DISTINCT + REPEATS);
    }
    expectStats(first.result, first.point.stats, { written: DISTINCT, deduplicated: REPEATS });

    // Another disk with the same bytes: every chunk is already stored.
    store.reset();
    const second = await backUp('disk-b');
    if (provesWhole) {
      // One create-only put per distinct chunk, each finding the key taken; no HEAD, no re-check of the taken key.
      expect(store.count('put', 'chunks')).toBe(DISTINCT);
      expect(store.taken.get('put chunks')).toBe(DISTINCT);
      expect(store.count('has', 'chunks') + store.count('size', 'chunks')).toBe(0);
      // Every data chunk is compressed first: nothing is asked before the put.
      expect(counter.compressed).toBe(DISTINCT + REPEATS);
    } else {
      // One stat per distinct chunk, and no write at all; each chunk is looked up after its hash, before it is
      // compressed (the first lookup finds it stored, so every later chunk is probed too): nothing compressed.
      expect(store.count('put', 'chunks')).toBe(0);
      expect(store.count('has', 'chunks') + store.count('size', 'chunks')).toBe(DISTINCT);
      expect(counter.compressed).toBe(0);
    }
    expectStats(second.result, second.point.stats, { written: 0, deduplicated: DISTINCT + REPEATS });
    expect((await repository.verify()).ok).toBe(true);
  });

  it('a chunk put without asking that finds its key taken is re-checked for lost content only where a name can outlive its content', async () => {
    await backUp('disk-a');
    store.reset();
    const session = await repository.beginBackup(TEST_LINEAGE);
    try {
      const { chunksWritten } = await storeImage(session, pool, image);
      expect(chunksWritten).toBe(0);
      expect(store.taken.get('put chunks')).toBe(DISTINCT);
      expect(store.count('size', 'chunks')).toBe(provesWhole ? 0 : DISTINCT);
    } finally {
      await session.abort();
    }
  });
});

function expectStats(
  result: DiskTaskResult,
  stats: { bytesWritten: number; bytesDeduplicated: number; bytesZero: number; chunksWritten: number },
  expected: { written: number; deduplicated: number },
): void {
  expect(stats.chunksWritten).toBe(expected.written);
  expect(stats.bytesWritten).toBe(expected.written * CHUNK);
  expect(stats.bytesDeduplicated).toBe(expected.deduplicated * CHUNK);
  expect(stats.bytesZero).toBe(CHUNK);
  // The task's progress counters say the same as the point's stats.
  expect(result.bytesDeduplicated).toBe(expected.deduplicated * CHUNK);
  expect(result.bytesZero).toBe(CHUNK);
}

describe('a store that goes down mid-backup', () => {
  it('fails the disk task with the typed error that ended it, not a SuppressedError of the lock it could not delete', async () => {
    const store = countingStore(true);
    const repository = await openRepository({ store, create: true });
    const pool = new ChunkWorkerPool(1);
    const image = testImage();
    let puts = 0;
    store.beforePut = (key) => {
      if (key.startsWith('chunks/') && ++puts === 3) store.down = true;
    };
    try {
      const error = await runDiskTask(task('disk-a', image.byteLength), {
        platform: imagePlatform(image),
        repository,
        pool,
      }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(UnreachableError.isInstance(error), String(error)).toBe(true);
      store.down = false;
      // Its lock could not be deleted: it stays until it goes stale.
      const locks: string[] = [];
      for await (const entry of store.list('locks/')) locks.push(entry.key);
      expect(locks.filter((key) => key.startsWith('locks/backup-'))).toHaveLength(1);
      expect(await repository.points()).toHaveLength(0);
    } finally {
      store.down = false;
      await pool.close();
      await repository.close();
    }
  });
});
