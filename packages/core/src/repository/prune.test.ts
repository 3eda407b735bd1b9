import { createHash } from 'node:crypto';
import { readFile, rm, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  InvalidArgumentError,
  RepositoryCorruptError,
  RepositoryLockedError,
} from '../errors/drkit-error.js';
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
import type { PruneResult, Repository } from './types.js';

/** Moves the pending mark's time back by a day: the grace period has passed, without waiting for it. */
async function backdateMark(store: Store): Promise<void> {
  const mark = JSON.parse(new TextDecoder().decode(await store.get('prune/mark.json')));
  mark.markedAt = new Date(Date.now() - 24 * 60 * 60 * 1000).toISOString();
  await store.delete('prune/mark.json');
  await store.put('prune/mark.json', new TextEncoder().encode(JSON.stringify(mark)));
}

/** Both phases of a prune in one go: mark, let the grace period pass (backdated), sweep. */
async function pruneNow(repository: Repository, store: Store): Promise<PruneResult> {
  const marked = await repository.prune();
  if (marked.phase !== 'marked' || marked.candidateChunks + marked.candidateIndexes === 0) return marked;
  await backdateMark(store);
  return repository.prune();
}

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
    // 3 non-zero chunks each, one shared: 5 stored; one index segment each (their ids differ).
    expect(await keys(fixture.store, 'chunks/')).toHaveLength(5);
    const segmentsBefore = await keys(fixture.store, 'segments/');
    expect(segmentsBefore).toHaveLength(2);

    expect(await fixture.repository.prune()).toEqual({
      phase: 'marked',
      chunksRemoved: 0,
      indexSegmentsRemoved: 0,
      bytesFreed: 0,
      indexesRemoved: 0,
      staleLocksRemoved: 0,
      lockedSkipped: 0,
      candidateChunks: 0,
      candidateIndexSegments: 0,
      candidateBytes: 0,
      candidateIndexes: 0,
    });
    expect(await keys(fixture.store, 'prune/')).toEqual([]); // nothing to mark, no mark
    await fixture.repository.applyRetention({ keepLast: 1 });
    expect((await fixture.repository.points()).map((p) => p.id)).toEqual([pb.id]);

    const before = await keys(fixture.store, 'chunks/');
    const marked = await fixture.repository.prune();
    expect(marked).toMatchObject({
      phase: 'marked',
      chunksRemoved: 0,
      candidateChunks: 2,
      candidateIndexSegments: 1,
      candidateIndexes: 0,
    });
    expect(Date.parse(marked.sweepAfter!) - Date.parse(marked.markedAt!)).toBe(20 * 60_000); // 2 × stale
    expect(await keys(fixture.store, 'chunks/')).toEqual(before);
    // Within the grace period a prune deletes nothing.
    expect(await fixture.repository.prune()).toMatchObject({
      phase: 'pending',
      chunksRemoved: 0,
      candidateChunks: 2,
    });
    await backdateMark(fixture.store);
    const result = await fixture.repository.prune();
    expect(result).toMatchObject({ phase: 'swept', candidateChunks: 0, indexesRemoved: 0 });
    expect(await keys(fixture.store, 'prune/')).toEqual([]);
    expect(result.chunksRemoved).toBe(2);
    // The removed point's index segment went with its chunks; the kept point's stays.
    expect(result.indexSegmentsRemoved).toBe(1);
    const segmentsAfter = await keys(fixture.store, 'segments/');
    expect(segmentsAfter).toHaveLength(1);
    expect(segmentsBefore).toContain(segmentsAfter[0]);
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
    const result = await pruneNow(fixture.repository, fixture.store);
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

    // No committed point references these chunks: they become candidates, and marking does not block the backup.
    expect(await other.prune()).toMatchObject({ phase: 'marked', candidateChunks: 5 });
    await backdateMark(fixture.store);
    // The sweep takes the exclusive lock: the live session makes it refuse.
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
    // With the session done, the sweep recomputes what is referenced (the point committed after the mark
    // included) and keeps every candidate.
    expect(await other.prune()).toMatchObject({ phase: 'swept', chunksRemoved: 0, candidateChunks: 0 });
    expect(await keys(fixture.store, 'chunks/')).toEqual(stored);
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
    expect(await fixture.repository.prune()).toMatchObject({ phase: 'marked', candidateChunks: 6 });
    await backdateMark(fixture.store);
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

  it('ignores and removes stale locks; a backup breaks a stale prune lock', async () => {
    await fixture.store.put(
      'locks/backup-0123456789abcdef.json',
      lockBlob('backup', '0123456789abcdef', 11 * 60_000),
    );
    await fixture.store.put('locks/prune.json', lockBlob('prune', 'aaaaaaaaaaaaaaaa', 11 * 60_000));
    const session = await fixture.repository.beginBackup(TEST_LINEAGE);
    expect(await fixture.store.has('locks/prune.json')).toBe(false); // broken by the backup
    await storeImage(session, fixture.workers, diskImage(1, 0, 11));
    await session.abort();
    const result = await pruneNow(fixture.repository, fixture.store);
    expect(result).toMatchObject({ phase: 'swept', chunksRemoved: 1 });
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
      // Live after two stale periods thanks to the heartbeat: a sweep with the same threshold refuses.
      expect(await quick.prune()).toMatchObject({ phase: 'marked', candidateChunks: 1 });
      await backdateMark(fixture.store);
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

  it('a backup that reuses candidate chunks during the grace period keeps them: the sweep recomputes', async () => {
    const image = diskImage(6, 0, 12);
    const aborted = await fixture.repository.beginBackup(TEST_LINEAGE);
    await storeImage(aborted, fixture.workers, image);
    await aborted.abort();
    const litter = await fixture.repository.beginBackup(TEST_LINEAGE);
    await storeImage(litter, fixture.workers, diskImage(3, 0, 13));
    await litter.abort();
    const all = await keys(fixture.store, 'chunks/');
    expect(await fixture.repository.prune()).toMatchObject({ phase: 'marked', candidateChunks: all.length });
    // During the grace period backups run: this one finds the candidates present, writes nothing, commits.
    const point = await backupImage(fixture.repository, fixture.workers, image);
    await backdateMark(fixture.store);
    const result = await fixture.repository.prune();
    expect(result).toMatchObject({ phase: 'swept', chunksRemoved: 2, candidateChunks: 0 });
    const out = join(fixture.folder, 'reused.img');
    await fixture.repository.restore(point.id, { path: out });
    expect(Buffer.compare(await readFile(out), image)).toBe(0);
    expect((await fixture.repository.verify()).ok).toBe(true);
  });

  it('records the next mark while it sweeps: chunks orphaned after the mark wait for the next sweep', async () => {
    const first = await fixture.repository.beginBackup(TEST_LINEAGE);
    await storeImage(first, fixture.workers, diskImage(3, 0, 14));
    await first.abort();
    expect(await fixture.repository.prune()).toMatchObject({ phase: 'marked', candidateChunks: 2 });
    const second = await fixture.repository.beginBackup(TEST_LINEAGE);
    await storeImage(second, fixture.workers, diskImage(4, 0, 15));
    await second.abort();
    await backdateMark(fixture.store);
    const swept = await fixture.repository.prune();
    expect(swept).toMatchObject({ phase: 'swept', chunksRemoved: 2, candidateChunks: 3 });
    expect(swept.markedAt).toBeDefined();
    expect(await fixture.repository.prune()).toMatchObject({ phase: 'pending', candidateChunks: 3 });
    await backdateMark(fixture.store);
    expect(await fixture.repository.prune()).toMatchObject({
      phase: 'swept',
      chunksRemoved: 3,
      candidateChunks: 0,
    });
    expect(await keys(fixture.store, 'chunks/')).toEqual([]);
    expect(await keys(fixture.store, 'prune/')).toEqual([]);
  });

  it('a damaged mark is discarded, never swept: the next prune marks anew', async () => {
    const session = await fixture.repository.beginBackup(TEST_LINEAGE);
    await storeImage(session, fixture.workers, diskImage(3, 0, 16));
    await session.abort();
    await fixture.repository.prune();
    const [segment] = (await keys(fixture.store, 'prune/')).filter((key) => key.includes('/chunks-'));
    const bytes = await fixture.store.get(segment!);
    bytes[5]! ^= 1;
    await fixture.store.put(segment!, bytes);
    await backdateMark(fixture.store);
    const error = await rejection(fixture.repository.prune());
    expect(RepositoryCorruptError.isInstance(error)).toBe(true);
    expect((error as Error).message).toMatch(/prune mark segment .* is damaged.*discarded/);
    expect(await keys(fixture.store, 'chunks/')).toHaveLength(2);
    expect(await keys(fixture.store, 'prune/')).toEqual([]);
    expect(await fixture.repository.prune()).toMatchObject({ phase: 'marked', candidateChunks: 2 });
    // Not JSON, or not a mark: replaced by a new one, nothing deleted.
    await fixture.store.delete('prune/mark.json');
    await fixture.store.put('prune/mark.json', new TextEncoder().encode('{"formatVersion":1}'));
    expect(await fixture.repository.prune()).toMatchObject({ phase: 'marked', candidateChunks: 2 });
    expect(await keys(fixture.store, 'chunks/')).toHaveLength(2);
  });

  it('a sweep deletes stray segments older than the grace period, and keeps younger ones', async () => {
    const session = await fixture.repository.beginBackup(TEST_LINEAGE);
    await storeImage(session, fixture.workers, diskImage(1, 0, 19));
    await session.abort();
    await fixture.repository.prune();
    const old = 'prune/0123456789abcdef/chunks-000000';
    const young = 'prune/fedcba9876543210/chunks-000000';
    await fixture.store.put(old, new Uint8Array(32));
    await fixture.store.put(young, new Uint8Array(32));
    const day = new Date(Date.now() - 24 * 60 * 60 * 1000);
    await utimes(join(fixture.folder, old), day, day);
    await backdateMark(fixture.store);
    expect(await fixture.repository.prune()).toMatchObject({ phase: 'swept', chunksRemoved: 1 });
    expect(await keys(fixture.store, 'prune/')).toEqual([young]);
  });

  it('the grace period must exceed the stale threshold', async () => {
    for (const graceMs of [0, 10 * 60_000, Number.NaN, Number.POSITIVE_INFINITY]) {
      const error = await rejection(fixture.repository.prune({ graceMs }));
      expect(InvalidArgumentError.isInstance(error)).toBe(true);
    }
    expect((await fixture.repository.prune({ graceMs: 10 * 60_000 + 1 })).phase).toBe('marked');
  });

  it('with wait, one call marks, waits out the grace period and sweeps', async () => {
    const session = await fixture.repository.beginBackup(TEST_LINEAGE);
    await storeImage(session, fixture.workers, diskImage(3, 0, 17));
    await session.abort();
    // A short threshold (the grace must exceed it), long enough that a busy machine cannot starve the heartbeat.
    const quick = await fixture.reopen({ lockStaleAfterMs: 1000 });
    try {
      const result = await quick.prune({ wait: true, graceMs: 1001 });
      expect(result).toMatchObject({ phase: 'swept', chunksRemoved: 2, candidateChunks: 0 });
    } finally {
      await quick.close();
    }
  });

  it('a sweep paused mid-way (by its monotonic clock) stops before its next deletion', async () => {
    const session = await fixture.repository.beginBackup(TEST_LINEAGE);
    await storeImage(session, fixture.workers, diskImage(24, 0, 18)); // 18 non-zero chunks
    await session.abort();
    expect(await fixture.repository.prune()).toMatchObject({ candidateChunks: 18 });
    await backdateMark(fixture.store);
    // The first chunk deletion waits for the test, which meanwhile moves the pruner's monotonic clock past half
    // the stale threshold, as a SIGSTOP or a stalled machine would. The deletions already in flight (at most
    // the deletion window, 8) finish; none starts after.
    const deleting = gate();
    const release = gate();
    let started = 0;
    const slowStore: Store = {
      ...fixture.store,
      async delete(key, options) {
        if (key.startsWith('chunks/')) {
          started++;
          deleting.resolve();
          await release.promise;
        }
        return fixture.store.delete(key, options);
      },
    };
    const pruner = await openRepository({ store: slowStore, workers: fixture.workers });
    const realNow = performance.now.bind(performance);
    let skew = 0;
    const monotonic = vi.spyOn(performance, 'now').mockImplementation(() => realNow() + skew);
    try {
      const pruning = rejection(pruner.prune());
      await deleting.promise;
      skew = 5 * 60_000 + 1;
      release.resolve();
      const error = await pruning;
      expect(RepositoryLockedError.isInstance(error)).toBe(true);
      expect((error as Error).message).toMatch(
        /prune lock .* no longer held: its heartbeat could not be written/,
      );
      expect(started).toBeGreaterThan(0);
      expect(started).toBeLessThanOrEqual(8);
      expect(await keys(fixture.store, 'chunks/')).toHaveLength(18 - started);
      expect(await fixture.store.has('prune/mark.json')).toBe(true); // the next sweep finishes the job
    } finally {
      monotonic.mockRestore();
      await pruner.close();
    }
    expect(await fixture.repository.prune()).toMatchObject({ phase: 'swept', chunksRemoved: 18 - started });
    expect(await keys(fixture.store, 'chunks/')).toEqual([]);
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
