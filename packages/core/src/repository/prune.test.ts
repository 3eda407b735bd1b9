import { createHash } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RepositoryCorruptError, RepositoryLockedError } from '../errors/drkit-error.js';
import { chunkKey } from './chunk-blob.js';
import { openRepository } from './repository.js';
import {
  backupImage,
  createRepositoryFixture,
  diskImage,
  newPoint,
  type RepositoryFixture,
  rejection,
  storeImage,
  TEST_CHUNK_SIZE,
  TEST_LINEAGE,
} from './repository-fixture.js';
import type { Store } from './store.js';
import type { Repository } from './types.js';

async function keys(store: Store, prefix: string): Promise<string[]> {
  const result: string[] = [];
  for await (const entry of store.list(prefix)) result.push(entry.key);
  return result;
}

/** A promise the test resolves when it chooses. */
function gate(): { promise: Promise<void>; resolve: () => void } {
  let resolve = () => {};
  const promise = new Promise<void>((done) => {
    resolve = done;
  });
  return { promise, resolve };
}

/** The store, and a promise for its next completed write of a lock blob (a heartbeat, once the lock is held). */
function watchLockWrites(store: Store): { store: Store; next: () => Promise<void> } {
  let pending = gate();
  return {
    store: {
      ...store,
      async put(key, data, options) {
        const written = await store.put(key, data, options);
        if (key.startsWith('locks/')) {
          const done = pending;
          pending = gate();
          done.resolve();
        }
        return written;
      },
    },
    next: () => pending.promise,
  };
}

/** A lock blob as a crashed process would have left it. */
function lockBlob(kind: 'backup' | 'prune', sessionId: string, heartbeatAgoMs: number): Uint8Array {
  const at = new Date(Date.now() - heartbeatAgoMs).toISOString();
  return new TextEncoder().encode(
    JSON.stringify({
      formatVersion: 1,
      kind,
      sessionId,
      repositoryId: '0'.repeat(32),
      hostname: 'crashed-host',
      pid: 4242,
      startedAt: at,
      heartbeatAt: at,
    }),
  );
}

// Each test backs up a few MiB through the chunk worker pool into a folder store that fsyncs every blob: well
// under a second alone, several seconds with 2 busy cores and a busy disk. Hence 60 s rather than vitest's 5 s.
describe('prune and locks', { timeout: 60_000 }, () => {
  let fixture: RepositoryFixture;
  beforeEach(async () => {
    fixture = await createRepositoryFixture();
  });
  afterEach(() => fixture.cleanup());

  it('deletes only chunks that no committed point references', async () => {
    const a = diskImage(4, 0, 1);
    const b = diskImage(4, 0, 2);
    const shared = a.subarray(0, TEST_CHUNK_SIZE);
    b.set(shared, 0); // chunk 0 shared by both points
    const pa = await backupImage(fixture.repository, fixture.workers, a, {
      createdAt: '2024-01-01T00:00:00.000Z',
    });
    const pb = await backupImage(fixture.repository, fixture.workers, b, {
      createdAt: '2024-01-02T00:00:00.000Z',
    });
    // 3 non-zero chunks each, one shared: 5 stored.
    expect(await keys(fixture.store, 'chunks/')).toHaveLength(5);

    expect(await fixture.repository.prune()).toEqual({
      chunksRemoved: 0,
      bytesFreed: 0,
      indexesRemoved: 0,
      staleLocksRemoved: 0,
    });
    await fixture.repository.applyRetention({ keepLast: 1 });
    expect((await fixture.repository.points()).map((p) => p.id)).toEqual([pb.id]);

    const before = await keys(fixture.store, 'chunks/');
    const result = await fixture.repository.prune();
    expect(result.chunksRemoved).toBe(2);
    expect(result.bytesFreed).toBeGreaterThan(0);
    const after = await keys(fixture.store, 'chunks/');
    expect(after).toHaveLength(3);
    expect(before.filter((k) => !after.includes(k))).toHaveLength(2);
    expect(after).toContain(chunkKey(sha(shared)));

    const out = join(fixture.folder, 'b.img');
    await fixture.repository.restore(pb.id, { path: out });
    expect(Buffer.compare(await readFile(out), b)).toBe(0);
    expect((await fixture.repository.verify()).ok).toBe(true);
    expect(pa.id).not.toBe(pb.id);
  });

  it('removes index blobs that no point names, and damaged marks of deleted chunks', async () => {
    const image = diskImage(2, 0, 3);
    const point = await backupImage(fixture.repository, fixture.workers, image);
    await fixture.store.put('indexes/20200101T000000000-deadbeef', new Uint8Array(80));
    await fixture.store.put(`damaged/${'ab'.repeat(32)}`, new TextEncoder().encode('{}'));
    const result = await fixture.repository.prune();
    expect(result.indexesRemoved).toBe(1);
    expect(await keys(fixture.store, 'indexes/')).toEqual([`indexes/${point.id}`]);
    expect(await fixture.repository.damagedChunks()).toEqual(new Set());
  });

  it('a backup session that wrote chunks but has not committed blocks prune; then it commits and restores', async () => {
    const other = await fixture.reopen();
    const image = diskImage(6, 100, 4);
    const session = await fixture.repository.beginBackup(TEST_LINEAGE);
    const { index, chunksWritten } = await storeImage(session, fixture.workers, image);
    expect(chunksWritten).toBe(5); // 7 chunks, 2 of them zeros
    const stored = await keys(fixture.store, 'chunks/');
    expect(stored).toHaveLength(5);

    // No committed point references these chunks: without the lock, prune would delete all of them.
    const error = await rejection(other.prune());
    expect(RepositoryLockedError.isInstance(error)).toBe(true);
    expect((error as Error).message).toMatch(/backup session/);
    expect((error as Error).message).toContain(TEST_LINEAGE.diskId);
    expect((error as RepositoryLockedError).retryable).toBe(true);
    expect(await keys(fixture.store, 'chunks/')).toEqual(stored);
    expect(await fixture.store.has('locks/prune.json')).toBe(false);

    const point = await session.commit(newPoint(image.byteLength), index);
    const out = join(fixture.folder, 'out.img');
    await other.restore(point.id, { path: out });
    expect(Buffer.compare(await readFile(out), image)).toBe(0);
    // With the session done, prune runs and keeps every referenced chunk.
    expect((await other.prune()).chunksRemoved).toBe(0);
  });

  it('a prune holding the lock makes beginBackup refuse, saying who holds it', async () => {
    await fixture.store.put('locks/prune.json', lockBlob('prune', 'feedfacefeedface', 1000));
    const error = await rejection(fixture.repository.beginBackup(TEST_LINEAGE));
    expect(RepositoryLockedError.isInstance(error)).toBe(true);
    expect((error as Error).message).toMatch(
      /being pruned by prune session feedfacefeedface on crashed-host/,
    );
    expect(await keys(fixture.store, 'locks/')).toEqual(['locks/prune.json']); // its own lock withdrawn
  });

  it('a running prune blocks a backup that starts meanwhile (real race through the store)', async () => {
    // Many unreferenced chunks, and a store whose chunk deletes wait until the test lets them go: the backup starts
    // while the prune provably holds its lock and is deleting (no sleep, no race against the clock).
    const image = diskImage(8, 0, 5);
    const session = await fixture.repository.beginBackup(TEST_LINEAGE);
    await storeImage(session, fixture.workers, image);
    await session.abort(); // chunks stay, unreferenced
    const deleting = gate();
    const release = gate();
    const slowStore: Store = {
      ...fixture.store,
      async delete(key, options) {
        if (key.startsWith('chunks/')) {
          deleting.resolve();
          await release.promise;
        }
        return fixture.store.delete(key, options);
      },
    };
    const pruner = await openRepository({ store: slowStore, workers: fixture.workers });
    const pruning = pruner.prune();
    await deleting.promise; // the prune holds its lock and is deleting
    const error = await rejection(fixture.repository.beginBackup(TEST_LINEAGE));
    expect(RepositoryLockedError.isInstance(error)).toBe(true);
    release.resolve();
    const result = await pruning;
    expect(result.chunksRemoved).toBe(6);
    // Once the prune is done, backups start again.
    const next = await fixture.repository.beginBackup(TEST_LINEAGE);
    await next.abort();
    await pruner.close();
  });

  it('ignores and removes stale locks; a stale prune lock does not block backups', async () => {
    await fixture.store.put(
      'locks/backup-0123456789abcdef.json',
      lockBlob('backup', '0123456789abcdef', 11 * 60_000),
    );
    await fixture.store.put('locks/prune.json', lockBlob('prune', 'aaaaaaaaaaaaaaaa', 11 * 60_000));
    const session = await fixture.repository.beginBackup(TEST_LINEAGE);
    await session.abort();
    const result = await fixture.repository.prune();
    expect(result.staleLocksRemoved).toBe(1);
    expect(await keys(fixture.store, 'locks/')).toEqual([]);
  });

  it('a backup whose lock was removed as stale refuses to commit', async () => {
    const image = diskImage(2, 0, 6);
    const session = await fixture.repository.beginBackup(TEST_LINEAGE);
    const { index } = await storeImage(session, fixture.workers, image);
    const [lock] = await keys(fixture.store, 'locks/backup-');
    await fixture.store.delete(lock!);
    const error = await rejection(session.commit(newPoint(image.byteLength), index));
    expect(RepositoryLockedError.isInstance(error)).toBe(true);
    expect((error as Error).message).toMatch(/removed/);
    expect(await fixture.repository.points()).toEqual([]);
    expect(await keys(fixture.store, 'indexes/')).toEqual([]);
  });

  it('the heartbeat keeps a long backup live; a lapsed heartbeat breaks the lock', async () => {
    // On vitest's fake clock: the heartbeat's interval, the lock's wall clock (Date: heartbeatAt, staleness) and its
    // monotonic clock (performance.now: the self-fence) move only when the test advances them, so a busy machine
    // cannot make a heartbeat late. The store I/O stays real; the test waits for each heartbeat to be written
    // before it moves the clock on.
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'Date'] });
    const monotonic = vi.spyOn(performance, 'now').mockImplementation(() => Date.now());
    const opened: Repository[] = [];
    try {
      const staleAfter = 600;
      const lockWrites = watchLockWrites(fixture.store);
      const quick = await openRepository({
        store: lockWrites.store,
        workers: fixture.workers,
        lockStaleAfterMs: staleAfter,
      });
      opened.push(quick);
      const image = diskImage(2, 0, 7);
      const session = await quick.beginBackup(TEST_LINEAGE);
      const { index } = await storeImage(session, fixture.workers, image);
      const [lock] = await keys(fixture.store, 'locks/backup-');
      const first = JSON.parse(new TextDecoder().decode(await fixture.store.get(lock!)));
      // Two stale periods, one heartbeat interval (a fifth of the threshold) at a time.
      for (let beat = 1; beat <= 10; beat++) {
        const written = lockWrites.next();
        await vi.advanceTimersByTimeAsync(staleAfter / 5);
        await written;
      }
      const later = JSON.parse(new TextDecoder().decode(await fixture.store.get(lock!)));
      expect(Date.parse(later.heartbeatAt) - Date.parse(first.heartbeatAt)).toBe(2 * staleAfter);
      // Live after two stale periods thanks to the heartbeat: a prune with the same threshold refuses.
      expect(RepositoryLockedError.isInstance(await rejection(quick.prune()))).toBe(true);
      const point = await session.commit(newPoint(image.byteLength), index);
      expect(point.chunkCount).toBe(2);
      expect(await keys(fixture.store, 'locks/')).toEqual([]);

      // A store whose lock writes hang (the heartbeat cannot be written): once half the threshold has passed
      // without a heartbeat, the session fences itself.
      let hang = false;
      const unhang = gate();
      const flaky: Store = {
        ...fixture.store,
        async put(key, data, options) {
          if (hang && key.startsWith('locks/')) await unhang.promise;
          return fixture.store.put(key, data, options);
        },
      };
      const fenced = await openRepository({
        store: flaky,
        workers: fixture.workers,
        lockStaleAfterMs: staleAfter,
      });
      opened.push(fenced);
      const doomed = await fenced.beginBackup(TEST_LINEAGE);
      hang = true;
      await vi.advanceTimersByTimeAsync(staleAfter / 2 + 1);
      const error = await rejection(doomed.commit(newPoint(image.byteLength), index));
      expect(RepositoryLockedError.isInstance(error)).toBe(true);
      expect((error as Error).message).toMatch(/heartbeat could not be written for more than 0\.300 s/);
      unhang.resolve();
      await doomed.abort();
    } finally {
      for (const repository of opened) await repository.close();
      monotonic.mockRestore();
      vi.useRealTimers();
    }
  });

  it('refuses to prune when a point index is unreadable, deleting nothing', async () => {
    const image = diskImage(2, 0, 8);
    const point = await backupImage(fixture.repository, fixture.workers, image);
    const orphanImage = diskImage(2, 0, 9);
    const session = await fixture.repository.beginBackup(TEST_LINEAGE);
    await storeImage(session, fixture.workers, orphanImage);
    await session.abort();
    const before = await keys(fixture.store, 'chunks/');
    await rm(join(fixture.folder, 'indexes', point.id));
    const error = await rejection(fixture.repository.prune());
    expect(RepositoryCorruptError.isInstance(error)).toBe(true);
    expect(await keys(fixture.store, 'chunks/')).toEqual(before);
    expect(await keys(fixture.store, 'locks/')).toEqual([]);
  });
});

function sha(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
