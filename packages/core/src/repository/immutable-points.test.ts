import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  InvalidSettingsError,
  ObjectLockedError,
  RepositoryCorruptError,
  RepositoryVersionError,
} from '../errors/drkit-error.js';
import { ChunkWorkerPool } from '../workers/chunk-worker-pool.js';
import { chunkKey } from './chunk-blob.js';
import { createLocalFolderStore } from './local-folder-store.js';
import { indexKey, pointKey } from './point-metadata.js';
import { openRepository } from './repository.js';
import { CONFIG_KEY, encodeCheckedJson } from './repository-config.js';
import {
  diskImage,
  newPoint,
  randomish,
  rejection,
  storeImage,
  TEST_CHUNK_SIZE,
  TEST_LINEAGE,
} from './repository-fixture.js';
import type { Store, StoreRetention } from './store.js';
import type { RecoveryPoint, Repository } from './types.js';

const DAY = 24 * 3600 * 1000;
const HOUR = 3600 * 1000;
const T0 = Date.parse('2026-01-01T00:00:00.000Z');

/**
 * A local folder store that locks blobs the way S3 Object Lock does, by an injected clock: a locked blob cannot be
 * deleted before its date ({@link ObjectLockedError}), a lock is never shortened. It records every lock and counts
 * the lock extensions asked of it.
 */
function lockingStore(inner: Store, clock: () => number) {
  const locks = new Map<string, StoreRetention>();
  const counts = { retain: 0, deleteMany: 0 };
  const extend = (key: string, retention: StoreRetention) => {
    const present = locks.get(key);
    if (present === undefined || present.until.getTime() < retention.until.getTime())
      locks.set(key, retention);
  };
  const refuse = (key: string): ObjectLockedError | undefined => {
    const lock = locks.get(key);
    if (lock === undefined || lock.until.getTime() <= clock()) return undefined;
    return new ObjectLockedError(`${key} is locked until ${lock.until.toISOString()}`, key, lock.until);
  };
  const store: Store & { locks: Map<string, StoreRetention>; counts: typeof counts } = {
    kind: inner.kind,
    location: inner.location,
    locks,
    counts,
    get: (key, options) => inner.get(key, options),
    has: (key, options) => inner.has(key, options),
    list: (prefix, options) => inner.list(prefix, options),
    sync: (keys, options) => inner.sync!(keys, options),
    size: (key, options) => inner.size!(key, options),
    async put(key, data, options) {
      const written = await inner.put(key, data, options);
      if (written && options?.retain !== undefined) extend(key, options.retain);
      return written;
    },
    async delete(key, options) {
      const refused = refuse(key);
      if (refused !== undefined) throw refused;
      locks.delete(key);
      await inner.delete(key, options);
    },
    async deleteMany(keys, options) {
      counts.deleteMany++;
      const failures = [];
      for (const key of keys) {
        const refused = refuse(key);
        if (refused !== undefined) failures.push({ key, error: refused });
        else {
          locks.delete(key);
          await inner.delete(key, options);
        }
      }
      return failures;
    },
    immutability: {
      async check() {},
      async retain(key, retention) {
        counts.retain++;
        if (!(await inner.has(key))) return false;
        extend(key, retention);
        return true;
      },
      async retention(key) {
        return locks.get(key);
      },
    },
  };
  return store;
}

async function keys(store: Store, prefix: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of store.list(prefix)) found.push(entry.key);
  return found;
}

/** Every chunk key a point references (distinct). */
async function chunkKeysOf(repository: Repository, point: RecoveryPoint): Promise<string[]> {
  const found = new Set<string>();
  const index = await repository.openIndex(point);
  for await (const segment of index.segments()) {
    if (segment.zero) continue;
    for (let k = 0; k < segment.chunkCount; k++) {
      const id = segment.ids.subarray(k * 32, (k + 1) * 32);
      if (id.some((byte) => byte !== 0)) found.add(chunkKey(id));
    }
  }
  return [...found];
}

async function backdateMark(store: Store): Promise<void> {
  const mark = JSON.parse(new TextDecoder().decode(await store.get('prune/mark.json')));
  mark.markedAt = new Date(Date.now() - DAY).toISOString();
  await store.delete('prune/mark.json');
  await store.put('prune/mark.json', new TextEncoder().encode(JSON.stringify(mark)));
}

describe('immutable points (feature object-lock)', { timeout: 60_000 }, () => {
  let folder: string;
  let workers: ChunkWorkerPool;
  let now: number;
  let store: ReturnType<typeof lockingStore>;
  let repository: Repository;
  const image = diskImage(8, 0, 3); // 6 data chunks, 2 zero chunks, one segment

  beforeEach(async () => {
    folder = await mkdtemp(join(tmpdir(), 'drkit-immutable-'));
    workers = new ChunkWorkerPool(2);
    now = T0;
    store = lockingStore(createLocalFolderStore({ path: folder }), () => now);
    repository = await openRepository({
      store,
      create: true,
      workers,
      clock: () => now,
      immutability: { mode: 'governance', periodDays: 1 },
    });
  });

  afterEach(async () => {
    await repository.close();
    await workers.close();
    await rm(folder, { recursive: true, force: true });
  });

  /** A full backup of `bytes` (of `lineage`), no parent. */
  async function full(bytes: Uint8Array, diskId = TEST_LINEAGE.diskId) {
    const session = await repository.beginBackup({ ...TEST_LINEAGE, diskId });
    const { index } = await storeImage(session, workers, bytes);
    const point = await session.commit(newPoint(bytes.byteLength, { diskId }), index);
    return { point, retainCalls: (session as unknown as { retainCalls: number }).retainCalls };
  }

  /** An incremental on `parent` that changes chunk 0 to new random bytes. */
  async function incremental(parent: RecoveryPoint, seed: number) {
    const session = await repository.beginBackup(TEST_LINEAGE);
    const { index: base } = await session.adoptPoint(parent.id);
    const builder = session.createIndex({
      capacityBytes: parent.capacityBytes,
      chunkSize: TEST_CHUNK_SIZE,
      base,
    });
    const plain = randomish(TEST_CHUNK_SIZE, seed);
    const encoded = await workers.encode(plain, { idKey: session.chunkIdKey });
    if (encoded.kind !== 'data') throw new Error('expected a data chunk');
    builder.setId(0, encoded.hash);
    await session.putChunk({ ...encoded, plainLength: TEST_CHUNK_SIZE });
    const point = await session.commit(
      newPoint(parent.capacityBytes, {
        parentId: parent.id,
        validity: { kind: 'exact' },
        stats: {
          bytesRead: TEST_CHUNK_SIZE,
          bytesWritten: TEST_CHUNK_SIZE,
          bytesSkippedUnchanged: parent.capacityBytes - TEST_CHUNK_SIZE,
          bytesDeduplicated: 0,
          bytesZero: 0,
          seconds: 1,
        },
      }),
      builder,
    );
    return { point, retainCalls: (session as unknown as { retainCalls: number }).retainCalls };
  }

  it('records the policy as a feature; a store that cannot lock, or another policy, is refused', async () => {
    const config = JSON.parse(
      new TextDecoder().decode(await store.get(CONFIG_KEY)).split('\ndrkit-sha256:')[0]!,
    );
    expect(config.features).toEqual(['object-lock']);
    expect(config.immutability).toEqual({ mode: 'governance', periodMs: DAY, windowMs: DAY });
    expect(repository.immutability).toEqual({ mode: 'governance', periodMs: DAY, windowMs: DAY });

    // The local folder store cannot lock: refused at creation, and a locked repository opened through it too.
    const plainFolder = await mkdtemp(join(tmpdir(), 'drkit-immutable-plain-'));
    try {
      const refused = await rejection(
        openRepository({
          store: createLocalFolderStore({ path: plainFolder }),
          create: true,
          workers,
          immutability: { mode: 'compliance', periodDays: 30 },
        }),
      );
      expect(InvalidSettingsError.isInstance(refused)).toBe(true);
      expect(await keys(createLocalFolderStore({ path: plainFolder }), '')).toEqual([]); // nothing written
    } finally {
      await rm(plainFolder, { recursive: true, force: true });
    }
    const withoutLocks = await rejection(
      openRepository({ store: createLocalFolderStore({ path: folder }), workers }),
    );
    expect(InvalidSettingsError.isInstance(withoutLocks)).toBe(true);
    expect((withoutLocks as Error).message).toMatch(/cannot lock blobs/);
    const otherPolicy = await rejection(
      openRepository({ store, workers, immutability: { mode: 'compliance', periodDays: 1 } }),
    );
    expect(InvalidSettingsError.isInstance(otherPolicy)).toBe(true);
    const bad = await rejection(
      openRepository({ store, workers, immutability: { mode: 'governance', periodMs: 10 } }),
    );
    expect(InvalidSettingsError.isInstance(bad)).toBe(true);
  });

  it('refuses a configuration with the feature and no valid policy; an unknown feature is another version', async () => {
    const config = JSON.parse(
      new TextDecoder().decode(await store.get(CONFIG_KEY)).split('\ndrkit-sha256:')[0]!,
    );
    await store.delete(CONFIG_KEY);
    await store.put(
      CONFIG_KEY,
      encodeCheckedJson({ ...config, immutability: { mode: 'strict', periodMs: DAY } }),
    );
    const damaged = await rejection(openRepository({ store, workers }));
    expect(RepositoryCorruptError.isInstance(damaged)).toBe(true);
    expect(RepositoryVersionError.isInstance(damaged)).toBe(false);
    await store.delete(CONFIG_KEY);
    await store.put(
      CONFIG_KEY,
      encodeCheckedJson({ ...config, features: ['object-lock', 'object-lock-v2'] }),
    );
    expect(RepositoryVersionError.isInstance(await rejection(openRepository({ store, workers })))).toBe(true);
  });

  it('locks a point, its manifest, segments and chunks; a child reuses the floor; extension once a window', async () => {
    const first = await full(image);
    const p1 = first.point;
    expect(first.retainCalls).toBe(0); // everything was written, hence locked by its put
    expect(p1.lockedUntil).toBe(new Date(T0 + DAY).toISOString());
    expect(p1.chunksLockedUntil).toBe(new Date(T0 + 2 * DAY).toISOString());
    expect((await repository.point(p1.id)).chunksLockedUntil).toBe(p1.chunksLockedUntil); // as stored
    const p1Chunks = await chunkKeysOf(repository, p1);
    expect(p1Chunks).toHaveLength(6);
    for (const key of p1Chunks) expect(store.locks.get(key)?.until.getTime()).toBe(T0 + 2 * DAY);
    const [segment] = await keys(store, 'segments/');
    expect(store.locks.get(segment!)?.until.getTime()).toBe(T0 + 2 * DAY);
    expect(store.locks.get(pointKey(p1.id))).toEqual({ mode: 'governance', until: new Date(T0 + DAY) });
    expect(store.locks.get(indexKey(p1.id))?.until.getTime()).toBe(T0 + DAY);

    // An hour later: the inherited chunks are locked to the parent's floor, past the child's own date. No call.
    now = T0 + HOUR;
    const second = await incremental(p1, 101);
    expect(second.retainCalls).toBe(0);
    expect(second.point.lockedUntil).toBe(new Date(T0 + HOUR + DAY).toISOString());
    expect(second.point.chunksLockedUntil).toBe(new Date(T0 + 2 * DAY).toISOString());

    // Past the window, the floor would fall before the child's date: every referenced blob is locked anew, once.
    now = T0 + DAY + 2 * HOUR;
    const third = await incremental(second.point, 102);
    const p3Chunks = await chunkKeysOf(repository, third.point);
    expect(third.retainCalls).toBe(p3Chunks.length + 1); // its chunks and its one segment
    const extended = T0 + DAY + 2 * HOUR + 2 * DAY;
    expect(third.point.chunksLockedUntil).toBe(new Date(extended).toISOString());
    for (const key of p3Chunks) expect(store.locks.get(key)?.until.getTime()).toBe(extended);
    // The chunk only the first point had keeps its own lock: nothing of a point's data grows without it.
    const gone = p1Chunks.filter((key) => !p3Chunks.includes(key));
    expect(gone).toHaveLength(1);
    expect(store.locks.get(gone[0]!)?.until.getTime()).toBe(T0 + 2 * DAY);

    // The next backup, within the new window, costs no extension again.
    now = T0 + DAY + 3 * HOUR;
    const fourth = await incremental(third.point, 103);
    expect(fourth.retainCalls).toBe(0);
    expect(fourth.point.chunksLockedUntil).toBe(new Date(extended).toISOString());
  });

  it('a backup that outlasts its period and window locks what it writes until a date still ahead, then extends', async () => {
    const session = await repository.beginBackup(TEST_LINEAGE); // its lock date: T0 + 2 days
    now = T0 + 3 * DAY; // the backup is slow
    const { index } = await storeImage(session, workers, image);
    const point = await session.commit(newPoint(image.byteLength), index);
    const chunks = await chunkKeysOf(repository, point);
    expect((session as unknown as { retainCalls: number }).retainCalls).toBe(chunks.length + 1);
    expect(point.lockedUntil).toBe(new Date(T0 + 4 * DAY).toISOString());
    expect(point.chunksLockedUntil).toBe(new Date(T0 + 5 * DAY).toISOString());
    for (const key of chunks) expect(store.locks.get(key)?.until.getTime()).toBe(T0 + 5 * DAY);
  });

  it('locks chunks found by deduplication (of unknown origin) one call each', async () => {
    await full(image);
    now = T0 + HOUR;
    const other = await full(image, 'disk-2'); // the same bytes, another disk: every chunk and the segment exist
    expect(other.retainCalls).toBe(6 + 1);
    for (const key of await chunkKeysOf(repository, other.point)) {
      expect(store.locks.get(key)?.until.getTime()).toBe(T0 + HOUR + 2 * DAY);
    }
    expect(other.point.chunksLockedUntil).toBe(new Date(T0 + HOUR + 2 * DAY).toISOString());
  });

  it('an encrypted repository forwards the locks and bulk deletes through its sealed store', async () => {
    const sealedFolder = await mkdtemp(join(tmpdir(), 'drkit-immutable-sealed-'));
    const sealedStore = lockingStore(createLocalFolderStore({ path: sealedFolder }), () => now);
    const sealed = await openRepository({
      store: sealedStore,
      create: true,
      workers,
      clock: () => now,
      encryption: { passphrase: 'correct horse battery staple' },
      immutability: { mode: 'compliance', periodMs: HOUR, windowMs: HOUR },
    });
    try {
      const session = await sealed.beginBackup(TEST_LINEAGE);
      const { index } = await storeImage(session, workers, image);
      const point = await session.commit(newPoint(image.byteLength), index);
      expect(point.chunksLockedUntil).toBe(new Date(T0 + 2 * HOUR).toISOString());
      const chunks = await keys(sealedStore, 'chunks/');
      expect(chunks).toHaveLength(6);
      for (const key of chunks) {
        expect(sealedStore.locks.get(key)).toEqual({ mode: 'compliance', until: new Date(T0 + 2 * HOUR) });
      }
      expect(sealedStore.locks.get(pointKey(point.id))?.until.getTime()).toBe(T0 + HOUR);
    } finally {
      await sealed.close();
      await rm(sealedFolder, { recursive: true, force: true });
    }
  });

  it('retention keeps a locked point and says until when; prune skips locked candidates and reports them', async () => {
    const { point: p1 } = await full(image);
    now = T0 + HOUR;
    const { point: p2 } = await incremental(p1, 201);
    const p2Chunks = await chunkKeysOf(repository, p2);
    const onlyP1 = (await chunkKeysOf(repository, p1)).filter((key) => !p2Chunks.includes(key));
    expect(onlyP1).toHaveLength(1);

    const early = await repository.applyRetention({ keepLast: 1 });
    expect(early.removed).toEqual([]);
    expect(early.locked.map((entry) => [entry.point.id, entry.lockedUntil])).toEqual([
      [p1.id, new Date(T0 + DAY).toISOString()],
    ]);
    expect((await repository.points()).map((p) => p.id)).toEqual([p1.id, p2.id]);
    const refused = await rejection(store.delete(pointKey(p1.id)));
    expect(ObjectLockedError.isInstance(refused)).toBe(true);
    expect((refused as ObjectLockedError).retainUntil?.getTime()).toBe(T0 + DAY);
    expect((refused as ObjectLockedError).code).toBe('OBJECT_LOCKED');

    now = T0 + DAY + 1;
    const due = await repository.applyRetention({ keepLast: 1 });
    expect(due.removed.map((p) => p.id)).toEqual([p1.id]);
    expect(due.locked).toEqual([]);

    // The chunk only p1 had is unreferenced now but locked until T0 + 2 days: the sweep leaves it and says so.
    // Its chunk and its segment are candidates.
    const marked = await repository.prune();
    expect(marked).toMatchObject({ phase: 'marked', candidateChunks: 1, candidateIndexSegments: 1 });
    await backdateMark(store);
    const swept = await repository.prune();
    expect(swept).toMatchObject({
      phase: 'swept',
      chunksRemoved: 0,
      indexSegmentsRemoved: 0,
      lockedSkipped: 2,
      lockedSkippedUntil: new Date(T0 + 2 * DAY).toISOString(),
    });
    expect(store.counts.deleteMany).toBeGreaterThan(0); // the sweep deleted in bulk
    expect(await keys(store, 'chunks/')).toContain(onlyP1[0]);
    expect(await keys(store, 'chunks/')).toHaveLength(7);

    // Every byte of the remaining point is still there.
    const scratch = await mkdtemp(join(tmpdir(), 'drkit-immutable-restore-'));
    try {
      const target = join(scratch, 'restored.img');
      await repository.restore(p2.id, { path: target });
      const expected = Buffer.from(image);
      Buffer.from(randomish(TEST_CHUNK_SIZE, 201)).copy(expected, 0);
      expect(Buffer.from(await readFile(target)).equals(expected)).toBe(true);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }

    // After its date the next mark and sweep delete it.
    now = T0 + 2 * DAY + 1;
    expect(await repository.prune()).toMatchObject({ phase: 'marked', candidateChunks: 1 });
    await backdateMark(store);
    expect(await repository.prune()).toMatchObject({
      phase: 'swept',
      chunksRemoved: 1,
      indexSegmentsRemoved: 1,
      lockedSkipped: 0,
    });
    expect(await keys(store, 'chunks/')).toHaveLength(6);
    expect(await keys(store, 'chunks/')).not.toContain(onlyP1[0]);
  });
});
