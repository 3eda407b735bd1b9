import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type Change,
  type ChangedBlockSession,
  ChunkWorkerPool,
  createLocalFolderStore,
  type DiskTask,
  type DiskTaskProgress,
  openRepository,
  type Platform,
  type Repository,
  runDiskTask,
  SourceProtocolError,
} from '../src/index.js';

const CHUNK = 256 * 1024;
let dir: string;
let repository: Repository;
let pool: ChunkWorkerPool;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drkit-runner-'));
  repository = await openRepository({
    store: createLocalFolderStore({ path: join(dir, 'repo') }),
    create: true,
  });
  pool = new ChunkWorkerPool(1);
});
afterEach(async () => {
  await pool.close();
  await repository.close();
  await rm(dir, { recursive: true, force: true });
});

/** A platform whose one disk yields exactly the given changes: for contract violations a real source won't make. */
function scriptedPlatform(capacity: number, changes: Change[]): Platform {
  return {
    specificationVersion: 'v1',
    id: 'scripted',
    kind: 'test',
    capabilities: { snapshots: 'none', retainsSnapshotAsBase: false, changeTracking: 'none' },
    async verify() {
      return { status: 'normal', hostCount: 1, checkedAt: new Date().toISOString() };
    },
    async *hosts() {},
    changedBlockReader: {
      async open(): Promise<ChangedBlockSession> {
        return {
          capacityBytes: capacity,
          validity: { kind: 'full', reason: 'first-backup' },
          async *changes() {
            yield* changes;
          },
          checkpoint: () => ({
            diskId: 'd',
            token: 't',
            capacityBytes: capacity,
            createdAt: new Date().toISOString(),
          }),
          async close() {},
          async [Symbol.asyncDispose]() {},
        };
      },
    },
  };
}

function task(capacity: number): DiskTask {
  const disk = { id: 'd', hostId: 'h', name: 'd', capacityBytes: capacity };
  return {
    id: 'job/h/d',
    jobId: 'job',
    platformId: 'scripted',
    host: { id: 'h', name: 'h', platformId: 'scripted', disks: [disk] },
    disk,
    fullReason: 'first-backup',
    chunkSize: CHUNK,
  };
}

const data = (offset: number, length: number, fill = 7): Change => ({
  kind: 'data',
  offset,
  data: new Uint8Array(length).fill(fill),
});

describe('runDiskTask', () => {
  it.each([
    ['unsorted changes', [data(CHUNK, 10), data(0, 10)], /unsorted, overlapping or empty/],
    ['overlapping changes', [data(0, 100), data(50, 10)], /unsorted, overlapping or empty/],
    ['an empty change', [data(0, 0)], /unsorted, overlapping or empty/],
    ['a change past the capacity', [data(CHUNK * 2 - 5, 10)], /past the capacity/],
  ])('refuses a reader that yields %s, and commits nothing', async (_name, changes, message) => {
    const capacity = CHUNK * 2;
    const error = await runDiskTask(task(capacity), {
      platform: scriptedPlatform(capacity, changes as Change[]),
      repository,
      pool,
    }).catch((e: unknown) => e);
    expect(SourceProtocolError.isInstance(error)).toBe(true);
    expect(String(error)).toMatch(message as RegExp);
    expect(await repository.points()).toEqual([]);
  });

  it('counts bytes and reports progress up to done; zero changes need no hashing', async () => {
    const capacity = CHUNK * 4 + 1000;
    const changes: Change[] = [
      data(0, CHUNK),
      { kind: 'zero', offset: CHUNK, length: CHUNK * 2 },
      data(CHUNK * 3 + 10, 500, 9),
    ];
    const progress: DiskTaskProgress[] = [];
    const result = await runDiskTask(task(capacity), {
      platform: scriptedPlatform(capacity, changes),
      repository,
      pool,
      onProgress: (p) => progress.push(p),
    });
    expect(result.bytesRead).toBe(CHUNK + 500);
    expect(result.chunkCount).toBe(5);
    expect(result.bytesZero).toBe(CHUNK * 2 + 1000); // two zeroed chunks, and the untouched short last one
    expect(progress.map((p) => p.state)).toEqual(expect.arrayContaining(['reading', 'committing', 'done']));
    expect(progress.at(-1)).toMatchObject({ state: 'done', bytesDone: capacity, totalBytes: capacity });
    const [point] = await repository.points();
    expect(point?.stats.chunksWritten).toBe(2);
  });
});
