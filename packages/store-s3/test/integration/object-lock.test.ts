// Immutable recovery points on S3 Object Lock, against the project's Ceph RGW 16 (which enforces Object Lock: a
// locked version answers DeleteObject with 403 "forbidden by object lock" until its date). Retention periods are
// seconds long, the shortest RGW accepts being any date in the future; where a test must see a lock expire it waits
// for the store's own date (the lock is judged by RGW's clock), never asserting how long anything took.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectRetentionCommand } from '@aws-sdk/client-s3';
import {
  createBackupEngine,
  InvalidSettingsError,
  ObjectLockedError,
  openRepository,
  type PruneResult,
  type RecoveryPoint,
  type Repository,
  type Store,
  sleep,
} from '@drkit/core';
import { chunkKey } from '@drkit/core/internal';
import { createLocalDiskPlatform } from '@drkit/provider-agent';
import { mutateDiskImage, writeDiskImage } from '@drkit/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rejection } from '../rejection.js';
import {
  allVersions,
  freshBucket,
  rawClient,
  removeBucket,
  removeLockedBucket,
  retainUntil,
  rgwStore,
} from './rgw-fixture.js';

async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Distinct chunk keys a point references. */
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

/**
 * Both phases of a prune at once: marks, backdates the mark past the grace period (the locks' default stale
 * threshold is 10 minutes: no heartbeat can lapse on a busy machine), sweeps.
 */
async function pruneNow(repository: Repository, store: Store): Promise<PruneResult> {
  const marked = await repository.prune();
  if (marked.phase !== 'marked' || marked.candidateChunks + marked.candidateIndexSegments === 0)
    return marked;
  const mark = JSON.parse(new TextDecoder().decode(await store.get('prune/mark.json')));
  mark.markedAt = new Date(Date.now() - 24 * 3600 * 1000).toISOString();
  await store.delete('prune/mark.json');
  await store.put('prune/mark.json', new TextEncoder().encode(JSON.stringify(mark)));
  return repository.prune();
}

/** Waits until the wall clock (RGW's, on this machine) is past `date` by `marginMs`. */
async function waitPast(date: string, marginMs = 1000): Promise<void> {
  const ms = Date.parse(date) + marginMs - Date.now();
  if (ms > 0) await sleep(ms);
}

describe('immutable points on RGW Object Lock', () => {
  const client = rawClient();
  let work: string;
  const buckets: { name: string; locked: boolean }[] = [];
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'drkit-s3-lock-'));
  });
  afterAll(async () => {
    for (const bucket of buckets) {
      if (bucket.locked) await removeLockedBucket(client, bucket.name);
      else await removeBucket(bucket.name, client);
    }
    await rm(work, { recursive: true, force: true });
  });
  const bucket = async (locked: boolean) => {
    const name = await freshBucket(client, locked);
    buckets.push({ name, locked });
    return name;
  };

  async function backup(repository: Repository, image: string): Promise<RecoveryPoint> {
    const platform = createLocalDiskPlatform({
      id: 'local',
      hostName: 'h',
      disks: [{ path: image, name: 'd' }],
    });
    const engine = createBackupEngine({ repository, platforms: [platform] });
    try {
      const job = await engine.backup();
      const task = job.tasks[0]!;
      if (task.status === 'failed') throw task.error;
      if (task.status !== 'succeeded') throw new Error(`the backup task was ${task.status}`);
      return await repository.point(task.result.pointId);
    } finally {
      await engine.close();
    }
  }

  it('refuses immutability on a bucket without Object Lock, before writing anything', async () => {
    const name = await bucket(false);
    const store = rgwStore(name);
    try {
      const error = await rejection(() =>
        openRepository({ store, create: true, immutability: { mode: 'governance', periodMs: 60_000 } }),
      );
      expect(InvalidSettingsError.isInstance(error)).toBe(true);
      expect((error as Error).message).toMatch(/does not have S3 Object Lock enabled/);
      const written: string[] = [];
      for await (const entry of store.list('')) written.push(entry.key);
      expect(written).toEqual([]);
    } finally {
      store.destroy();
    }
  });

  it('create-only writes on a versioned bucket: one of racing writers wins, a present key is kept', async () => {
    const name = await bucket(true);
    const store = rgwStore(name);
    try {
      const bytes = (i: number) => new TextEncoder().encode(`writer ${i}`);
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, i) => store.put('locks/prune.json', bytes(i), { ifAbsent: true })),
      );
      expect(results.filter(Boolean)).toHaveLength(1);
      const winner = results.indexOf(true);
      expect(new TextDecoder().decode(await store.get('locks/prune.json'))).toBe(`writer ${winner}`);
      expect(await store.put('locks/prune.json', bytes(99), { ifAbsent: true })).toBe(false);
      expect(new TextDecoder().decode(await store.get('locks/prune.json'))).toBe(`writer ${winner}`);
      // Deleting removes every version: no delete marker, nothing left to resurrect.
      await store.put('locks/prune.json', bytes(100)); // a plain overwrite: a second version
      await store.delete('locks/prune.json');
      expect(await store.has('locks/prune.json')).toBe(false);
      expect(await allVersions(client, name)).toEqual([]);
    } finally {
      store.destroy();
    }
  });

  it('deletes in DeleteObjects batches of 1 000, all versions on a lock-enabled bucket', async () => {
    for (const locked of [false, true]) {
      const name = await bucket(locked);
      const store = rgwStore(name);
      try {
        const keys = Array.from({ length: 1001 }, (_, i) => `chunks/${String(i).padStart(6, '0')}`);
        for (let i = 0; i < keys.length; i += 50) {
          await Promise.all(keys.slice(i, i + 50).map((key) => store.put(key, new Uint8Array([1, 2, 3]))));
        }
        const before = store.requests.DeleteObjects ?? 0;
        const listedBefore = store.requests.ListObjectVersions ?? 0;
        expect(await store.deleteMany(keys)).toEqual([]);
        expect((store.requests.DeleteObjects ?? 0) - before).toBe(2);
        // The versions of each batch of neighbouring keys are listed as one range, not a request per key.
        const listed = (store.requests.ListObjectVersions ?? 0) - listedBefore;
        if (locked) expect(listed).toBeLessThanOrEqual(4);
        else expect(listed).toBe(0);
        expect(await allVersions(client, name)).toEqual([]);
      } finally {
        store.destroy();
      }
    }
  });

  it('a locked point survives a prune and a delete attempt until its date; then both succeed', async () => {
    const name = await bucket(true);
    const store = rgwStore(name);
    const image = join(work, 'a.img');
    await writeDiskImage(image, { size: 6 * 1024 * 1024, seed: 21 });
    const sums = [await sha256(image)];
    const repository = await openRepository({
      store,
      create: true,
      // A period long enough for the second backup and the checks before p1's date on a busy machine (RGW judges
      // locks by its own clock: the test cannot fake it), a window long enough for the prune before the chunks' date.
      immutability: { mode: 'governance', periodMs: 15_000, windowMs: 20_000 },
    });
    try {
      const p1 = await backup(repository, image);
      const lockedUntil = Date.parse(p1.lockedUntil!);
      const floor = Date.parse(p1.chunksLockedUntil!);
      expect(lockedUntil - Date.parse(p1.createdAt)).toBeGreaterThanOrEqual(15_000);
      expect(floor).toBeGreaterThan(lockedUntil); // the session's start + period + window
      expect(floor - lockedUntil).toBeLessThanOrEqual(20_000);
      const p1Chunks = await chunkKeysOf(repository, p1);
      for (const key of p1Chunks) expect(await retainUntil(client, name, key)).toBe(floor);
      expect(await retainUntil(client, name, `points/${p1.id}.json`)).toBe(lockedUntil);
      expect(await retainUntil(client, name, `indexes/${p1.id}`)).toBe(lockedUntil);
      await mutateDiskImage(image, { fraction: 0.3, seed: 5 });
      sums.push(await sha256(image));
      const p2 = await backup(repository, image);
      // Within the window: the reused chunks are locked long enough already, so no extension.
      expect(p2.chunksLockedUntil).toBe(p1.chunksLockedUntil);
      const p2Chunks = new Set(await chunkKeysOf(repository, p2));
      const onlyP1 = p1Chunks.filter((key) => !p2Chunks.has(key));
      expect(onlyP1.length).toBeGreaterThan(0);

      // Before its date: retention keeps p1 and says until when; a delete is refused with the date.
      const early = await repository.applyRetention({ keepLast: 1 });
      expect(early.removed).toEqual([]);
      expect(early.locked.map((entry) => entry.point.id)).toEqual([p1.id]);
      const refused = await rejection(() => store.delete(`points/${p1.id}.json`));
      expect(ObjectLockedError.isInstance(refused)).toBe(true);
      expect((refused as ObjectLockedError).key).toBe(`points/${p1.id}.json`);
      expect((refused as ObjectLockedError).retainUntil?.getTime()).toBe(lockedUntil);
      const restored = join(work, 'p1.img');
      await repository.restore(p1.id, { path: restored });
      expect(await sha256(restored)).toBe(sums[0]);

      // After p1's date, retention removes it; its own chunks are still locked (the window), so prune skips them.
      await waitPast(p1.lockedUntil!);
      const due = await repository.applyRetention({ keepLast: 1 });
      expect(due.removed.map((p) => p.id)).toEqual([p1.id]);
      const swept = await pruneNow(repository, store);
      expect(swept.phase).toBe('swept');
      expect(swept.chunksRemoved).toBe(0);
      expect(swept.lockedSkipped).toBeGreaterThanOrEqual(onlyP1.length);
      // The earliest lock among the skipped blobs: the date p1 recorded for its chunks, no clock involved.
      expect(Date.parse(swept.lockedSkippedUntil!)).toBe(Date.parse(p1.chunksLockedUntil!));
      for (const key of onlyP1) expect(await store.has(key)).toBe(true);

      // After the chunks' date, the next prune deletes them, and the kept point restores byte for byte.
      await waitPast(p1.chunksLockedUntil!);
      const later = await pruneNow(repository, store);
      expect(later.chunksRemoved).toBe(onlyP1.length);
      expect(later.lockedSkipped).toBe(0);
      for (const key of onlyP1) expect(await store.has(key)).toBe(false);
      const versions = await allVersions(client, name);
      for (const key of onlyP1) expect(versions.filter((v) => v.Key === `repo/${key}`)).toEqual([]);
      const last = join(work, 'p2.img');
      await repository.restore(p2.id, { path: last });
      expect(await sha256(last)).toBe(sums[1]);
    } finally {
      await repository.close();
      store.destroy();
    }
  });

  it('extends the lock of chunks a later backup reuses when the parent floor falls short', async () => {
    const name = await bucket(true);
    const store = rgwStore(name);
    const image = join(work, 'b.img');
    await writeDiskImage(image, { size: 16 * 1024 * 1024, seed: 33 });
    const repository = await openRepository({
      store,
      create: true,
      immutability: { mode: 'compliance', periodMs: 2000, windowMs: 2000 },
    });
    try {
      const p1 = await backup(repository, image);
      const p1Chunks = await chunkKeysOf(repository, p1);
      const floor1 = Date.parse(p1.chunksLockedUntil!);
      for (const key of p1Chunks) expect(await retainUntil(client, name, key)).toBe(floor1);
      // Start the next backup past floor1 − period: its own lock date would outlive what the parent vouches for.
      await waitPast(new Date(floor1 - 2000).toISOString(), 500);
      await mutateDiskImage(image, { fraction: 0.02, seed: 8 });
      const p2 = await backup(repository, image);
      expect(p2.parentId).toBe(p1.id);
      const floor2 = Date.parse(p2.chunksLockedUntil!);
      expect(floor2).toBeGreaterThan(floor1);
      expect(floor2).toBeGreaterThanOrEqual(Date.parse(p2.lockedUntil!));
      const reused = (await chunkKeysOf(repository, p2)).filter((key) => p1Chunks.includes(key));
      expect(reused.length).toBeGreaterThan(0);
      for (const key of reused) expect(await retainUntil(client, name, key)).toBe(floor2);
    } finally {
      await repository.close();
      store.destroy();
      // Compliance: nobody can remove the bucket's versions before their date.
      const versions = await allVersions(client, name);
      let latest = 0;
      for (const v of versions) {
        const reply = await client
          .send(new GetObjectRetentionCommand({ Bucket: name, Key: v.Key, VersionId: v.VersionId }))
          .catch(() => undefined);
        latest = Math.max(latest, reply?.Retention?.RetainUntilDate?.getTime() ?? 0);
      }
      await waitPast(new Date(latest).toISOString());
    }
  });
});
