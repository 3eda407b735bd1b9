import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type BackupEngine,
  type BackupJobResult,
  createBackupEngine,
  createLocalFolderStore,
  openRepository,
  type Repository,
  RepositoryCorruptError,
} from '../src/index.js';
import { closeTempRepository, openTempRepository, parsePointFile, pointFile } from './engine-bed.js';
import { createMemoryPlatform } from './memory-platform.js';

const CHUNK = 256 * 1024;

let dir: string;
let repository: Repository;
let engine: BackupEngine | undefined;

beforeEach(async () => {
  ({ dir, repository } = await openTempRepository('drkit-pointtime-'));
});

afterEach(async () => {
  await closeTempRepository({ dir, repository, engine });
  engine = undefined;
});

function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

function succeeded(result: BackupJobResult, diskId: string) {
  const outcome = result.tasks.find((t) => t.diskId === diskId);
  if (outcome?.status !== 'succeeded') throw new Error(`disk ${diskId} failed: ${String(outcome)}`);
  return outcome;
}

/** Waits (without asserting on elapsed time) until the wall clock has moved past `ms`. */
async function clockPast(ms: number): Promise<void> {
  while (Date.now() <= ms) await new Promise((resolve) => setImmediate(resolve));
}

describe('a point records when its data is from, and which job and task made it', { timeout: 60_000 }, () => {
  it('records snapshotAt just before the host snapshot, not at the commit, with the job, task and snapshot', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: 2 * CHUNK }] });
    platform.write('d1', 0, new Uint8Array(CHUNK).fill(7));
    // The engine's clock stands still at t0 until the read has begun, then moves on by a day.
    const t0 = Date.parse('2030-01-01T12:00:00.000Z');
    let clock = t0;
    engine = createBackupEngine({
      repository,
      platforms: [platform],
      chunkSize: CHUNK,
      now: () => new Date(clock),
    });
    let snapshotCreatedAt: number | undefined;
    platform.onCreateSnapshot = () => {
      snapshotCreatedAt = Date.now();
    };
    const reads = gate();
    platform.gates.set('d1', reads.promise);
    const reading = gate();
    platform.onChangesStart = () => reading.open();
    const job = engine.backup();
    await reading.promise;
    clock = t0 + 24 * 60 * 60 * 1000;
    await clockPast(snapshotCreatedAt!);
    reads.open();
    const result = await job;
    const outcome = succeeded(result, 'd1');
    const point = await repository.point(outcome.result.pointId);
    expect(point.snapshotAt).toBe(new Date(t0).toISOString());
    expect(point.snapshotAt).not.toBe(point.createdAt);
    expect(Date.parse(point.createdAt)).toBeGreaterThan(snapshotCreatedAt!);
    expect(point.jobId).toBe(result.jobId);
    expect(point.taskId).toBe(outcome.taskId);
    expect(point.snapshotName).toBe(platform.created[0]);
    expect(point.snapshotName).toBeDefined();
    // And as a reader that did not see the commit reads it back from the store.
    const reader = await openRepository({ store: createLocalFolderStore({ path: join(dir, 'repo') }) });
    try {
      expect(await reader.point(point.id)).toEqual(point);
    } finally {
      await reader.close();
    }
  });

  it('with the real clock: snapshotAt <= the time createSnapshot was called < createdAt', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: CHUNK }] });
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    let snapshotCreatedAt: number | undefined;
    platform.onCreateSnapshot = () => {
      snapshotCreatedAt = Date.now();
    };
    const reads = gate();
    platform.gates.set('d1', reads.promise);
    const reading = gate();
    platform.onChangesStart = () => reading.open();
    const job = engine.backup();
    await reading.promise;
    await clockPast(snapshotCreatedAt!);
    reads.open();
    const point = await repository.point(succeeded(await job, 'd1').result.pointId);
    expect(Date.parse(point.snapshotAt)).toBeLessThanOrEqual(snapshotCreatedAt!);
    expect(snapshotCreatedAt!).toBeLessThan(Date.parse(point.createdAt));
  });

  it('groups the points of a two-disk host from one job into one host point', async () => {
    const platform = createMemoryPlatform({
      hosts: [
        {
          id: 'vm-1',
          disks: [
            { id: 'a', capacity: CHUNK },
            { id: 'b', capacity: CHUNK },
          ],
        },
        { id: 'vm-2', disks: [{ id: 'c', capacity: CHUNK }] },
      ],
    });
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    const first = await engine.backup();
    const second = await engine.backup({ hosts: ['vm-1'] });
    const groups = await repository.hostPoints({ hostId: 'vm-1' });
    expect(groups).toHaveLength(2);
    // Oldest first, like points().
    expect(groups.map((g) => g.jobId)).toEqual([first.jobId, second.jobId]);
    for (const [group, result] of [
      [groups[0]!, first],
      [groups[1]!, second],
    ] as const) {
      expect(group.platformId).toBe('memory');
      expect(group.hostId).toBe('vm-1');
      expect(group.points.map((p) => p.diskId).sort()).toEqual(['a', 'b']);
      expect(group.points.map((p) => p.id).sort()).toEqual(
        ['a', 'b'].map((d) => succeeded(result, d).result.pointId).sort(),
      );
      expect(group.points.every((p) => p.snapshotAt === group.snapshotAt)).toBe(true);
    }
    // The first job's two hosts run in parallel, so either may commit first; the second job's host point is last,
    // and host points come in the order of their first points.
    const all = await repository.hostPoints();
    expect(all.map((g) => g.hostId).sort()).toEqual(['vm-1', 'vm-1', 'vm-2']);
    expect(all.map((g) => g.jobId)).toEqual([first.jobId, first.jobId, second.jobId]);
    const firstIds = all.map((g) => g.points[0]!.id);
    expect(firstIds).toEqual([...firstIds].sort());
    expect(await repository.hostPoints({ platformId: 'other' })).toEqual([]);
  });

  it('reads a point written without the new fields with snapshotAt = createdAt, each one a host point of its own', async () => {
    const platform = createMemoryPlatform({
      disks: [
        { id: 'a', capacity: CHUNK },
        { id: 'b', capacity: CHUNK },
      ],
    });
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    await engine.backup();
    // Rewrite the metadata as an older drkit wrote it.
    const folder = join(dir, 'repo', 'points');
    const ids = (await repository.points()).map((p) => p.id);
    for (const id of ids) {
      const file = join(folder, `${id}.json`);
      const {
        snapshotAt: _s,
        jobId: _j,
        taskId: _t,
        snapshotName: _n,
        ...old
      } = parsePointFile(await readFile(file, 'utf8'));
      await writeFile(file, pointFile(old));
    }
    const reader = await openRepository({ store: createLocalFolderStore({ path: join(dir, 'repo') }) });
    try {
      const points = await reader.points();
      expect(points).toHaveLength(2);
      for (const point of points) {
        expect(point.snapshotAt).toBe(point.createdAt);
        expect(point.jobId).toBeUndefined();
        expect(point.taskId).toBeUndefined();
        expect(point.snapshotName).toBeUndefined();
      }
      const groups = await reader.hostPoints();
      expect(groups.map((g) => g.points.map((p) => p.id))).toEqual(ids.map((id) => [id]));
      expect(groups.every((g) => g.jobId === undefined)).toBe(true);
    } finally {
      await reader.close();
    }
  });

  it('checks the new fields on read', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'a', capacity: CHUNK }] });
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    await engine.backup();
    const id = (await repository.points())[0]!.id;
    const file = join(dir, 'repo', 'points', `${id}.json`);
    const good = parsePointFile(await readFile(file, 'utf8'));
    // Fields this drkit does not know are ignored (format version 1 stays readable by older and newer readers).
    await writeFile(file, pointFile({ ...good, fieldOfALaterDrkit: { any: 'thing' } }));
    const tolerant = await openRepository({ store: createLocalFolderStore({ path: join(dir, 'repo') }) });
    try {
      expect((await tolerant.point(id)).snapshotAt).toBe(good.snapshotAt);
    } finally {
      await tolerant.close();
    }
    for (const [field, value] of [
      ['snapshotAt', 'yesterday'],
      ['jobId', ''],
      ['taskId', 7],
      ['snapshotName', ''],
    ] as const) {
      await writeFile(file, pointFile({ ...good, [field]: value }));
      const reader = await openRepository({ store: createLocalFolderStore({ path: join(dir, 'repo') }) });
      try {
        const error = await reader.point(id).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(RepositoryCorruptError.isInstance(error)).toBe(true);
        expect((error as Error).message).toContain(field);
      } finally {
        await reader.close();
      }
    }
  });
});
