import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type BackupEngine,
  type BackupJobResult,
  createBackupEngine,
  createInProcessSyncProxy,
  createLocalFolderStore,
  type DiskTaskProgress,
  openRepository,
  type Repository,
  SyncProxyRegistry,
} from '../src/index.js';
import { createMemoryPlatform, type MemoryPlatform } from './memory-platform.js';

const MiB = 1024 * 1024;
const CHUNK = 256 * 1024;

function sha(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

let dir: string;
let repository: Repository;
let engine: BackupEngine | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drkit-engine-'));
  repository = await openRepository({
    store: createLocalFolderStore({ path: join(dir, 'repo') }),
    create: true,
  });
});

afterEach(async () => {
  await engine?.close();
  engine = undefined;
  await repository.close();
  await rm(dir, { recursive: true, force: true });
});

async function restoreBytes(pointId: string): Promise<Uint8Array> {
  const path = join(dir, `restore-${pointId}`);
  await repository.restore(pointId, { path });
  return new Uint8Array(await readFile(path));
}

function okTask(result: BackupJobResult, diskId: string) {
  const outcome = result.tasks.find((t) => t.diskId === diskId);
  if (outcome?.status !== 'succeeded')
    throw new Error(`disk ${diskId} failed: ${String((outcome as { error?: unknown })?.error)}`);
  return outcome.result;
}

function fill(platform: MemoryPlatform, diskId: string, capacity: number) {
  // Compressible text, random data and zeros, like a real disk.
  const text = Buffer.from('drkit block backup engine; '.repeat(Math.ceil(capacity / 27 / 3)));
  platform.write(diskId, 0, text.subarray(0, Math.floor(capacity / 3)));
  platform.write(diskId, Math.floor(capacity / 3), randomBytes(Math.floor(capacity / 3)));
}

// Each test runs whole backup jobs and restores (1 to 5 MiB disks, the chunk worker pool, a folder store that
// fsyncs every blob): well under a second alone, about 2 s seen with 2 busy cores. Hence 60 s, not vitest's 5 s.
describe('BackupEngine with host snapshots and exact change tracking', { timeout: 60_000 }, () => {
  it('backs up, changes data, backs up again, and restores every point byte for byte', async () => {
    const platform = createMemoryPlatform({
      disks: [
        { id: 'd1', capacity: 3 * MiB },
        { id: 'd2', capacity: 2 * MiB + 4096 },
      ],
    });
    fill(platform, 'd1', 3 * MiB);
    fill(platform, 'd2', 2 * MiB);
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    const progress: DiskTaskProgress[] = [];
    const first = await engine.backup({ onProgress: (p) => progress.push(p) });
    expect(first.failed).toBe(0);
    const expected: Record<string, string[]> = {
      d1: [sha(platform.content('d1'))],
      d2: [sha(platform.content('d2'))],
    };
    const r1 = okTask(first, 'd1');
    expect(r1.validity).toEqual({ kind: 'full', reason: 'first-backup' });
    expect(progress.some((p) => p.state === 'done' && p.diskId === 'd1')).toBe(true);

    // Unaligned writes: chunks only partly covered are completed from the parent point.
    platform.write('d1', 1000, randomBytes(5000));
    platform.write('d1', 3 * MiB - 1, Uint8Array.of(0xff)); // the last byte
    platform.write('d2', CHUNK * 3 + 17, randomBytes(CHUNK + 3));
    const second = await engine.backup();
    expect(second.failed).toBe(0);
    expected.d1!.push(sha(platform.content('d1')));
    expected.d2!.push(sha(platform.content('d2')));
    const r2 = okTask(second, 'd1');
    expect(r2.validity).toEqual({ kind: 'exact' });
    expect(r2.bytesRead).toBe(5000 + 1);
    expect(r2.bytesWritten).toBeGreaterThan(0);
    expect(r2.bytesWritten).toBeLessThan(3 * CHUNK); // two touched chunks, compressed

    for (const diskId of ['d1', 'd2']) {
      const points = await repository.points({ diskId });
      expect(points).toHaveLength(2);
      expect(points[1]!.parentId).toBe(points[0]!.id);
      for (const [i, point] of points.entries())
        expect(sha(await restoreBytes(point.id))).toBe(expected[diskId]![i]);
    }
  });

  it('keeps only the newest snapshot as the base and records it in the ledger first', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: MiB }] });
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    await engine.backup();
    const [s1] = platform.created;
    let ledger = await repository.ledger.list();
    expect(ledger.map((e) => [e.name, e.state])).toEqual([[s1, 'retained']]);
    platform.write('d1', 0, randomBytes(10));
    await engine.backup();
    const s2 = platform.created[1];
    expect(platform.released).toEqual([s1]);
    expect(platform.snapshotNames()).toEqual([s2]);
    ledger = await repository.ledger.list();
    expect(ledger.map((e) => [e.name, e.state])).toEqual([[s2, 'retained']]);
  });

  it('releases each snapshot at once on a platform whose base is not a snapshot', async () => {
    const platform = createMemoryPlatform({
      disks: [{ id: 'd1', capacity: MiB }],
      retainsSnapshotAsBase: false,
    });
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    await engine.backup();
    expect(platform.released).toEqual(platform.created);
    expect(platform.snapshotNames()).toEqual([]);
    expect(await repository.ledger.list()).toEqual([]);
  });

  it('reads in full and says why when the base snapshot was deleted behind its back', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: MiB }] });
    fill(platform, 'd1', MiB);
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    await engine.backup();
    platform.dropSnapshot(platform.created[0]!);
    platform.write('d1', 0, randomBytes(100));
    const result = okTask(await engine.backup(), 'd1');
    expect(result.validity).toEqual({ kind: 'full', reason: 'base-snapshot-missing' });
    // Unchanged chunks are recognised by hash even in a full read.
    expect(result.bytesSkippedUnchanged).toBeGreaterThan(0);
    const [, p2] = await repository.points();
    expect(sha(await restoreBytes(p2!.id))).toBe(sha(platform.content('d1')));
  });

  it('reads in full, saying why, when a point newer than the parent is unreadable; keeps its snapshot', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: MiB }] });
    fill(platform, 'd1', MiB);
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    await engine.backup();
    platform.write('d1', 0, randomBytes(100));
    await engine.backup();
    const [p1, p2] = await repository.points();
    // The newest point's metadata becomes unreadable (written by a newer drkit): it might be this disk's
    // newest point, so an incremental against p1 could miss what changed since; the engine reads in full.
    const metadata = join(dir, 'repo', 'points', `${p2!.id}.json`);
    await writeFile(
      metadata,
      JSON.stringify({ ...JSON.parse(await readFile(metadata, 'utf8')), formatVersion: 9 }),
    );
    await repository.close();
    repository = await openRepository({ store: createLocalFolderStore({ path: join(dir, 'repo') }) });
    await engine.close();
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    platform.write('d1', CHUNK, randomBytes(100));
    const job = await engine.backup();
    expect(job.unreadablePoints.map((u) => [u.id, u.problem])).toEqual([[p2!.id, 'unsupported-version']]);
    const result = okTask(job, 'd1');
    expect(result.validity.kind).toBe('full');
    expect(result.validity).toMatchObject({ reason: 'parent-point-damaged' });
    expect((result.validity as { detail?: string }).detail).toContain(p2!.id);
    const points = await repository.points();
    expect(points.map((p) => p.id)).toEqual([p1!.id, result.pointId]);
    expect(points[1]!.parentId).toBe(p1!.id);
    expect(sha(await restoreBytes(result.pointId))).toBe(sha(platform.content('d1')));
    // The unreadable point's base snapshot is kept (it is not known to be unused); only the first was released.
    expect(platform.released).toEqual([platform.created[0]]);
    expect((await repository.ledger.list()).map((e) => [e.name, e.state]).sort()).toEqual(
      [
        [platform.created[1], 'retained'],
        [platform.created[2], 'retained'],
      ].sort(),
    );
  });

  it('keeps an incremental when the only unreadable point is older than the parent', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: MiB }] });
    fill(platform, 'd1', MiB);
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    await engine.backup();
    await engine.backup();
    const [p1] = await repository.points();
    await writeFile(join(dir, 'repo', 'points', `${p1!.id}.json`), 'not json');
    await repository.close();
    repository = await openRepository({ store: createLocalFolderStore({ path: join(dir, 'repo') }) });
    await engine.close();
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    platform.write('d1', 0, randomBytes(100));
    const job = await engine.backup();
    expect(job.unreadablePoints.map((u) => [u.id, u.problem])).toEqual([[p1!.id, 'corrupt']]);
    expect(okTask(job, 'd1').validity).toEqual({ kind: 'exact' });
  });

  it('restores a disk that grew and then shrank to the right size', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: MiB + 100 }] });
    fill(platform, 'd1', MiB + 100);
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    const sums = [sha(platform.content('d1'))];
    await engine.backup();
    platform.resize('d1', 2 * MiB + 7);
    platform.write('d1', 2 * MiB, randomBytes(7));
    sums.push(sha(platform.content('d1')));
    await engine.backup();
    platform.resize('d1', CHUNK + 5);
    sums.push(sha(platform.content('d1')));
    await engine.backup();
    const points = await repository.points();
    expect(points.map((p) => p.capacityBytes)).toEqual([MiB + 100, 2 * MiB + 7, CHUNK + 5]);
    for (const [i, p] of points.entries()) expect(sha(await restoreBytes(p.id))).toBe(sums[i]);
  });

  it('a failed disk does not fail its sibling, and both snapshots stay as bases', async () => {
    const platform = createMemoryPlatform({
      disks: [
        { id: 'd1', capacity: MiB },
        { id: 'd2', capacity: MiB },
      ],
    });
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    await engine.backup();
    platform.failAfter.set('d2', 1);
    platform.write('d2', 0, randomBytes(CHUNK * 2));
    const result = await engine.backup();
    expect(result.succeeded).toBe(1);
    expect(result.failed).toBe(1);
    const failed = result.tasks.find((t) => t.status === 'failed');
    expect(failed?.diskId).toBe('d2');
    expect(String((failed as { error: unknown }).error)).toMatch(/injected failure/);
    // d1's newest point needs the new snapshot, d2's the old one.
    expect(platform.released).toEqual([]);
    expect((await repository.ledger.list()).map((e) => e.state)).toEqual(['retained', 'retained']);
    expect(await repository.points({ diskId: 'd2' })).toHaveLength(1);
    platform.failAfter.delete('d2');
    const third = await engine.backup();
    expect(third.failed).toBe(0);
    expect(platform.snapshotNames()).toEqual([platform.created[2]]);
  });

  it('reconcile releases a snapshot a crashed job left pending, and keeps the base', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: MiB }] });
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    await engine.backup();
    // What a crash between "snapshot created" and "tasks done" leaves: a pending entry and a live snapshot.
    await repository.ledger.record({
      id: 'crashed-1',
      kind: 'snapshot',
      platformId: platform.id,
      hostId: 'vm-1',
      name: 'drkit-crashed',
      state: 'pending',
      jobId: 'job-that-died',
      createdAt: new Date().toISOString(),
    });
    await platform.createSnapshot!({ host: platform.host, name: 'drkit-crashed' });
    const report = await engine.reconcile();
    expect(report.released.map((e) => e.name)).toEqual(['drkit-crashed']);
    expect(report.kept.map((e) => e.name)).toEqual([platform.created[0]]);
    expect(report.failed).toEqual([]);
    expect(platform.snapshotNames()).toEqual([platform.created[0]]);
    expect((await repository.ledger.list()).map((e) => e.name)).toEqual([platform.created[0]]);
  });

  it('spreads disk tasks over the proxies bound to the platform within their limits', async () => {
    const platform = createMemoryPlatform({
      disks: Array.from({ length: 6 }, (_, i) => ({ id: `d${i}`, capacity: CHUNK })),
    });
    const registry = new SyncProxyRegistry();
    const a = createInProcessSyncProxy({
      id: 'a',
      platforms: [platform],
      repository,
      settings: { maxMountedDisks: 1 },
    });
    const b = createInProcessSyncProxy({
      id: 'b',
      platforms: [platform],
      repository,
      settings: { maxMountedDisks: 2 },
    });
    registry.register(a);
    registry.register(b);
    registry.bind('a', platform.id);
    registry.bind('b', platform.id);
    engine = createBackupEngine({
      repository,
      platforms: [platform],
      proxies: registry,
      concurrency: 6,
      chunkSize: CHUNK,
    });
    const dry = await engine.explain();
    expect(dry.map((p) => p.proxyId ?? p.decision)).toEqual(['a', 'b', 'b', 'waiting', 'waiting', 'waiting']);
    let peak = 0;
    const result = await engine.backup({
      onPlacement: () => {
        peak = Math.max(
          peak,
          registry.list().reduce((n, p) => n + p.running, 0),
        );
      },
    });
    expect(result.failed).toBe(0);
    expect(peak).toBeLessThanOrEqual(3);
    expect(new Set(result.tasks.map((t) => t.proxyId))).toEqual(new Set(['a', 'b']));
    await a.close();
    await b.close();
  });

  it('rejects with the abort reason and commits nothing', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: 4 * MiB }], pieceSize: 4096 });
    fill(platform, 'd1', 4 * MiB);
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    const controller = new AbortController();
    const reason = new Error('operator cancelled');
    const promise = engine.backup({
      signal: controller.signal,
      onProgress: (p) => {
        if (p.bytesDone > 0) controller.abort(reason);
      },
    });
    await expect(promise).rejects.toBe(reason);
    expect(await repository.points()).toEqual([]);
  });
});
