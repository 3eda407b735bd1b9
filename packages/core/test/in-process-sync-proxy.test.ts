import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  createBackupEngine,
  createInProcessSyncProxy,
  createLocalFolderStore,
  InvalidArgumentError,
  openRepository,
  type Repository,
  SyncProxyRegistry,
} from '../src/index.js';
import { ChunkWorkerPool } from '../src/internal.js';
import { createMemoryPlatform } from './memory-platform.js';

const MiB = 1024 * 1024;
const CHUNK = 256 * 1024;

function sha(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** The thread ids of a pool's workers: -1 once a worker has exited. */
function threadIds(pool: ChunkWorkerPool): number[] {
  return (pool as unknown as { workers: { worker: Worker }[] }).workers.map((w) => w.worker.threadId);
}

let dir: string;
let repository: Repository;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drkit-proxy-'));
  repository = await openRepository({
    store: createLocalFolderStore({ path: join(dir, 'repo') }),
    create: true,
  });
});

afterEach(async () => {
  vi.restoreAllMocks();
  await repository.close();
  await rm(dir, { recursive: true, force: true });
});

/** Records every pool that encodes a chunk (the proxy's own: the repository's pool only decodes). */
function encodingPools(): Set<ChunkWorkerPool> {
  const pools = new Set<ChunkWorkerPool>();
  const original = ChunkWorkerPool.prototype.encode;
  vi.spyOn(ChunkWorkerPool.prototype, 'encode').mockImplementation(function (this: ChunkWorkerPool, ...args) {
    pools.add(this);
    return original.apply(this, args);
  });
  return pools;
}

describe('createInProcessSyncProxy without workers', { timeout: 60_000 }, () => {
  it('backs up with a pool of its own, restores byte for byte, stops its threads on close() and refuses tasks after', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: 2 * MiB }] });
    platform.write('d1', 4096, randomBytes(MiB));
    const pools = encodingPools();
    const proxy = createInProcessSyncProxy({ id: 'mine', platforms: [platform], repository });
    const proxies = new SyncProxyRegistry();
    proxies.register(proxy);
    proxies.bind(proxy.id, platform.id);
    const engine = createBackupEngine({ repository, platforms: [platform], proxies, chunkSize: CHUNK });

    const job = await engine.backup();
    expect(job.failed).toBe(0);
    const [point] = await repository.points({ diskId: 'd1' });
    const restored = join(dir, 'restored.img');
    await repository.restore(point!.id, { path: restored });
    expect(sha(new Uint8Array(await readFile(restored)))).toBe(sha(platform.content('d1')));

    expect(pools.size).toBe(1);
    const [pool] = [...pools];
    expect(threadIds(pool!).every((id) => id > 0)).toBe(true);
    await proxy.close();
    expect(threadIds(pool!).every((id) => id === -1)).toBe(true);

    const after = await engine.backup();
    expect(after.failed).toBe(1);
    const outcome = after.tasks[0]!;
    expect(outcome.status).toBe('failed');
    const error = (outcome as { error: unknown }).error;
    expect(InvalidArgumentError.isInstance(error)).toBe(true);
    expect(String((error as Error).message)).toMatch(/Sync Proxy mine is closed/);
    await engine.close();
  });

  it("the engine's default proxy owns its pool: engine.close() stops its threads", async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: MiB }] });
    platform.write('d1', 0, randomBytes(MiB));
    const pools = encodingPools();
    const engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    expect((await engine.backup()).failed).toBe(0);
    const [pool] = [...pools];
    expect(threadIds(pool!).every((id) => id > 0)).toBe(true);
    await engine.close();
    expect(threadIds(pool!).every((id) => id === -1)).toBe(true);
  });
});
