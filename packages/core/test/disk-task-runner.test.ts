import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  type Change,
  type ChangedBlockSession,
  createLocalFolderStore,
  type DiskTask,
  type DiskTaskProgress,
  openRepository,
  type Platform,
  type Repository,
  SourceProtocolError,
  type Store,
} from '../src/index.js';
import { ChunkWorkerPool, runDiskTask } from '../src/internal.js';

const CHUNK = 256 * 1024;
let dir: string;
let repository: Repository;
let pool: ChunkWorkerPool;
let store: Store;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drkit-runner-'));
  store = createLocalFolderStore({ path: join(dir, 'repo') });
  repository = await openRepository({ store, create: true });
  pool = new ChunkWorkerPool(1);
});
afterEach(async () => {
  vi.useRealTimers();
  await pool.close();
  await repository.close();
  await rm(dir, { recursive: true, force: true });
});

/** A platform whose one disk yields exactly the given changes: for contract violations a real source won't make. */
function scriptedPlatform(
  capacity: number,
  changes: Change[] | (() => AsyncIterable<Change>),
  onClose?: () => void,
  onOpen?: () => void,
): Platform {
  return {
    specificationVersion: 'v2',
    id: 'scripted',
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
        onOpen?.();
        return {
          mode: 'stream',
          capacityBytes: capacity,
          validity: { kind: 'full', reason: 'first-backup' },
          async *changes() {
            yield* typeof changes === 'function' ? changes() : changes;
          },
          checkpoint: () => ({
            diskId: 'd',
            token: 't',
            capacityBytes: capacity,
            createdAt: new Date().toISOString(),
          }),
          async commit() {},
          async abandon() {},
          async close() {
            onClose?.();
          },
          async [Symbol.asyncDispose]() {
            onClose?.();
          },
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

/** A promise the test resolves by hand. */
function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe('runDiskTask: when the data is from', () => {
  it("without a host snapshot, snapshotAt is the time the read session was opened; jobId and taskId are the task's", async () => {
    let openedAt: number | undefined;
    const platform = scriptedPlatform(
      CHUNK,
      [{ kind: 'data', offset: 0, data: new Uint8Array(CHUNK).fill(1) }],
      undefined,
      () => {
        openedAt = Date.now();
      },
    );
    const result = await runDiskTask(task(CHUNK), { platform, repository, pool });
    const point = await repository.point(result.pointId);
    expect(Date.parse(point.snapshotAt)).toBeLessThanOrEqual(openedAt!);
    expect(Date.parse(point.snapshotAt)).toBeLessThanOrEqual(Date.parse(point.createdAt));
    expect(point.jobId).toBe('job');
    expect(point.taskId).toBe('job/h/d');
    expect(point.snapshotName).toBeUndefined();
  });

  it("takes snapshotAt and the snapshot's name from the task when the engine took a host snapshot", async () => {
    const platform = scriptedPlatform(CHUNK, [{ kind: 'zero', offset: 0, length: CHUNK }]);
    const result = await runDiskTask(
      {
        ...task(CHUNK),
        snapshot: { hostId: 'h', name: 'drkit-x', disks: [{ diskId: 'd', ref: 'd@x' }], consistency: 'host' },
        snapshotAt: '2020-02-02T02:02:02.002Z',
      },
      { platform, repository, pool },
    );
    const point = await repository.point(result.pointId);
    expect(point.snapshotAt).toBe('2020-02-02T02:02:02.002Z');
    expect(point.snapshotName).toBe('drkit-x');
    expect(point.createdAt).not.toBe(point.snapshotAt);
  });
});

describe('runDiskTask stall watchdog', () => {
  const capacity = CHUNK * 4;

  async function locks(): Promise<string[]> {
    const keys: string[] = [];
    for await (const entry of store.list('locks/')) keys.push(entry.key);
    return keys;
  }

  it('fails a task whose source hangs (ignoring the signal) with TaskStalledError and releases its lock', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const hung = deferred();
    let closes = 0;
    const platform = scriptedPlatform(
      capacity,
      async function* () {
        hung.resolve();
        await new Promise(() => undefined); // never answers, never looks at the signal
      },
      () => closes++,
    );
    const running = runDiskTask(task(capacity), {
      platform,
      repository,
      pool,
      stallTimeoutSeconds: 60,
    }).catch((e: unknown) => e);
    await hung.promise;
    expect(await locks()).toHaveLength(1); // the backup session holds the repository
    await vi.advanceTimersByTimeAsync(60_000);
    const error = await running;
    expect(error).toMatchObject({ code: 'TASK_STALLED', retryable: true, stallTimeoutSeconds: 60 });
    expect(String(error)).toMatch(/disk task job\/h\/d made no progress for 60 s/);
    expect(await locks()).toEqual([]);
    expect(closes).toBe(1);
    expect(await repository.points()).toEqual([]);
  });

  it('progress (bytes read) restarts the stall timeout; a task that keeps moving is not stopped', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const gates = [deferred(), deferred(), deferred()];
    const waiting = [deferred(), deferred(), deferred()];
    const platform = scriptedPlatform(capacity, async function* () {
      for (let i = 0; i < gates.length; i++) {
        waiting[i]!.resolve();
        await gates[i]!.promise;
        yield data(i * CHUNK, CHUNK, i + 1);
      }
      await new Promise(() => undefined); // then hangs
    });
    let settled = false;
    const running = runDiskTask(task(capacity), { platform, repository, pool, stallTimeoutSeconds: 60 })
      .catch((e: unknown) => e)
      .finally(() => {
        settled = true;
      });
    // 45 s idle, then a chunk's bytes, twice: 90 s in all, never 60 s without progress.
    for (let i = 0; i < 2; i++) {
      await waiting[i]!.promise;
      await vi.advanceTimersByTimeAsync(45_000);
      expect(settled).toBe(false);
      gates[i]!.resolve();
    }
    await waiting[2]!.promise; // the runner took chunk 1's bytes and asks for more
    await vi.advanceTimersByTimeAsync(45_000);
    expect(settled).toBe(false);
    gates[2]!.resolve();
    await vi.advanceTimersByTimeAsync(200_000);
    expect(await running).toMatchObject({ code: 'TASK_STALLED' });
    expect(await locks()).toEqual([]);
  });

  it('refuses an invalid stallTimeoutSeconds', async () => {
    const error = await runDiskTask(task(capacity), {
      platform: scriptedPlatform(capacity, []),
      repository,
      pool,
      stallTimeoutSeconds: 0,
    }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'INVALID_SETTINGS', field: 'stallTimeoutSeconds' });
  });
});
