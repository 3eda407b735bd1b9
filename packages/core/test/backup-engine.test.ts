import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  type BackupEngine,
  type BackupJobResult,
  createBackupEngine,
  createInProcessSyncProxy,
  createLocalFolderStore,
  type DiskTaskProgress,
  LEDGER_LEASE_MARGIN_SECONDS,
  type LedgerEntry,
  openRepository,
  type Repository,
  SourceProtocolError,
  type Store,
  SyncProxyRegistry,
  TimeoutError,
  UnreachableError,
} from '../src/index.js';
import {
  closeTempRepository,
  openTempRepository,
  parsePointFile,
  pointFile,
  restoredBytes,
  sha,
} from './engine-bed.js';
import { createMemoryPlatform, type MemoryPlatform } from './memory-platform.js';

const MiB = 1024 * 1024;
const CHUNK = 256 * 1024;

let dir: string;
let repository: Repository;
let engine: BackupEngine | undefined;

beforeEach(async () => {
  ({ dir, repository } = await openTempRepository('drkit-engine-'));
});

afterEach(async () => {
  await closeTempRepository({ dir, repository, engine });
  engine = undefined;
});

function restoreBytes(pointId: string): Promise<Uint8Array> {
  return restoredBytes(repository, dir, pointId);
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

async function backUpChangeBackUpRestore(): Promise<void> {
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
}

// Each test runs whole backup jobs and restores (1 to 5 MiB disks, the chunk worker pool, a folder store that
// fsyncs every blob): well under a second alone, about 2 s seen with 2 busy cores. Hence 60 s, not vitest's 5 s.
describe('BackupEngine with host snapshots and exact change tracking', { timeout: 60_000 }, () => {
  it('backs up, changes data, backs up again, and restores every point byte for byte', async () => {
    await backUpChangeBackUpRestore();
  });

  it('does the same in an encrypted repository', async () => {
    await closeTempRepository({ dir, repository, engine: undefined });
    ({ dir, repository } = await openTempRepository('drkit-engine-sealed-', {
      encryption: { passphrase: 'engine test passphrase', scrypt: { N: 1024, r: 8, p: 1 } },
    }));
    expect(repository.encrypted).toBe(true);
    await backUpChangeBackUpRestore();
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
      pointFile({ ...parsePointFile(await readFile(metadata, 'utf8')), formatVersion: 9 }),
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
    await platform.createSnapshot!({ host: platform.host, name: 'drkit-crashed', quiesce: 'none' });
    const report = await engine.reconcile();
    expect(report.released.map((e) => e.name)).toEqual(['drkit-crashed']);
    expect(report.kept.map((k) => [k.entry.name, k.reason])).toEqual([[platform.created[0], 'base']]);
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
    // The abort does not leak the snapshot: it is released (with a signal of its own) and its entry removed.
    expect(platform.created).toHaveLength(1);
    expect(platform.released).toEqual(platform.created);
    expect(platform.liveSnapshots()).toEqual([]);
    expect(await repository.ledger.list()).toEqual([]);
  });
});

/** A promise and the function that resolves it. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

function singleDiskHosts(count: number, capacity = CHUNK) {
  return Array.from({ length: count }, (_, i) => ({ id: `vm-${i}`, disks: [{ id: `d${i}`, capacity }] }));
}

describe('BackupEngine job lifecycle', { timeout: 60_000 }, () => {
  it('snapshots a host when its first disk task is admitted: at most `concurrency` hosts hold a snapshot', async () => {
    const platform = createMemoryPlatform({ hosts: singleDiskHosts(6), retainsSnapshotAsBase: false });
    const running = gate();
    for (let i = 0; i < 6; i++) platform.gates.set(`d${i}`, running.promise);
    const waiting = new Set<string>();
    let peak = 0;
    // The disks' reads wait until both task slots hold a reading task and every task said it waits (or, on an
    // engine that snapshots every host up front, until all six snapshots exist): then the peak is what the
    // engine allows, not what timing happened to give.
    const maybeOpen = () => {
      const open = platform.hostList().reduce((n, h) => n + platform.openSessions(h.id), 0);
      if (open >= 2 && waiting.size === 6) running.open();
    };
    platform.onChangesStart = maybeOpen;
    platform.onCreateSnapshot = () => {
      const live = platform.liveSnapshots().length + 1; // + the one being created
      peak = Math.max(peak, live);
      if (live === 6) running.open();
    };
    engine = createBackupEngine({ repository, platforms: [platform], concurrency: 2, chunkSize: CHUNK });
    const result = await engine.backup({
      onProgress: (p) => {
        if (p.state === 'waiting') waiting.add(p.taskId);
      },
    });
    expect(peak).toBeLessThanOrEqual(2);
    expect(result.failed).toBe(0);
    expect(result.succeeded).toBe(6);
    expect(result.releaseFailures).toEqual([]);
    expect(platform.created).toHaveLength(6);
    expect(await repository.points()).toHaveLength(6);
    expect(platform.liveSnapshots()).toEqual([]);
    expect(await repository.ledger.list()).toEqual([]);
  });

  it('snapshots a host with several disks once, and keeps at most `concurrency` fresh snapshots besides the bases', async () => {
    const platform = createMemoryPlatform({
      hosts: [
        {
          id: 'vm-0',
          disks: [
            { id: 'a', capacity: CHUNK },
            { id: 'b', capacity: 2 * CHUNK },
            { id: 'c', capacity: CHUNK },
          ],
        },
        ...singleDiskHosts(3).map((h, i) => ({ ...h, id: `vm-${i + 1}` })),
      ],
    });
    for (const id of ['a', 'b', 'c', 'd0', 'd1', 'd2']) fill(platform, id, id === 'b' ? 2 * CHUNK : CHUNK);
    let peakFresh = 0;
    platform.onCreateSnapshot = async () => {
      // Fresh snapshots are the pending ledger entries (the one being created is recorded already); bases are
      // retained entries.
      const pending = (await repository.ledger.list()).filter((e) => e.state === 'pending');
      peakFresh = Math.max(peakFresh, pending.length);
    };
    engine = createBackupEngine({ repository, platforms: [platform], concurrency: 2, chunkSize: CHUNK });
    for (let job = 0; job < 2; job++) {
      const before = platform.created.length;
      const result = await engine.backup();
      expect(result.failed).toBe(0);
      expect(platform.created.length - before).toBe(4); // one per host, not per disk
      const names = new Set(
        (await repository.points({ hostId: 'vm-0' })).slice(-3).map((p) => p.checkpoint?.snapshotName),
      );
      expect(names.size).toBe(1);
      platform.write('a', 10, randomBytes(10));
    }
    expect(peakFresh).toBeLessThanOrEqual(2);
    // One base per host is kept, the older ones released.
    expect(platform.liveSnapshots()).toHaveLength(4);
    expect((await repository.ledger.list()).map((e) => e.state)).toEqual(Array(4).fill('retained'));
  });

  it('reports a snapshot whose release fails, keeps the committed points, and leaves the entry to reconcile', async () => {
    const platform = createMemoryPlatform({
      disks: [{ id: 'd1', capacity: MiB }],
      retainsSnapshotAsBase: false,
    });
    fill(platform, 'd1', MiB);
    const refused = new UnreachableError('the source is down');
    platform.onReleaseSnapshot = () => {
      throw refused;
    };
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    const result = await engine.backup();
    expect(result.succeeded).toBe(1);
    expect(result.failed).toBe(0);
    const [name] = platform.created;
    expect(result.releaseFailures).toEqual([
      expect.objectContaining({ platformId: platform.id, hostId: 'vm-1', snapshot: name, error: refused }),
    ]);
    const point = okTask(result, 'd1');
    expect(sha(await restoreBytes(point.pointId))).toBe(sha(platform.content('d1')));
    expect((await repository.ledger.list()).map((e) => e.name)).toEqual([name]);
    expect(platform.snapshotNames()).toEqual([name]);

    platform.onReleaseSnapshot = undefined;
    const report = await engine.reconcile();
    expect(report.released.map((e) => e.name)).toEqual([name]);
    expect(await repository.ledger.list()).toEqual([]);
    expect(platform.snapshotNames()).toEqual([]);
  });

  it('gives up on a release that hangs after releaseTimeoutSeconds and reports a TimeoutError', async () => {
    const platform = createMemoryPlatform({
      disks: [{ id: 'd1', capacity: CHUNK }],
      retainsSnapshotAsBase: false,
    });
    const signals: (AbortSignal | undefined)[] = [];
    // A release that never answers and ignores its signal: only the engine's own deadline ends it.
    platform.onReleaseSnapshot = (o) => {
      signals.push(o.signal);
      return new Promise<void>(() => undefined);
    };
    engine = createBackupEngine({
      repository,
      platforms: [platform],
      chunkSize: CHUNK,
      releaseTimeoutSeconds: 0.05,
    });
    const result = await engine.backup();
    expect(result.succeeded).toBe(1);
    expect(result.releaseFailures).toHaveLength(1);
    expect(TimeoutError.isInstance(result.releaseFailures[0]!.error)).toBe(true);
    expect(signals).toHaveLength(1);
    expect(signals[0]?.aborted).toBe(true); // the deadline aborted the release's own signal
    expect(await repository.ledger.list()).toHaveLength(1);
  });

  it('refuses an invalid releaseTimeoutSeconds', () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: CHUNK }] });
    for (const releaseTimeoutSeconds of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, 86_401]) {
      expect(() => createBackupEngine({ repository, platforms: [platform], releaseTimeoutSeconds })).toThrow(
        /releaseTimeoutSeconds/,
      );
    }
  });

  it('serializes two jobs on one host: the second snapshots after the first ended, and is incremental to it', async () => {
    const platform = createMemoryPlatform({
      hosts: [
        { id: 'vm-a', disks: [{ id: 'a1', capacity: MiB }] },
        { id: 'vm-b', disks: [{ id: 'b1', capacity: MiB }] },
      ],
    });
    fill(platform, 'a1', MiB);
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    const firstReads = gate();
    platform.gates.set('a1', firstReads.promise);
    const expected = new Map<string, string>(); // snapshot name → the disk's content when it was taken
    const atSnapshot: { name: string; openSessions: number; events: string[] }[] = [];
    platform.onCreateSnapshot = ({ hostId, name }) => {
      if (hostId !== 'vm-a') return;
      if (atSnapshot.length === 1) platform.write('a1', 1000, randomBytes(5000)); // new data for the second job
      expected.set(name, sha(platform.content('a1')));
      atSnapshot.push({ name, openSessions: platform.openSessions('vm-a'), events: [...platform.events] });
      if (atSnapshot.length === 2) firstReads.open(); // an engine that does not wait would otherwise hang
    };
    const firstReading = gate();
    platform.onChangesStart = (diskId) => {
      if (diskId === 'a1') firstReading.open();
    };
    const first = engine.backup({ hosts: ['vm-a'] });
    await firstReading.promise; // the first job holds a snapshot of vm-a and reads a1 (held at the gate)
    const second = engine.backup({
      hosts: ['vm-a'],
      onProgress: (p) => {
        if (p.state === 'waiting') firstReads.open(); // the second job waits for vm-a: let the first go on
      },
    });
    const [r1, r2] = await Promise.all([first, second]);
    expect(r1.failed + r2.failed).toBe(0);
    expect(atSnapshot).toHaveLength(2);
    const [s1, s2] = atSnapshot.map((s) => s.name);
    // When the second snapshot was taken, the first job's session was closed and its snapshot settled.
    expect(atSnapshot[1]!.openSessions).toBe(0);
    expect(atSnapshot[1]!.events).toContain(`close:a1:${s1}`);
    const points = await repository.points({ diskId: 'a1' });
    expect(points.map((p) => p.checkpoint?.snapshotName)).toEqual([s1, s2]);
    expect(points[1]!.parentId).toBe(points[0]!.id);
    expect(points[1]!.validity).toEqual({ kind: 'exact' });
    for (const point of points)
      expect(sha(await restoreBytes(point.id))).toBe(expected.get(point.checkpoint!.snapshotName!));
    expect(platform.released).toEqual([s1]);
    expect((await repository.ledger.list()).map((e) => [e.name, e.state])).toEqual([[s2, 'retained']]);
  });

  it('runs jobs on different hosts in parallel', async () => {
    const platform = createMemoryPlatform({
      hosts: [
        { id: 'vm-a', disks: [{ id: 'a1', capacity: CHUNK }] },
        { id: 'vm-b', disks: [{ id: 'b1', capacity: CHUNK }] },
      ],
    });
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    const held = gate();
    platform.gates.set('a1', held.promise);
    const reading = gate();
    platform.onChangesStart = (diskId) => {
      if (diskId === 'a1') reading.open();
    };
    let firstDone = false;
    const first = engine.backup({ hosts: ['vm-a'] }).finally(() => {
      firstDone = true;
    });
    await reading.promise;
    const second = await engine.backup({ hosts: ['vm-b'] });
    expect(second.succeeded).toBe(1);
    expect(firstDone).toBe(false); // vm-b did not wait for vm-a
    held.open();
    expect((await first).succeeded).toBe(1);
  });

  it.each([
    ['short', -1],
    ['long', 1],
  ])('fails the task when readRange answers one byte %s, and commits nothing', async (_, delta) => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: MiB }], readRange: true });
    fill(platform, 'd1', MiB);
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    expect((await engine.backup()).failed).toBe(0);
    platform.write('d1', 1000, randomBytes(10)); // completes chunk 0 with readRange
    platform.readRangeDelta = delta;
    const result = await engine.backup();
    expect(result.failed).toBe(1);
    const outcome = result.tasks[0]!;
    const error = outcome.status === 'failed' ? outcome.error : undefined;
    expect(SourceProtocolError.isInstance(error)).toBe(true);
    const message = String((error as Error).message);
    expect(message).toContain('disk d1');
    expect(message).toContain('offset 0');
    expect(message).toContain(`asked ${CHUNK}`);
    expect(message).toContain(`got ${CHUNK + delta}`);
    expect(await repository.points()).toHaveLength(1);
  });

  it('completes partly covered chunks with readRange when it answers exactly', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: MiB }], readRange: true });
    fill(platform, 'd1', MiB);
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    await engine.backup();
    platform.write('d1', 1000, randomBytes(10));
    const result = okTask(await engine.backup(), 'd1');
    expect(result.bytesRead).toBe(10 + CHUNK);
    expect(sha(await restoreBytes(result.pointId))).toBe(sha(platform.content('d1')));
  });
});

/** A store whose ledger writes can be counted and waited for. */
function watchLedgerWrites(store: Store): { store: Store; count: () => number; next: () => Promise<void> } {
  let pending = gate();
  let count = 0;
  return {
    store: {
      ...store,
      async put(key, data, options) {
        const written = await store.put(key, data, options);
        if (key.startsWith('ledger/')) {
          count++;
          const done = pending;
          pending = gate();
          done.open();
        }
        return written;
      },
    },
    count: () => count,
    next: () => pending.promise,
  };
}

async function ledgerEntry(name: string): Promise<LedgerEntry | undefined> {
  return (await repository.ledger.list()).find((e) => e.name === name);
}

describe('BackupEngine ledger owners and leases', { timeout: 60_000 }, () => {
  /** A second process on the same repository folder: its own repository handle and engine. */
  async function secondEngine(platform: MemoryPlatform, now?: () => Date) {
    const other = await openRepository({ store: createLocalFolderStore({ path: join(dir, 'repo') }) });
    const otherEngine = createBackupEngine({
      repository: other,
      platforms: [platform],
      chunkSize: CHUNK,
      engineId: 'engine-b',
      ...(now ? { now } : {}),
    });
    return {
      engine: otherEngine,
      async close() {
        await otherEngine.close();
        await other.close();
      },
    };
  }

  it("another engine's reconcile keeps the snapshot a running job of this engine reads, and its entry", async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: MiB }] });
    fill(platform, 'd1', MiB);
    engine = createBackupEngine({
      repository,
      platforms: [platform],
      chunkSize: CHUNK,
      engineId: 'engine-a',
    });
    const reads = gate();
    platform.gates.set('d1', reads.promise);
    const reading = gate();
    platform.onChangesStart = () => reading.open();
    const job = engine.backup();
    let name: string | undefined;
    try {
      await reading.promise; // engine A holds its snapshot and reads d1 (held at the gate)
      name = platform.created[0];
      const b = await secondEngine(platform);
      try {
        const report = await b.engine.reconcile();
        expect(report.released).toEqual([]);
        expect(report.failed).toEqual([]);
        expect(report.kept.map((k) => [k.entry.name, k.reason])).toEqual([[name, 'held-by-another-engine']]);
        expect(report.kept[0]!.detail).toContain('engine-a');
      } finally {
        await b.close();
      }
      expect(platform.snapshotNames()).toEqual([name]);
      const entry = await ledgerEntry(name!);
      expect(entry?.state).toBe('pending');
      expect(entry?.owner).toEqual({ engineId: 'engine-a', hostname: expect.any(String), pid: process.pid });
      expect(Number.isNaN(Date.parse(entry!.leaseExpiresAt!))).toBe(false);
    } finally {
      reads.open(); // also when an expectation failed: the job must end
    }
    const result = await job;
    const point = okTask(result, 'd1');
    expect(point.validity).toEqual({ kind: 'full', reason: 'first-backup' });
    expect(sha(await restoreBytes(point.pointId))).toBe(sha(platform.content('d1')));
    expect((await ledgerEntry(name!))?.state).toBe('retained');
  });

  it("releases another engine's pending entry once its lease expired (past the margin), not before", async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: CHUNK }] });
    const t0 = Date.parse('2030-01-01T00:00:00.000Z');
    let clock = t0;
    // What engine A leaves when it dies mid-job: a pending entry with its lease, a live snapshot, no renewal.
    await repository.ledger.record({
      id: 'dead-a-1',
      kind: 'snapshot',
      platformId: platform.id,
      hostId: 'vm-1',
      name: 'drkit-dead-a',
      state: 'pending',
      jobId: 'job-of-a',
      createdAt: new Date(t0).toISOString(),
      owner: { engineId: 'engine-a', hostname: 'proxy-a', pid: 4242 },
      leaseExpiresAt: new Date(t0 + 600_000).toISOString(),
    });
    await platform.createSnapshot!({ host: platform.host, name: 'drkit-dead-a', quiesce: 'none' });
    const b = await secondEngine(platform, () => new Date(clock));
    try {
      clock = t0 + 600_000 + LEDGER_LEASE_MARGIN_SECONDS * 1000; // expired, but within the clock-skew margin
      const early = await b.engine.reconcile();
      expect(early.released).toEqual([]);
      expect(early.kept.map((k) => [k.entry.name, k.reason])).toEqual([
        ['drkit-dead-a', 'held-by-another-engine'],
      ]);
      expect(early.kept[0]!.detail).toBe(
        'held by engine engine-a on proxy-a (pid 4242), lease until 2030-01-01T00:10:00.000Z',
      );
      expect(platform.snapshotNames()).toEqual(['drkit-dead-a']);

      clock += 1;
      const late = await b.engine.reconcile();
      expect(late.released.map((e) => e.name)).toEqual(['drkit-dead-a']);
      expect(late.kept).toEqual([]);
      expect(platform.snapshotNames()).toEqual([]);
      expect(await repository.ledger.list()).toEqual([]);
    } finally {
      await b.close();
    }
  });

  it('releases at once what its own engine id left pending after a restart, whatever the lease', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: CHUNK }] });
    await repository.ledger.record({
      id: 'before-restart',
      kind: 'snapshot',
      platformId: platform.id,
      hostId: 'vm-1',
      name: 'drkit-before-restart',
      state: 'pending',
      jobId: 'job-before-restart',
      createdAt: new Date().toISOString(),
      owner: { engineId: 'proxy-1', hostname: 'proxy-1', pid: 1 },
      leaseExpiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    });
    await platform.createSnapshot!({ host: platform.host, name: 'drkit-before-restart', quiesce: 'none' });
    engine = createBackupEngine({ repository, platforms: [platform], engineId: 'proxy-1' });
    const report = await engine.reconcile();
    expect(report.released.map((e) => e.name)).toEqual(['drkit-before-restart']);
    expect(platform.snapshotNames()).toEqual([]);
  });

  it('renews the leases of the entries its running jobs hold every third of the lease, and stops after', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const watched = watchLedgerWrites(createLocalFolderStore({ path: join(dir, 'repo') }));
    const own = await openRepository({ store: watched.store });
    try {
      const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: MiB }] });
      fill(platform, 'd1', MiB);
      const t0 = Date.parse('2030-01-01T00:00:00.000Z');
      let clock = t0;
      engine = createBackupEngine({
        repository: own,
        platforms: [platform],
        chunkSize: CHUNK,
        engineId: 'engine-a',
        ledgerLeaseSeconds: 30,
        now: () => new Date(clock),
      });
      const reads = gate();
      platform.gates.set('d1', reads.promise);
      const reading = gate();
      platform.onChangesStart = () => reading.open();
      const job = engine.backup();
      let name: string | undefined;
      try {
        await reading.promise;
        name = platform.created[0];
        expect(watched.count()).toBe(2); // recorded, then updated with the provider's id
        expect((await ledgerEntry(name!))?.leaseExpiresAt).toBe('2030-01-01T00:00:30.000Z');
        for (let beat = 1; beat <= 3; beat++) {
          clock += 10_000;
          const written = watched.next();
          await vi.advanceTimersByTimeAsync(10_000);
          await written;
          expect(watched.count()).toBe(2 + beat);
          expect((await ledgerEntry(name!))?.leaseExpiresAt).toBe(new Date(clock + 30_000).toISOString());
        }
        // Past the first lease and its margin, yet renewed: another engine keeps it.
        const b = await secondEngine(
          platform,
          () => new Date(t0 + 30_000 + LEDGER_LEASE_MARGIN_SECONDS * 1000 + 1),
        );
        try {
          const report = await b.engine.reconcile();
          expect(report.kept.map((k) => k.reason)).toEqual(['held-by-another-engine']);
          expect(report.released).toEqual([]);
        } finally {
          await b.close();
        }
      } finally {
        reads.open();
      }
      const result = await job;
      okTask(result, 'd1');
      const settled = watched.count(); // the entry became the retained base
      expect((await ledgerEntry(name!))?.state).toBe('retained');
      await vi.advanceTimersByTimeAsync(60_000);
      expect(watched.count()).toBe(settled); // no renewal once the job ended
    } finally {
      await engine?.close();
      engine = undefined;
      await own.close();
      vi.useRealTimers();
    }
  });

  it('reconciles an entry of the older format (no owner, no lease) as expired', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: CHUNK }] });
    await repository.store.put(
      'ledger/old-1.json',
      new TextEncoder().encode(
        JSON.stringify({
          id: 'old-1',
          kind: 'snapshot',
          platformId: platform.id,
          hostId: 'vm-1',
          name: 'drkit-old',
          state: 'pending',
          jobId: 'job-of-an-older-drkit',
          createdAt: '2024-06-01T10:20:00.000Z',
        }),
      ),
    );
    await platform.createSnapshot!({ host: platform.host, name: 'drkit-old', quiesce: 'none' });
    engine = createBackupEngine({ repository, platforms: [platform] });
    const report = await engine.reconcile();
    expect(report.released.map((e) => e.name)).toEqual(['drkit-old']);
    expect(platform.snapshotNames()).toEqual([]);
  });

  it('keeps fields and kinds it does not know, and reports an entry of a kind it cannot release', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: CHUNK }] });
    const entry = {
      id: 'attached-1',
      kind: 'attached-disk',
      platformId: platform.id,
      hostId: 'vm-1',
      name: 'drkit-attached',
      state: 'pending',
      jobId: 'job-of-a-newer-drkit',
      createdAt: '2030-01-01T00:00:00.000Z',
      attachedTo: 'proxy-vm-3',
    };
    await repository.store.put('ledger/attached-1.json', new TextEncoder().encode(JSON.stringify(entry)));
    const [listed] = await repository.ledger.list();
    expect(listed).toEqual(entry);
    await repository.ledger.update({ ...listed!, providerId: 'disk-7' });
    const [rewritten] = await repository.ledger.list();
    expect(rewritten).toEqual({ ...entry, providerId: 'disk-7' }); // the unknown field survived the rewrite
    engine = createBackupEngine({ repository, platforms: [platform] });
    const report = await engine.reconcile();
    expect(report.released).toEqual([]);
    expect(report.failed.map((f) => f.entry.id)).toEqual(['attached-1']);
    expect(String(report.failed[0]!.error)).toContain('attached-disk');
    expect(await repository.ledger.list()).toHaveLength(1);
  });
});
