import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  ChecksumMismatchError,
  InvalidArgumentError,
  NotFoundError,
  RepositoryCorruptError,
  RepositoryVersionError,
  UnreadablePointsError,
} from '../errors/drkit-error.js';
import { chunkKey } from './chunk-blob.js';
import { chunkIdFromHash } from './chunk-id.js';
import { createLocalFolderStore } from './local-folder-store.js';
import { openRepository } from './repository.js';
import { encodeCheckedJson } from './repository-config.js';
import {
  backupImage,
  copyIndex,
  createRepositoryFixture,
  diskImage,
  newPoint,
  type RepositoryFixture,
  randomish,
  rejection,
  storeImage,
  TEST_CHUNK_SIZE,
  TEST_LINEAGE,
} from './repository-fixture.js';
import type { Store } from './store.js';
import type { LedgerEntry, RecoveryPoint } from './types.js';

/** Loop devices need root and a working `losetup`; elsewhere the block-device test is skipped. */
function canUseLoopDevices(): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    execFileSync('losetup', ['-f'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const sha = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

/** Flips one byte inside a stored chunk's payload (past the 12-byte header). */
async function damageChunk(folder: string, id: string, at = 100): Promise<void> {
  const path = join(folder, ...chunkKey(id).split('/'));
  const bytes = await readFile(path);
  bytes[12 + at] = bytes[12 + at]! ^ 0xff;
  await writeFile(path, bytes);
}

/** The id of the first non-zero chunk at or after `position`. */
function chunkHex(image: Uint8Array, position: number): string {
  return sha(image.subarray(position * TEST_CHUNK_SIZE, (position + 1) * TEST_CHUNK_SIZE));
}

describe('openRepository', () => {
  let folder: string;
  beforeEach(async () => {
    folder = await mkdtemp(join(tmpdir(), 'drkit-open-'));
  });
  afterEach(() => rm(folder, { recursive: true, force: true }));

  it('says to initialise a folder that holds no repository', async () => {
    const error = await rejection(openRepository({ store: createLocalFolderStore({ path: folder }) }));
    expect(NotFoundError.isInstance(error)).toBe(true);
    expect((error as Error).message).toMatch(/initialise/);
  });

  it('creates a config once; opening again, even with create, keeps it', async () => {
    const store = createLocalFolderStore({ path: folder });
    const first = await openRepository({ store, create: true });
    const second = await openRepository({ store, create: true });
    const third = await openRepository({ store });
    expect(first.id).toMatch(/^[0-9a-f]{32}$/);
    expect(second.id).toBe(first.id);
    expect(third.id).toBe(first.id);
    const text = await readFile(join(folder, 'config'), 'utf8');
    expect(text).toMatch(/\ndrkit-sha256:[0-9a-f]{64}\n$/);
    const config = JSON.parse(text.slice(0, text.lastIndexOf('drkit-sha256:')));
    expect(config).toMatchObject({ format: 'drkit-repository', version: 2, id: first.id, features: [] });
    await Promise.all([first.close(), second.close(), third.close()]);
  });

  it('refuses a version 1 repository, saying what to do, an unknown version, a flipped bit and garbage', async () => {
    const open = () => rejection(openRepository({ store: createLocalFolderStore({ path: folder }) }));
    const v1 = {
      format: 'drkit-repository',
      version: 1,
      id: '0'.repeat(32),
      createdAt: new Date().toISOString(),
    };
    await writeFile(join(folder, 'config'), `${JSON.stringify(v1, null, 2)}\n`);
    const old = await open();
    expect(RepositoryVersionError.isInstance(old)).toBe(true);
    expect((old as RepositoryVersionError).foundVersion).toBe(1);
    expect((old as Error).message).toMatch(/version 1.*new repository/);
    await writeFile(join(folder, 'config'), encodeCheckedJson({ ...v1, version: 99, features: [] }));
    const error = await open();
    expect(RepositoryVersionError.isInstance(error)).toBe(true);
    expect((error as Error).message).toMatch(/version 99/);
    await writeFile(join(folder, 'config'), encodeCheckedJson({ ...v1, version: 2, features: ['sealed'] }));
    expect(((await open()) as Error).message).toMatch(/sealed/);
    // One flipped bit anywhere in the configuration: a typed error naming the blob.
    const good = encodeCheckedJson({ ...v1, version: 2, features: [] });
    for (const at of [5, good.byteLength - 10]) {
      const bad = good.slice();
      bad[at]! ^= 0x04;
      await writeFile(join(folder, 'config'), bad);
      const flipped = await open();
      expect(RepositoryCorruptError.isInstance(flipped)).toBe(true);
      expect(RepositoryVersionError.isInstance(flipped)).toBe(false);
      expect((flipped as Error).message).toContain('"config"');
    }
    await writeFile(join(folder, 'config'), 'not json');
    expect(
      RepositoryCorruptError.isInstance(
        await rejection(openRepository({ store: createLocalFolderStore({ path: folder }) })),
      ),
    ).toBe(true);
  });
});

// The tests below back up and restore a few MiB through the chunk worker pool into a folder store that fsyncs
// every blob: well under a second each alone, but several seconds (3.8 s seen) with 2 busy cores and a busy disk.
// Hence 60 s rather than vitest's 5 s; the work itself is already small (images of 1 to 12 chunks of 256 KiB).
const REPOSITORY_TEST_TIMEOUT_MS = 60_000;

describe('repository', { timeout: REPOSITORY_TEST_TIMEOUT_MS }, () => {
  let fixture: RepositoryFixture;
  beforeEach(async () => {
    fixture = await createRepositoryFixture();
  });
  afterEach(() => fixture.cleanup());

  it('commits a point: index first, metadata last, with a sortable id and digest', async () => {
    const image = diskImage(9, 1000, 1);
    const point = await backupImage(fixture.repository, fixture.workers, image, {
      createdAt: '2024-06-01T10:20:30.456Z',
    });
    expect(point.id).toMatch(/^20240601T102030456-[0-9a-f]{8}$/);
    expect(point.chunkCount).toBe(10);
    expect(point.capacityBytes).toBe(image.byteLength);
    const indexBlob = await readFile(join(fixture.folder, 'indexes', point.id));
    expect(point.indexDigest).toBe(sha(indexBlob));
    const metadataText = await readFile(join(fixture.folder, 'points', `${point.id}.json`), 'utf8');
    const metadata = JSON.parse(metadataText.slice(0, metadataText.lastIndexOf('drkit-sha256:')));
    expect(metadata).toMatchObject({ formatVersion: 2, id: point.id, diskId: 'disk-1', chunkCount: 10 });
    expect(await fixture.repository.point(point.id)).toEqual(point);
    // No lock left behind.
    const locks: string[] = [];
    for await (const entry of fixture.store.list('locks/')) locks.push(entry.key);
    expect(locks).toEqual([]);
  });

  it('lists points oldest first, filtered by lineage, also from another process', async () => {
    const image = diskImage(2, 0, 2);
    const b = await backupImage(fixture.repository, fixture.workers, image, {
      createdAt: '2024-01-02T00:00:00.000Z',
    });
    const a = await backupImage(fixture.repository, fixture.workers, image, {
      createdAt: '2024-01-01T00:00:00.000Z',
    });
    const other = await backupImage(fixture.repository, fixture.workers, image, {
      diskId: 'disk-2',
      createdAt: '2024-01-03T00:00:00.000Z',
    });
    const reader = await fixture.reopen();
    expect((await reader.points()).map((p) => p.id)).toEqual([a.id, b.id, other.id]);
    expect((await reader.points({ diskId: 'disk-1' })).map((p) => p.id)).toEqual([a.id, b.id]);
    expect((await reader.points({ hostId: 'host-1', diskId: 'disk-2' })).map((p) => p.id)).toEqual([
      other.id,
    ]);
    expect(await reader.points({ hostId: 'nobody' })).toEqual([]);
    expect(NotFoundError.isInstance(await rejection(reader.point('20240101T000000000-00000000')))).toBe(true);
    expect(InvalidArgumentError.isInstance(await rejection(reader.point('../config')))).toBe(true);
  });

  it('refuses to commit an index that names a chunk not in the store, and writes nothing', async () => {
    const image = diskImage(3, 0, 3);
    const session = await fixture.repository.beginBackup(TEST_LINEAGE);
    const { index } = await storeImage(session, fixture.workers, image);
    index.setId(1, randomish(32, 42)); // never stored
    const error = await rejection(session.commit(newPoint(image.byteLength), index));
    expect(RepositoryCorruptError.isInstance(error)).toBe(true);
    expect((error as Error).message).toContain(chunkIdFromHash(randomish(32, 42)));
    expect(await fixture.repository.points()).toEqual([]);
    const indexes: string[] = [];
    for await (const entry of fixture.store.list('indexes/')) indexes.push(entry.key);
    expect(indexes).toEqual([]);
    // The session stays usable: commit an index without the missing chunk.
    const { index: fixed } = await storeImage(session, fixture.workers, image);
    const point = await session.commit(newPoint(image.byteLength), fixed);
    expect((await fixture.repository.points()).map((p) => p.id)).toEqual([point.id]);
  });

  it('checks chunks it did not see itself (a fresh session referencing an earlier point by id)', async () => {
    const image = diskImage(4, 0, 4);
    const first = await backupImage(fixture.repository, fixture.workers, image);
    const parentIndex = await fixture.repository.openIndex(first);
    const session = await fixture.repository.beginBackup(TEST_LINEAGE);
    const layout = { capacityBytes: image.byteLength, chunkSize: TEST_CHUNK_SIZE };
    const index = session.createIndex(layout);
    await copyIndex(parentIndex, index);
    const point = await session.commit(newPoint(image.byteLength, { parentId: first.id }), index);
    expect(point.parentId).toBe(first.id);
    await rm(join(fixture.folder, ...chunkKey(chunkHex(image, 0)).split('/')));
    const again = await fixture.repository.beginBackup(TEST_LINEAGE);
    const copy = again.createIndex(layout);
    await copyIndex(parentIndex, copy);
    expect(
      RepositoryCorruptError.isInstance(await rejection(again.commit(newPoint(image.byteLength), copy))),
    ).toBe(true);
    await again.abort();
  });

  it('refuses a point of another lineage or a mismatched index', async () => {
    const session = await fixture.repository.beginBackup(TEST_LINEAGE);
    const index = session.createIndex({ capacityBytes: 2 * TEST_CHUNK_SIZE, chunkSize: TEST_CHUNK_SIZE });
    expect(
      InvalidArgumentError.isInstance(
        (() => {
          try {
            session.createIndex({ capacityBytes: 2 ** 48 + 1, chunkSize: TEST_CHUNK_SIZE });
          } catch (error) {
            return error;
          }
        })(),
      ),
    ).toBe(true);
    const wrongDisk = await rejection(
      session.commit(newPoint(2 * TEST_CHUNK_SIZE, { diskId: 'other' }), index),
    );
    expect(InvalidArgumentError.isInstance(wrongDisk)).toBe(true);
    const wrongCount = await rejection(session.commit(newPoint(3 * TEST_CHUNK_SIZE), index));
    expect(InvalidArgumentError.isInstance(wrongCount)).toBe(true);
    const badChunkSize = await rejection(session.commit(newPoint(2 * 4096, { chunkSize: 4096 }), index));
    expect(InvalidArgumentError.isInstance(badChunkSize)).toBe(true);
    await session.abort();
  });

  it('restores byte for byte to a sparse file', async () => {
    const image = diskImage(12, 777, 5);
    const point = await backupImage(fixture.repository, fixture.workers, image);
    const target = join(fixture.folder, 'restored.img');
    await writeFile(target, Buffer.alloc(20 * TEST_CHUNK_SIZE, 0xee)); // longer, non-zero: must be truncated
    const progress: number[] = [];
    const { bytes } = await fixture.repository.restore(
      point.id,
      { path: target },
      {
        onProgress: (p) => progress.push(p.bytesDone),
      },
    );
    expect(bytes).toBe(image.byteLength);
    const restored = await readFile(target);
    expect(restored.byteLength).toBe(image.byteLength);
    expect(Buffer.compare(restored, image)).toBe(0);
    expect(progress.at(-1)).toBe(image.byteLength);
    expect(progress).toHaveLength(13);
    // 3 of the 12 full chunks are zeros and must be holes.
    const info = await stat(target);
    const zeroBytes = 3 * TEST_CHUNK_SIZE;
    expect(info.blocks * 512).toBeLessThanOrEqual(image.byteLength - zeroBytes + 64 * 1024);
  });

  it('restores to a stream with zeros written out and backpressure respected', async () => {
    const image = diskImage(9, 5, 6);
    const point = await backupImage(fixture.repository, fixture.workers, image);
    const parts: Buffer[] = [];
    let maxBuffered = 0;
    const slow = new Writable({
      highWaterMark: TEST_CHUNK_SIZE,
      write(chunk: Buffer, _encoding, callback) {
        parts.push(Buffer.from(chunk));
        maxBuffered = Math.max(maxBuffered, slow.writableLength);
        setTimeout(callback, 2);
      },
    });
    await fixture.repository.restore(point.id, { stream: slow });
    expect(Buffer.compare(Buffer.concat(parts), image)).toBe(0);
    // Never more than one chunk queued beyond the high-water mark.
    expect(maxBuffered).toBeLessThanOrEqual(2 * TEST_CHUNK_SIZE);
  });

  it('restores to a device path without truncating it', async () => {
    const image = diskImage(3, 0, 7);
    const point = await backupImage(fixture.repository, fixture.workers, image);
    // /dev/null is a character device: no truncate, zero chunks written out, and it accepts everything.
    const { bytes } = await fixture.repository.restore(point.id, { path: '/dev/null' });
    expect(bytes).toBe(image.byteLength);
  });

  it.skipIf(!canUseLoopDevices())('restores to a block device, writing zeros over old data', async () => {
    const image = diskImage(6, 300, 16);
    const point = await backupImage(fixture.repository, fixture.workers, image);
    const backing = join(fixture.folder, 'backing.img');
    const size = 8 * TEST_CHUNK_SIZE;
    await writeFile(backing, Buffer.alloc(size, 0xee));
    const device = execFileSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' }).trim();
    try {
      expect((await stat(device)).isBlockDevice()).toBe(true);
      await fixture.repository.restore(point.id, { path: device });
      const content = await readFile(backing);
      expect(content.byteLength).toBe(size); // not truncated
      expect(Buffer.compare(content.subarray(0, image.byteLength), image)).toBe(0);
      expect(content.subarray(image.byteLength).every((b) => b === 0xee)).toBe(true);
    } finally {
      execFileSync('losetup', ['-d', device]);
    }
  });

  it('stops a restore when the signal aborts, with its reason', async () => {
    const image = diskImage(8, 0, 8);
    const point = await backupImage(fixture.repository, fixture.workers, image);
    const controller = new AbortController();
    const reason = new Error('stop now');
    const error = await rejection(
      fixture.repository.restore(
        point.id,
        { stream: new PassThrough({ highWaterMark: 1 << 30 }) },
        {
          signal: controller.signal,
          onProgress: (p) => {
            if (p.bytesDone >= 2 * TEST_CHUNK_SIZE) controller.abort(reason);
          },
        },
      ),
    );
    expect(error).toBe(reason);
  });

  it('reads one chunk, hash-checked', async () => {
    const image = diskImage(1, 0, 9);
    await backupImage(fixture.repository, fixture.workers, image);
    const hash = Buffer.from(chunkHex(image, 0), 'hex');
    const plain = await fixture.repository.readChunk(hash, TEST_CHUNK_SIZE);
    expect(Buffer.compare(plain, image)).toBe(0);
    expect(
      NotFoundError.isInstance(await rejection(fixture.repository.readChunk(randomish(32, 1), 10))),
    ).toBe(true);
    await damageChunk(fixture.folder, chunkHex(image, 0));
    expect(
      ChecksumMismatchError.isInstance(await rejection(fixture.repository.readChunk(hash, TEST_CHUNK_SIZE))),
    ).toBe(true);
  });

  it('verify finds a chunk damaged on purpose, marks it, restore refuses it, a rewrite repairs it', async () => {
    const image = diskImage(8, 0, 10);
    const p1 = await backupImage(fixture.repository, fixture.workers, image, {
      createdAt: '2024-01-01T00:00:00.000Z',
    });
    const p2 = await backupImage(fixture.repository, fixture.workers, image, {
      createdAt: '2024-01-02T00:00:00.000Z',
    });
    const healthy = await fixture.repository.verify();
    expect(healthy.ok).toBe(true);
    expect(healthy.pointsChecked).toBe(2);
    expect(healthy.chunksChecked).toBe(6); // 8 chunks, 2 of them zeros, each distinct chunk once
    expect(healthy.bytesChecked).toBe(6 * TEST_CHUNK_SIZE);

    const compressible = chunkHex(image, 2); // zstd-compressed
    const random = chunkHex(image, 3); // raw
    await damageChunk(fixture.folder, compressible, 5);
    await damageChunk(fixture.folder, random, 1000);
    await rm(join(fixture.folder, ...chunkKey(chunkHex(image, 0)).split('/')));

    const report = await fixture.repository.verify();
    expect(report.ok).toBe(false);
    const byId = new Map(report.damaged.map((d) => [d.chunkId, d]));
    expect(byId.size).toBe(3);
    expect(byId.get(random)).toEqual({ chunkId: random, problem: 'checksum', pointIds: [p1.id, p2.id] });
    expect(byId.get(chunkHex(image, 0))?.problem).toBe('missing');
    expect(['checksum', 'unreadable']).toContain(byId.get(compressible)?.problem);
    expect(byId.get(compressible)?.pointIds).toEqual([p1.id, p2.id]);
    expect(await fixture.repository.damagedChunks()).toEqual(
      new Set([random, compressible, chunkHex(image, 0)]),
    );

    const onlyP1 = await fixture.repository.verify({ pointIds: [p1.id] });
    expect(onlyP1.damaged.find((d) => d.chunkId === random)?.pointIds).toEqual([p1.id]);

    await rm(join(fixture.folder, ...chunkKey(chunkHex(image, 0)).split('/'))).catch(() => undefined);
    const restoreError = await rejection(
      fixture.repository.restore(p2.id, { path: join(fixture.folder, 'out.img') }),
    );
    expect(
      RepositoryCorruptError.isInstance(restoreError) || ChecksumMismatchError.isInstance(restoreError),
    ).toBe(true);

    // A session no longer trusts the damaged chunks; rewriting them clears the marks.
    const session = await fixture.repository.beginBackup(TEST_LINEAGE);
    expect(await session.hasChunk(Buffer.from(random, 'hex'))).toBe(false);
    expect(await session.hasChunk(Buffer.from(chunkHex(image, 4), 'hex'))).toBe(true);
    const { index } = await storeImage(session, fixture.workers, image);
    const p3 = await session.commit(newPoint(image.byteLength), index);
    expect(await fixture.repository.damagedChunks()).toEqual(new Set());
    const after = await fixture.repository.verify();
    expect(after.ok).toBe(true);
    const out = join(fixture.folder, 'p1.img');
    await fixture.repository.restore(p1.id, { path: out });
    expect(Buffer.compare(await readFile(out), image)).toBe(0);
    expect(p3.id).not.toBe(p1.id);
  });

  it('restore refuses a flipped byte with ChecksumMismatchError naming chunk and point', async () => {
    const image = diskImage(4, 0, 11);
    const point = await backupImage(fixture.repository, fixture.workers, image);
    const random = chunkHex(image, 3);
    await damageChunk(fixture.folder, random, 4000);
    const error = await rejection(
      fixture.repository.restore(point.id, { stream: new PassThrough({ highWaterMark: 1 << 30 }) }),
    );
    expect(ChecksumMismatchError.isInstance(error)).toBe(true);
    expect((error as Error).message).toContain(random);
    expect((error as Error).message).toContain(point.id);
  });

  it('commit refuses an index naming a chunk marked damaged that the session did not rewrite', async () => {
    const image = diskImage(4, 0, 12);
    const first = await backupImage(fixture.repository, fixture.workers, image);
    await damageChunk(fixture.folder, chunkHex(image, 3), 10);
    expect((await fixture.repository.verify()).ok).toBe(false);
    const parent = await fixture.repository.openIndex(first);
    const session = await fixture.repository.beginBackup(TEST_LINEAGE);
    const index = session.createIndex({ capacityBytes: image.byteLength, chunkSize: TEST_CHUNK_SIZE });
    await copyIndex(parent, index);
    const error = await rejection(session.commit(newPoint(image.byteLength), index));
    expect(RepositoryCorruptError.isInstance(error)).toBe(true);
    expect((error as Error).message).toContain(chunkHex(image, 3));
    await session.abort();
  });

  it('verify reports a point whose index blob is damaged', async () => {
    const image = diskImage(2, 0, 13);
    const point = await backupImage(fixture.repository, fixture.workers, image);
    const path = join(fixture.folder, 'indexes', point.id);
    const handle = await open(path, 'r+');
    await handle.write(Buffer.from([0xff]), 0, 1, 30);
    await handle.close();
    const report = await fixture.repository.verify();
    expect(report.ok).toBe(false);
    expect(report.damagedIndexes).toEqual([
      expect.objectContaining({ pointId: point.id, problem: 'corrupt' }),
    ]);
    expect(RepositoryCorruptError.isInstance(await rejection(fixture.repository.openIndex(point)))).toBe(
      true,
    );
  });

  it('applies retention (dry run first), metadata before index, chunks left for prune', async () => {
    const image = diskImage(2, 0, 14);
    const days = ['2024-02-01', '2024-02-02', '2024-02-03', '2024-02-04'];
    const points = [];
    for (const day of days) {
      points.push(
        await backupImage(fixture.repository, fixture.workers, image, { createdAt: `${day}T12:00:00.000Z` }),
      );
    }
    const dry = await fixture.repository.applyRetention({ keepLast: 2 }, { dryRun: true });
    expect(dry.removed.map((p) => p.id)).toEqual([points[0]!.id, points[1]!.id]);
    expect(await fixture.repository.points()).toHaveLength(4);
    const done = await fixture.repository.applyRetention({ keepLast: 2 });
    expect(done.kept.map((p) => p.id)).toEqual([points[2]!.id, points[3]!.id]);
    expect((await fixture.repository.points()).map((p) => p.id)).toEqual([points[2]!.id, points[3]!.id]);
    expect(await fixture.store.has(`indexes/${points[0]!.id}`)).toBe(false);
    expect(await fixture.store.has(chunkKey(chunkHex(image, 0)))).toBe(true);
    // Removing a parent is safe: the kept point's index names its chunks by id.
    const out = join(fixture.folder, 'kept.img');
    await fixture.repository.restore(points[2]!.id, { path: out });
    expect(Buffer.compare(await readFile(out), image)).toBe(0);
  });

  it('keeps the ledger: create-only record, update, remove, list', async () => {
    const entry: LedgerEntry = {
      id: 'snap-1',
      kind: 'snapshot',
      platformId: 'p',
      hostId: 'h',
      name: 'drkit-1',
      state: 'pending',
      jobId: 'job-1',
      createdAt: '2024-01-01T00:00:00.000Z',
    };
    const { ledger } = fixture.repository;
    await ledger.record(entry);
    await ledger.record(entry); // a retried record of the same entry
    expect(InvalidArgumentError.isInstance(await rejection(ledger.record({ ...entry, name: 'other' })))).toBe(
      true,
    );
    await ledger.update({ ...entry, state: 'retained', providerId: 'snap-xyz' });
    await ledger.record({ ...entry, id: 'snap-2' });
    const listed = await (await fixture.reopen()).ledger.list();
    expect(listed).toEqual([
      { ...entry, state: 'retained', providerId: 'snap-xyz' },
      { ...entry, id: 'snap-2' },
    ]);
    await ledger.remove('snap-1');
    await ledger.remove('snap-1');
    expect((await ledger.list()).map((e) => e.id)).toEqual(['snap-2']);
    expect(NotFoundError.isInstance(await rejection(ledger.update(entry)))).toBe(true);
    expect(InvalidArgumentError.isInstance(await rejection(ledger.record({ ...entry, id: '../x' })))).toBe(
      true,
    );
  });

  it('keeps the owner and lease of a ledger entry, and refuses malformed ones naming the field', async () => {
    const entry: LedgerEntry = {
      id: 'snap-1',
      kind: 'snapshot',
      platformId: 'p',
      hostId: 'h',
      name: 'drkit-1',
      state: 'pending',
      jobId: 'job-1',
      createdAt: '2024-01-01T00:00:00.000Z',
      owner: { engineId: 'engine-a', hostname: 'proxy-a', pid: 42 },
      leaseExpiresAt: '2024-01-01T00:10:00.000Z',
    };
    const { ledger } = fixture.repository;
    await ledger.record(entry);
    expect(await (await fixture.reopen()).ledger.list()).toEqual([entry]);
    const bad: [string, Partial<Record<keyof LedgerEntry, unknown>>][] = [
      ['owner.engineId', { owner: { hostname: 'x', pid: 1 } }],
      ['owner.pid', { owner: { engineId: 'e', hostname: 'x', pid: -1 } }],
      ['leaseExpiresAt', { leaseExpiresAt: 'soon' }],
      ['kind', { kind: 'Snapshot!' }],
    ];
    for (const [field, change] of bad) {
      const error = await rejection(ledger.record({ ...entry, id: 'snap-bad', ...change } as LedgerEntry));
      expect(InvalidArgumentError.isInstance(error)).toBe(true);
      expect(String(error)).toContain(field);
    }
  });

  it('close stops a pool it started, and async dispose closes', async () => {
    const image = diskImage(1, 0, 15);
    await backupImage(fixture.repository, fixture.workers, image);
    const own = await openRepository({ store: fixture.store });
    {
      await using scoped = own;
      const [point] = await scoped.points();
      await scoped.restore(point!.id, { stream: new PassThrough({ highWaterMark: 1 << 30 }) });
    }
    expect(InvalidArgumentError.isInstance(await rejection(own.points()))).toBe(true);
  });
});

describe('BackupSession.adoptPoint', { timeout: REPOSITORY_TEST_TIMEOUT_MS }, () => {
  let fixture: RepositoryFixture;
  beforeEach(async () => {
    fixture = await createRepositoryFixture();
  });
  afterEach(() => fixture.cleanup());

  it('reads the parent under the lock, so commit trusts its chunks without asking the store', async () => {
    const image = diskImage(6, 0, 21);
    const parent = await backupImage(fixture.repository, fixture.workers, image);
    const session = await fixture.repository.beginBackup(TEST_LINEAGE);
    try {
      const adopted = await session.adoptPoint(parent.id);
      expect(adopted.point.id).toBe(parent.id);
      expect(adopted.index.chunkCount).toBe(6);
      // Count the store's existence checks during commit: the adopted chunks need none.
      const has = fixture.repository.store.has.bind(fixture.repository.store);
      let checks = 0;
      fixture.repository.store.has = async (key, options) => {
        checks++;
        return has(key, options);
      };
      const index = session.createIndex({
        capacityBytes: image.byteLength,
        chunkSize: TEST_CHUNK_SIZE,
        base: adopted.index,
      });
      const child = await session.commit(newPoint(image.byteLength, { parentId: parent.id }), index);
      expect(checks).toBe(0);
      expect(child.parentId).toBe(parent.id);
    } finally {
      await session.abort();
    }
  });

  it('refuses a point that no longer exists', async () => {
    const session = await fixture.repository.beginBackup(TEST_LINEAGE);
    try {
      const error = await session.adoptPoint('20200101T000000000-00000000').catch((e: unknown) => e);
      expect(NotFoundError.isInstance(error)).toBe(true);
    } finally {
      await session.abort();
    }
  });
});

describe('BackupSession durability', { timeout: REPOSITORY_TEST_TIMEOUT_MS }, () => {
  let fixture: RepositoryFixture;
  beforeEach(async () => {
    fixture = await createRepositoryFixture();
  });
  afterEach(() => fixture.cleanup());

  /** A repository on the fixture's folder whose store logs `sync` (with its keys), chunk puts and metadata puts. */
  async function loggingRepository() {
    const inner = createLocalFolderStore({ path: fixture.folder });
    const log: string[] = [];
    const store: Store = {
      ...inner,
      async put(key, data, options) {
        if (key.startsWith('points/') || key.startsWith('indexes/')) log.push(`put ${key.split('/')[0]}`);
        if (key.startsWith('chunks/')) log.push(`put chunk durable=${options?.durable ?? true}`);
        return inner.put(key, data, options);
      },
      async sync(keys, options) {
        const list = [...keys];
        const chunks = list.filter((key) => key.startsWith('chunks/'));
        const segments = list.length - chunks.length;
        log.push(`sync ${chunks.sort().join(' ')}${segments > 0 ? ` +${segments} segment(s)` : ''}`);
        return inner.sync?.(list, options);
      },
    };
    const repository = await openRepository({ store, workers: fixture.workers });
    return { repository, log };
  }

  /** Stores the chunks of `image` in a session that then aborts, as a run that crashed before its commit. */
  async function crashedRun(image: Uint8Array): Promise<string[]> {
    const session = await fixture.repository.beginBackup(TEST_LINEAGE);
    const { ids } = await storeImage(session, fixture.workers, image);
    await session.abort();
    const keys: string[] = [];
    for (const id of ids) if (id !== undefined) keys.push(chunkKey(id));
    return keys.sort();
  }

  it('syncs the chunks hasChunk found present, once, before writing the index and the point', async () => {
    const image = diskImage(4, 0, 31);
    const keys = await crashedRun(image);
    expect(keys).toHaveLength(3);
    const { repository, log } = await loggingRepository();
    try {
      const session = await repository.beginBackup(TEST_LINEAGE);
      const index = session.createIndex({ capacityBytes: image.byteLength, chunkSize: TEST_CHUNK_SIZE });
      for (let i = 0; i < 4; i++) {
        const plain = image.subarray(i * TEST_CHUNK_SIZE, (i + 1) * TEST_CHUNK_SIZE);
        const encoded = await fixture.workers.encode(plain.slice());
        if (encoded.kind !== 'data') continue;
        index.setId(i, encoded.hash);
        // Resuming: every non-zero chunk is already stored, so none is written again.
        expect(await session.hasChunk(encoded.hash)).toBe(true);
      }
      await session.commit(newPoint(image.byteLength), index);
      expect(log).toEqual([`sync ${keys.join(' ')} +1 segment(s)`, 'put indexes', 'put points']);
    } finally {
      await repository.close();
    }
  });

  it('writes chunks without durability and syncs them, with those the commit check found, in one step', async () => {
    const first = diskImage(4, 0, 32);
    const keys = await crashedRun(first);
    const { repository, log } = await loggingRepository();
    try {
      const session = await repository.beginBackup(TEST_LINEAGE);
      const second = diskImage(4, 0, 33);
      const { ids, chunksWritten } = await storeImage(session, fixture.workers, second);
      expect(chunksWritten).toBe(3);
      // Reuse position 0 of the crashed run without asking hasChunk: commit's own check finds it.
      const reused = session.createIndex({ capacityBytes: second.byteLength, chunkSize: TEST_CHUNK_SIZE });
      ids.forEach((id, i) => {
        if (id !== undefined) reused.setId(i, id);
      });
      const encoded = await fixture.workers.encode(first.slice(0, TEST_CHUNK_SIZE));
      if (encoded.kind !== 'data') throw new Error('position 0 of the image is random data');
      const { hash } = encoded;
      reused.setId(0, hash);
      const secondKeys = ids.flatMap((id) => (id === undefined ? [] : [chunkKey(id)]));
      await session.commit(newPoint(second.byteLength), reused);
      // The 3 chunks it wrote (one of them no longer named: syncing it too is harmless) and the one it found.
      expect(log).toEqual([
        'put chunk durable=false',
        'put chunk durable=false',
        'put chunk durable=false',
        `sync ${[...secondKeys, chunkKey(hash)].sort().join(' ')} +1 segment(s)`,
        'put indexes',
        'put points',
      ]);
      expect(keys).toContain(chunkKey(hash));
    } finally {
      await repository.close();
    }
  });
});

describe('unreadable point metadata', { timeout: REPOSITORY_TEST_TIMEOUT_MS }, () => {
  let fixture: RepositoryFixture;
  beforeEach(async () => {
    fixture = await createRepositoryFixture();
  });
  afterEach(() => fixture.cleanup());

  /** Three points of one lineage a day apart; the second's metadata garbled, the third's from a newer drkit. */
  async function damagedRepository() {
    const image = diskImage(3, 0, 41);
    const points = [];
    for (const day of ['2024-03-01', '2024-03-02', '2024-03-03']) {
      points.push(
        await backupImage(fixture.repository, fixture.workers, image, { createdAt: `${day}T12:00:00.000Z` }),
      );
    }
    const [good, corrupt, newer] = points as [RecoveryPoint, RecoveryPoint, RecoveryPoint];
    await writeFile(join(fixture.folder, 'points', `${corrupt.id}.json`), '{"formatVersion": 2, "id": ');
    const newerText = await readFile(join(fixture.folder, 'points', `${newer.id}.json`), 'utf8');
    const newerJson = JSON.parse(newerText.slice(0, newerText.lastIndexOf('drkit-sha256:')));
    await writeFile(
      join(fixture.folder, 'points', `${newer.id}.json`),
      encodeCheckedJson({ ...newerJson, formatVersion: 3, somethingNew: true }),
    );
    // Another process (no cached metadata) sees what is on disk.
    const repository = await fixture.reopen();
    return { repository, image, good, corrupt, newer };
  }

  it('points() skips them; unreadablePoints() names each with its problem and the error', async () => {
    const { repository, good, corrupt, newer } = await damagedRepository();
    expect((await repository.points()).map((p) => p.id)).toEqual([good.id]);
    expect((await repository.points(TEST_LINEAGE)).map((p) => p.id)).toEqual([good.id]);
    const unreadable = await repository.unreadablePoints();
    expect(unreadable.map(({ id, key, problem }) => ({ id, key, problem }))).toEqual([
      { id: corrupt.id, key: `points/${corrupt.id}.json`, problem: 'corrupt' },
      { id: newer.id, key: `points/${newer.id}.json`, problem: 'unsupported-version' },
    ]);
    for (const entry of unreadable) {
      expect(RepositoryCorruptError.isInstance(entry.error)).toBe(true);
      expect(entry.detail).toBe(entry.error.message);
    }
    expect(unreadable[1]!.detail).toContain('formatVersion');
    // Asked for by id, such a point still fails loudly.
    expect(RepositoryCorruptError.isInstance(await rejection(repository.point(corrupt.id)))).toBe(true);
  });

  it('verify checks the readable points and reports the unreadable ones as damage', async () => {
    const { repository, good, corrupt, newer } = await damagedRepository();
    const report = await repository.verify();
    expect(report.pointsChecked).toBe(1);
    expect(report.chunksChecked).toBe(2);
    expect(report.damaged).toEqual([]);
    expect(report.unreadablePoints.map((u) => [u.id, u.problem])).toEqual([
      [corrupt.id, 'corrupt'],
      [newer.id, 'unsupported-version'],
    ]);
    expect(report.ok).toBe(false);
    // Named explicitly, too.
    const named = await repository.verify({ pointIds: [good.id, newer.id] });
    expect(named.pointsChecked).toBe(1);
    expect(named.unreadablePoints.map((u) => u.id)).toEqual([newer.id]);
    expect(named.ok).toBe(false);
  });

  it('retention neither counts nor removes them', async () => {
    const { repository, image, good, corrupt, newer } = await damagedRepository();
    const later = await backupImage(repository, fixture.workers, image, {
      createdAt: '2024-03-04T12:00:00.000Z',
    });
    const plan = await repository.applyRetention({ keepLast: 1 });
    expect(plan.kept.map((p) => p.id)).toEqual([later.id]);
    expect(plan.removed.map((p) => p.id)).toEqual([good.id]);
    expect(plan.unreadable.map((u) => u.id)).toEqual([corrupt.id, newer.id]);
    for (const id of [corrupt.id, newer.id]) {
      expect(await fixture.store.has(`points/${id}.json`)).toBe(true);
      expect(await fixture.store.has(`indexes/${id}`)).toBe(true);
    }
  });

  it('prune refuses with UnreadablePointsError naming them and deletes nothing', async () => {
    const { repository, good, corrupt, newer } = await damagedRepository();
    // An unreferenced chunk prune would otherwise delete.
    await fixture.store.put(chunkKey('ab'.repeat(32)), new Uint8Array([1, 2, 3]));
    const before: string[] = [];
    for await (const entry of fixture.store.list('')) before.push(entry.key);
    const error = await rejection(repository.prune());
    expect(UnreadablePointsError.isInstance(error)).toBe(true);
    expect(RepositoryCorruptError.isInstance(error)).toBe(true);
    const refusal = error as UnreadablePointsError;
    expect(refusal.retryable).toBe(false);
    expect(refusal.points.map((p) => [p.id, p.problem])).toEqual([
      [corrupt.id, 'corrupt'],
      [newer.id, 'unsupported-version'],
    ]);
    expect(refusal.message).toContain(corrupt.id);
    expect(refusal.toJSON().points).toHaveLength(2);
    const after: string[] = [];
    for await (const entry of fixture.store.list('')) after.push(entry.key);
    expect(after).toEqual(before);
    expect(await fixture.store.has('locks/prune.json')).toBe(false);
    expect((await repository.points()).map((p) => p.id)).toEqual([good.id]);
  });
});
