// The commit's fence after the point metadata: without a pause it costs no store call; after a pause (the wall
// clock made to jump, as a suspended VM's does) it checks what the point names and withdraws it if a blob is gone.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { PointWithdrawnError } from '../errors/drkit-error.js';
import { ChunkWorkerPool } from '../workers/chunk-worker-pool.js';
import { createLocalFolderStore } from './local-folder-store.js';
import { openRepository } from './repository.js';
import { diskImage, newPoint, rejection, storeImage, TEST_LINEAGE } from './repository-fixture.js';
import type { Store } from './store.js';
import type { Repository } from './types.js';

const STALE_MS = 60_000;
const OPERATIONS = new Set(['get', 'put', 'has', 'delete', 'list', 'sync']);

/** A store that records every call as `<operation> <key>`, and runs `onPut` before a put of a given key. */
function recordingStore(inner: Store, calls: string[], beforePut: (key: string) => Promise<void>): Store {
  return new Proxy(inner, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (typeof property !== 'string' || !OPERATIONS.has(property) || typeof value !== 'function')
        return value;
      return (...args: unknown[]) => {
        const key = typeof args[0] === 'string' ? args[0] : '';
        calls.push(`${property} ${key}`);
        if (property === 'put') {
          return beforePut(key).then(() => (value as (...a: unknown[]) => unknown).apply(target, args));
        }
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

describe('the commit fence after the point metadata', () => {
  let folder: string;
  let workers: ChunkWorkerPool;
  let repository: Repository | undefined;
  let calls: string[];
  /** Runs before the put of `points/…`: the pause, if any. */
  let pause: () => Promise<void>;

  beforeEach(async () => {
    folder = await mkdtemp(join(tmpdir(), 'drkit-fence-'));
    workers = new ChunkWorkerPool(2);
    calls = [];
    pause = async () => undefined;
    const store = recordingStore(createLocalFolderStore({ path: folder }), calls, async (key) => {
      if (key.startsWith('points/')) await pause();
    });
    repository = await openRepository({ store, create: true, workers, lockStaleAfterMs: STALE_MS });
  });
  afterEach(async () => {
    vi.restoreAllMocks();
    await repository?.close();
    await workers.close();
    await rm(folder, { recursive: true, force: true });
  });

  /** Stores `image` in a new session, then commits it; returns the calls made from the metadata put on. */
  async function commit(image: Uint8Array): Promise<{ result: Promise<unknown>; after: () => string[] }> {
    const session = await repository!.beginBackup(TEST_LINEAGE);
    const { index } = await storeImage(session, workers, image);
    const result = session.commit(newPoint(image.byteLength), index).finally(() => session.abort());
    await result.catch(() => undefined);
    return {
      result,
      after: () => calls.slice(calls.findIndex((call) => call.startsWith('put points/'))),
    };
  }

  it('without a pause: after the metadata put, only the lock is deleted', async () => {
    const { result, after } = await commit(diskImage(4, 0, 41));
    await result;
    expect(after()).toEqual([
      expect.stringMatching(/^put points\//),
      expect.stringMatching(/^delete locks\/backup-[0-9a-f]{16}\.json$/),
    ]);
  });

  it('after a pause past half the stale threshold (wall clock): waits for no prune, checks every blob, and the point stands', async () => {
    const realNow = Date.now.bind(Date);
    pause = async () => {
      vi.spyOn(Date, 'now').mockImplementation(() => realNow() + STALE_MS);
    };
    const image = diskImage(4, 0, 42);
    const { result, after } = await commit(image);
    const point = (await result) as { id: string };
    const made = after();
    expect(made).toContain('get locks/prune.json');
    expect(made).toContain(`has indexes/${point.id}`);
    expect(made.filter((call) => call.startsWith('has segments/'))).toHaveLength(1);
    expect(made.filter((call) => call.startsWith('has chunks/'))).toHaveLength(3);
    expect((await repository!.points()).map((p) => p.id)).toEqual([point.id]);
    expect((await repository!.verify()).ok).toBe(true);
  });

  it('after a pause during which a chunk it names was deleted: withdraws the point with a typed, retryable error', async () => {
    const realNow = Date.now.bind(Date);
    let deleted = '';
    pause = async () => {
      vi.spyOn(Date, 'now').mockImplementation(() => realNow() + STALE_MS);
      // What a sweep that judged the lock stale would do with a chunk the session found stored.
      const inner = createLocalFolderStore({ path: folder });
      for await (const entry of inner.list('chunks/')) {
        deleted = entry.key;
        break;
      }
      await inner.delete(deleted);
    };
    const { result } = await commit(diskImage(4, 0, 43));
    const error = await rejection(result);
    expect(PointWithdrawnError.isInstance(error)).toBe(true);
    const withdrawn = error as PointWithdrawnError;
    expect(withdrawn.retryable).toBe(true);
    expect(withdrawn.code).toBe('REPOSITORY_LOCKED');
    expect(withdrawn.missing).toEqual({
      manifest: false,
      segments: [],
      chunks: [deleted.slice('chunks/xx/'.length)],
      total: 1,
    });
    expect(withdrawn.message).toContain(deleted);
    expect(await repository!.points()).toEqual([]);
    const indexes: string[] = [];
    for await (const entry of createLocalFolderStore({ path: folder }).list('indexes/'))
      indexes.push(entry.key);
    expect(indexes).toEqual([]);
  });
});
