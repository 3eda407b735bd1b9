import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RepositoryEncryption } from '../src/repository/keyring.js';
import { createLocalFolderStoreOn, type LocalFolderSyncLevel } from '../src/repository/local-folder-store.js';
import { openRepository } from '../src/repository/repository.js';
import { diskImage, newPoint, TEST_CHUNK_SIZE, TEST_LINEAGE } from '../src/repository/repository-fixture.js';
import type { EncodedChunkBlob, RecoveryPoint, Repository } from '../src/repository/types.js';
import { ChunkWorkerPool } from '../src/workers/chunk-worker-pool.js';
import { FaultInjectingFileSystem, MachineCrashedError } from './fault-injecting-file-system.js';

// Crash tests of the repository on the local folder store over a fault-injecting file system: the machine dies at
// every state-changing file system call of a backup (k = 0, 1, … up to the call count), boots from what was made
// durable, and the repository must still be right: every point that reads as committed restores byte for byte and
// verifies, a point whose commit had returned is there, a point not committed is absent, and the next backup works.

const ROOT = '/srv/repo';
const CHUNKS = 10;
const TAIL = 1000;
/** The images the tests back up: a full, its incremental (or a second disk), the backup after a crash. */
const SEEDS = [1, 101, 42];

let workers: ChunkWorkerPool;
/** Encoded chunks by image and chunk number, so each of the hundreds of runs does not encode again. */
const encoded = new Map<string, EncodedChunkBlob | 'zero'>();

beforeAll(() => {
  workers = new ChunkWorkerPool(1);
});
afterAll(() => workers.close());

async function chunkOf(
  image: Uint8Array,
  seed: number,
  i: number,
  idKey: Uint8Array | undefined,
): Promise<EncodedChunkBlob | 'zero'> {
  const cacheKey = `${seed}:${i}:${idKey === undefined ? '' : Buffer.from(idKey).toString('hex')}`;
  const cached = encoded.get(cacheKey);
  if (cached !== undefined) return cached;
  const plain = image.slice(i * TEST_CHUNK_SIZE, Math.min((i + 1) * TEST_CHUNK_SIZE, image.byteLength));
  const plainLength = plain.byteLength;
  const result = await workers.encode(plain, { idKey });
  const chunk: EncodedChunkBlob | 'zero' =
    result.kind === 'zero'
      ? 'zero'
      : result.kind === 'data'
        ? { hash: result.hash, codec: result.codec, payload: result.payload, plainLength }
        : (() => {
            throw new Error('unexpected unchanged chunk');
          })();
  encoded.set(cacheKey, chunk);
  return chunk;
}

/** Image `seed`, or image `base` with chunks 0 and 3 and the tail rewritten (an incremental's change). */
function image(seed: number): Uint8Array {
  if (seed < 100) return diskImage(CHUNKS, TAIL, seed);
  const changed = diskImage(CHUNKS, TAIL, seed - 100);
  const other = diskImage(CHUNKS, TAIL, seed);
  changed.set(other.subarray(0, TEST_CHUNK_SIZE), 0);
  changed.set(other.subarray(3 * TEST_CHUNK_SIZE, 4 * TEST_CHUNK_SIZE), 3 * TEST_CHUNK_SIZE);
  changed.set(other.subarray(CHUNKS * TEST_CHUNK_SIZE), CHUNKS * TEST_CHUNK_SIZE);
  return changed;
}

const images = new Map<number, Uint8Array>();
function imageOf(seed: number): Uint8Array {
  let bytes = images.get(seed);
  if (bytes === undefined) {
    bytes = image(seed);
    images.set(seed, bytes);
  }
  return bytes;
}

/** The encryption of the repositories the current tests open (undefined: none). */
let encryption: RepositoryEncryption | undefined;

function open(fs: FaultInjectingFileSystem, syncLevel: LocalFolderSyncLevel, create = true) {
  const store = createLocalFolderStoreOn(fs, { path: ROOT, syncLevel, platform: 'linux' });
  return openRepository({ store, create, workers, ...(encryption === undefined ? {} : { encryption }) });
}

/**
 * Backs image `seed` up; with `parent`, as an incremental that adopts it and writes only the chunks that differ.
 * `onCommitted` runs as soon as commit resolves.
 */
async function backup(
  repository: Repository,
  seed: number,
  parent: { point: RecoveryPoint; seed: number } | undefined,
  onCommitted: (point: RecoveryPoint) => void = () => undefined,
  diskId = TEST_LINEAGE.diskId,
): Promise<RecoveryPoint> {
  const bytes = imageOf(seed);
  const session = await repository.beginBackup({ ...TEST_LINEAGE, diskId });
  try {
    const count = Math.ceil(bytes.byteLength / TEST_CHUNK_SIZE);
    const adopted = parent === undefined ? undefined : await session.adoptPoint(parent.point.id);
    // Unset positions keep the adopted parent's ids (chunks of the same length), else they are zeros.
    const index = session.createIndex({
      capacityBytes: bytes.byteLength,
      chunkSize: TEST_CHUNK_SIZE,
      ...(adopted === undefined ? {} : { base: adopted.index }),
    });
    const parentBytes = parent === undefined ? undefined : imageOf(parent.seed);
    for (let i = 0; i < count; i++) {
      const at = i * TEST_CHUNK_SIZE;
      const end = Math.min(at + TEST_CHUNK_SIZE, bytes.byteLength);
      if (
        adopted !== undefined &&
        parentBytes !== undefined &&
        Buffer.compare(bytes.subarray(at, end), parentBytes.subarray(at, end)) === 0
      ) {
        continue;
      }
      const chunk = await chunkOf(bytes, seed, i, session.chunkIdKey);
      if (chunk === 'zero') {
        index.setZero(i);
        continue;
      }
      index.setId(i, chunk.hash);
      if (!(await session.hasChunk(chunk.hash))) await session.putChunk(chunk);
    }
    const point = await session.commit(
      newPoint(bytes.byteLength, {
        diskId,
        createdAt: new Date(Date.UTC(2026, 0, 1, 0, seed % 60)).toISOString(),
        ...(parent === undefined ? {} : { parentId: parent.point.id }),
      }),
      index,
    );
    onCommitted(point);
    return point;
  } finally {
    await session.abort().catch(() => undefined);
  }
}

async function restored(repository: Repository, pointId: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      parts.push(chunk);
      done();
    },
  });
  await repository.restore(pointId, { stream });
  return Buffer.concat(parts);
}

/** Every committed point restores to its image and verifies clean; returns the seeds of the points present. */
/** The seed of the image a point was made of: each is stamped with minute `seed % 60` (backup()). */
function seedOf(point: RecoveryPoint): number {
  const seed = SEEDS.find((s) => s % 60 === new Date(point.createdAt).getUTCMinutes());
  expect(seed, `point ${point.id} was never committed by this test`).toBeDefined();
  return seed!;
}

async function checkRepository(repository: Repository): Promise<number[]> {
  const points = await repository.points();
  expect(await repository.unreadablePoints()).toEqual([]);
  const seeds: number[] = [];
  for (const point of points) {
    const seed = seedOf(point);
    expect(Buffer.compare(await restored(repository, point.id), imageOf(seed))).toBe(0);
    seeds.push(seed);
  }
  const report = await repository.verify();
  expect(report.damaged).toEqual([]);
  expect(report.damagedIndexes).toEqual([]);
  return seeds.sort((a, b) => a - b);
}

interface Scenario {
  /** The file system the crashing run starts from. */
  readonly base: FaultInjectingFileSystem;
  /** Seeds of the images of the points already committed on `base`. */
  readonly before: readonly number[];
  /** The backups that may crash. */
  run(repository: Repository, onCommitted: (point: RecoveryPoint) => void): Promise<unknown>;
  /** Seeds of those backups' images. */
  readonly seeds: readonly number[];
  /** Whether the repository is created by the run (the base is empty). */
  readonly creates: boolean;
}

async function crashEverywhere(level: LocalFolderSyncLevel, scenario: Scenario): Promise<number> {
  // A run without a crash counts the steps.
  const counting = scenario.base.clone();
  counting.armCrash(Number.POSITIVE_INFINITY);
  {
    const repository = await open(counting, level, scenario.creates);
    await scenario.run(repository, () => undefined);
    await repository.close();
  }
  const steps = counting.steps;
  expect(steps).toBeGreaterThan(20);
  let committedRuns = 0;
  // Up to the run that no crash stops (concurrent backups may interleave a little differently from one run to
  // the next, so that is not always step `steps`).
  for (let k = 0, done = false; !done; k++) {
    expect(k, 'a run that no crash stops').toBeLessThanOrEqual(2 * steps);
    const fs = scenario.base.clone();
    fs.armCrash(k);
    const returned: number[] = [];
    let repository: Repository | undefined;
    try {
      repository = await open(fs, level, scenario.creates);
      await scenario.run(repository, (point) => {
        returned.push(seedOf(point));
      });
    } catch (error) {
      if (!(error instanceof MachineCrashedError) && !fs.crashed) throw error;
    }
    // The dying process: whatever it still does fails; nothing of it may run after the boot.
    await repository?.close().catch(() => undefined);
    done = !fs.crashed;
    fs.crash();

    const again = await open(fs, level, true);
    try {
      const seeds = await checkRepository(again);
      // Every point committed before is there, and every one whose commit returned. A point whose commit did not
      // return may be there too (durable already, the crash striking in its last steps: deleting the temporary
      // name of its metadata, its lock), but no other point.
      for (const seed of [...scenario.before, ...returned]) {
        expect(seeds, `k=${k}: the point of image ${seed} is gone`).toContain(seed);
      }
      for (const seed of seeds) expect([...scenario.before, ...scenario.seeds]).toContain(seed);
      if (returned.length === scenario.seeds.length) committedRuns++;
      // The next backups work and are right: of the same images again (they find what the crashed run stored,
      // torn or whole, and must not rely on a chunk a crash emptied), and of another one.
      for (const seed of [...scenario.seeds, 42]) await backup(again, seed, undefined);
      expect(await checkRepository(again)).toEqual(
        expect.arrayContaining([...scenario.before, ...scenario.seeds, 42]),
      );
    } finally {
      await again.close();
    }
  }
  expect(committedRuns).toBeGreaterThan(0);
  return steps;
}

function emptyScenario(): Scenario {
  return {
    base: new FaultInjectingFileSystem(),
    before: [],
    seeds: [1],
    creates: true,
    run: (repository, onCommitted) => backup(repository, 1, undefined, onCommitted),
  };
}

async function incrementalScenario(level: LocalFolderSyncLevel): Promise<Scenario> {
  const base = new FaultInjectingFileSystem();
  const repository = await open(base, level);
  const full = await backup(repository, 1, undefined);
  await repository.close();
  return {
    base,
    before: [1],
    seeds: [101],
    creates: false,
    run: (opened, onCommitted) => backup(opened, 101, { point: full, seed: 1 }, onCommitted),
  };
}

/**
 * Two backups at once, of two disks whose images share most chunks: each finds chunks the other wrote and has not
 * synced yet (`hasChunk`), and syncs them with its own before its commit.
 */
async function concurrentScenario(level: LocalFolderSyncLevel): Promise<Scenario> {
  const base = new FaultInjectingFileSystem();
  const repository = await open(base, level);
  await repository.close();
  return {
    base,
    before: [],
    seeds: [1, 101],
    creates: false,
    async run(opened, onCommitted) {
      const results = await Promise.allSettled([
        backup(opened, 1, undefined, onCommitted, 'disk-1'),
        backup(opened, 101, undefined, onCommitted, 'disk-2'),
      ]);
      for (const result of results) if (result.status === 'rejected') throw result.reason;
    },
  };
}

describe.each(['file', 'filesystem'] as const)('a machine crash at every step, sync level %s', (level) => {
  it('of creating a repository and its first (full) backup loses nothing committed', {
    timeout: 300_000,
  }, async () => {
    const steps = await crashEverywhere(level, emptyScenario());
    expect(steps).toBeGreaterThan(40);
  });

  it('of an incremental backup loses nothing committed', { timeout: 300_000 }, async () => {
    await crashEverywhere(level, await incrementalScenario(level));
  });

  it('of two concurrent backups sharing chunks loses nothing committed', { timeout: 300_000 }, async () => {
    await crashEverywhere(level, await concurrentScenario(level));
  });
});

describe('sync level none', () => {
  it('loses a point whose commit returned when the machine crashes', async () => {
    const fs = new FaultInjectingFileSystem();
    const repository = await open(fs, 'none');
    const point = await backup(repository, 1, undefined);
    expect((await repository.points()).map((p) => p.id)).toEqual([point.id]);
    await repository.close();
    expect(fs.syncCalls).toBe(0);
    fs.crash();
    // Nothing was ever synced: the repository itself is gone.
    expect(fs.files()).toEqual([]);
  });

  it('can leave a committed point whose chunks are gone (the kernel wrote the point back, not the chunks)', async () => {
    const fs = new FaultInjectingFileSystem();
    const repository = await open(fs, 'none');
    const point = await backup(repository, 1, undefined);
    await repository.close();
    // Write-back in an order nothing enforces at this level: config, index and point, none of the chunks.
    for (const path of fs.files()) {
      if (!path.includes('/chunks/') && !path.includes('/locks/')) fs.writeBack(path);
    }
    fs.crash();
    const again = await open(fs, 'none', false);
    try {
      expect((await again.points()).map((p) => p.id)).toEqual([point.id]);
      await expect(restored(again, point.id)).rejects.toThrow();
      const report = await again.verify();
      expect(report.damaged.length).toBeGreaterThan(0);
      expect(report.damaged.every((d) => d.problem === 'missing')).toBe(true);
    } finally {
      await again.close();
    }
  });
});

// What a real file system may do that the strict model above never does: commit names before data (ext4 commits its
// journal every few seconds, delayed allocation writes the data later). A crash in the middle of a backup can then
// keep a chunk's name with its content lost, and a later backup finds that chunk present.
describe('names made durable before the content (a journal commit in the middle of a backup)', () => {
  async function tornRun(level: LocalFolderSyncLevel) {
    const fs = new FaultInjectingFileSystem();
    const repository = await open(fs, level);
    const session = await repository.beginBackup(TEST_LINEAGE);
    const bytes = imageOf(1);
    for (let i = 0; i < Math.ceil(bytes.byteLength / TEST_CHUNK_SIZE); i++) {
      const chunk = await chunkOf(bytes, 1, i, undefined);
      if (chunk !== 'zero') await session.putChunk(chunk);
    }
    // The kernel commits every folder's entries (not the files' content), then the machine dies.
    const folders = new Set(fs.files().map((path) => path.slice(0, path.lastIndexOf('/'))));
    for (const folder of [...folders].sort((a, b) => b.length - a.length)) {
      for (let at = folder; at !== ''; at = at.slice(0, at.lastIndexOf('/'))) await fs.fsync(at);
    }
    await fs.fsync('/');
    await session.abort().catch(() => undefined);
    await repository.close().catch(() => undefined);
    fs.crash();
    const again = await open(fs, level, false);
    const point = await backup(again, 1, undefined);
    return { again, point };
  }

  it('cannot hurt at sync level file: every name on disk has its content', async () => {
    const { again, point } = await tornRun('file');
    try {
      expect(Buffer.compare(await restored(again, point.id), imageOf(1))).toBe(0);
      expect((await again.verify()).damaged).toEqual([]);
    } finally {
      await again.close();
    }
  });

  it('at sync level filesystem (the Linux default), the next backup rewrites the emptied chunks it finds: its point restores', async () => {
    const { again, point } = await tornRun('filesystem');
    try {
      // Without the found-chunk size check, the point would name the emptied chunks and fail to restore.
      expect(point.stats.chunksWritten).toBeGreaterThan(0);
      expect(Buffer.compare(await restored(again, point.id), imageOf(1))).toBe(0);
      expect((await again.verify()).damaged).toEqual([]);
    } finally {
      await again.close();
    }
  });
});

describe('fsync-like calls per backup', () => {
  async function countsFor(level: LocalFolderSyncLevel, chunks: number): Promise<number> {
    const fs = new FaultInjectingFileSystem();
    const repository = await open(fs, level);
    const session = await repository.beginBackup(TEST_LINEAGE);
    fs.resetCounts();
    try {
      const index = session.createIndex({
        capacityBytes: chunks * TEST_CHUNK_SIZE,
        chunkSize: TEST_CHUNK_SIZE,
      });
      for (let i = 0; i < chunks; i++) {
        // Small compressible chunks with distinct content, encoded for real.
        const plain = new Uint8Array(TEST_CHUNK_SIZE).fill(i % 251);
        plain.set(new TextEncoder().encode(`chunk ${i}`));
        const result = await workers.encode(plain);
        if (result.kind !== 'data') throw new Error('expected a data chunk');
        index.setId(i, result.hash);
        await session.putChunk({
          hash: result.hash,
          codec: result.codec,
          payload: result.payload,
          plainLength: TEST_CHUNK_SIZE,
        });
      }
      await session.commit(newPoint(chunks * TEST_CHUNK_SIZE), index);
    } finally {
      await session.abort();
      await repository.close();
    }
    return fs.syncCalls;
  }

  it('do not grow with the chunk count at sync level filesystem (64 vs 1024 chunks)', {
    timeout: 120_000,
  }, async () => {
    const small = await countsFor('filesystem', 64);
    const large = await countsFor('filesystem', 1024);
    expect(large).toBe(small);
    // One syncfs for the chunks, one each for the index and the point metadata (durable puts).
    expect(small).toBe(3);
  });

  it('are one per chunk written plus one per folder at sync level file, none at none', {
    timeout: 120_000,
  }, async () => {
    const count = await countsFor('file', 64);
    // 64 chunk files, at most 64 + 2 folders (chunks/<h2>, chunks, root) at the commit's sync, 2 metadata blobs with
    // their folders (a new folder also syncs its parent).
    expect(count).toBeGreaterThanOrEqual(64 + 1);
    expect(count).toBeLessThanOrEqual(64 + 64 + 2 + 2 * 4);
    expect(await countsFor('none', 64)).toBe(0);
  });
});

// The same in an encrypted repository (its first key blob and configuration written at creation, every blob
// sealed): at the default level only, the others add nothing the sealing could change.
describe('a machine crash at every step of an encrypted repository, sync level filesystem', () => {
  beforeAll(() => {
    encryption = { passphrase: 'crash test passphrase', scrypt: { N: 1024, r: 8, p: 1 } };
  });
  afterAll(() => {
    encryption = undefined;
  });

  it('of creating it and its first (full) backup loses nothing committed', { timeout: 300_000 }, async () => {
    const steps = await crashEverywhere('filesystem', emptyScenario());
    expect(steps).toBeGreaterThan(40);
  });

  it('of an incremental backup loses nothing committed', { timeout: 300_000 }, async () => {
    await crashEverywhere('filesystem', await incrementalScenario('filesystem'));
  });
});
