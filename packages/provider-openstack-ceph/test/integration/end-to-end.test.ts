// End to end on the real Ceph cluster of the global setup: the backup engine with a local-folder repository
// backs up a host of two RBD images as the least-privilege client.backup user; the test changes the images behind
// drkit's back through librbd (writes at known offsets, a whole-object and a partial discard, the last byte,
// grow and shrink, a base snapshot removed, an image recreated) and restores every point, comparing it with
// `rbd export` of the snapshot the point was read from.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type BackupEngine,
  type BackupJobResult,
  createBackupEngine,
  createLocalFolderStore,
  type DiskTaskResult,
  openRepository,
  QuiesceFailedError,
  type Repository,
} from '@drkit/core';
import { hashDiskImage } from '@drkit/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CephIncrementalMode, createCephRbdPlatform } from '../../src/index.js';
import type { CephClusterDescription } from './ceph-cluster-description.js';
import {
  adminCommand,
  backupClusterOptions,
  cephCluster,
  exportSha256,
  rbdHelper,
  snapshotNames,
  uniqueImageName,
} from './ceph-test-cluster.js';

const MiB = 1024 * 1024;
const OBJECT = 4 * MiB;

let cluster: CephClusterDescription;
let dir: string;
let repository: Repository;
const images: string[] = [];

// The hooks talk to the real cluster too (python3-rbd removes the images): generous budgets for 2 busy cores.
beforeAll(async () => {
  cluster = cephCluster();
  dir = await mkdtemp(join(tmpdir(), 'drkit-ceph-e2e-'));
  repository = await openRepository({
    store: createLocalFolderStore({ path: join(dir, 'repo') }),
    create: true,
  });
}, 120_000);

afterAll(async () => {
  await repository?.close();
  if (cluster)
    await rbdHelper(
      cluster,
      images.map((image) => ({ op: 'remove' as const, image })),
    ).catch(() => {});
  if (dir) await rm(dir, { recursive: true, force: true });
}, 120_000);

/** A host of RBD images backed up by its own engine, with what each point must restore to. */
class Scenario {
  readonly engine: BackupEngine;
  /** Point id → SHA-256 and size of `rbd export IMAGE@SNAPSHOT` right after the backup. */
  readonly expected = new Map<string, { sha256: string; size: number }>();

  constructor(
    readonly hostId: string,
    readonly imageNames: readonly string[],
    incrementalMode: CephIncrementalMode,
  ) {
    const platform = createCephRbdPlatform({
      id: `ceph-e2e-${hostId}`,
      clusters: [backupClusterOptions(cluster, { incrementalMode })],
      hosts: [{ id: hostId, name: hostId, images: imageNames.map((image) => `${cluster.pool}/${image}`) }],
    });
    this.engine = createBackupEngine({ repository, platforms: [platform] });
  }

  diskId(image: string): string {
    return `test/${cluster.pool}/${image}`;
  }

  /** Backs up the host; returns each disk's result by image name, after checking snapshots and the ledger. */
  async backup(): Promise<Map<string, DiskTaskResult>> {
    const job: BackupJobResult = await this.engine.backup({ hosts: [this.hostId] });
    const results = new Map<string, DiskTaskResult>();
    for (const task of job.tasks) {
      if (task.status === 'failed') throw task.error;
      if (task.status === 'skipped') throw new Error(`disk ${task.diskId} skipped: ${task.detail}`);
      const image = this.imageNames.find((name) => this.diskId(name) === task.diskId)!;
      results.set(image, task.result);
    }
    expect(results.size).toBe(this.imageNames.length);
    for (const [image, result] of results) {
      const point = await repository.point(result.pointId);
      const snapshot = point.checkpoint?.snapshotName;
      expect(snapshot, 'the checkpoint names the snapshot it keeps as the next base').toMatch(/^drkit-/);
      // Only the newest drkit snapshot remains on each image: older ones were released through the ledger.
      expect(await snapshotNames(cluster, image)).toEqual([snapshot]);
      this.expected.set(result.pointId, await exportSha256(cluster, `${image}@${snapshot}`));
    }
    const ledger = (await repository.ledger.list()).filter((entry) => entry.hostId === this.hostId);
    expect(ledger.map((entry) => entry.state)).toEqual(['retained']);
    return results;
  }

  /** Restores every point of the host and compares it with the export of its snapshot. */
  async restoreAll(): Promise<number> {
    let count = 0;
    for (const image of this.imageNames) {
      const points = await repository.points({ hostId: this.hostId, diskId: this.diskId(image) });
      for (const point of points) {
        const target = join(dir, `restore-${point.id}.img`);
        const { bytes } = await repository.restore(point.id, { path: target });
        const expected = this.expected.get(point.id);
        expect(expected, `an expected content for point ${point.id}`).toBeDefined();
        expect(bytes).toBe(expected!.size);
        expect(point.capacityBytes).toBe(expected!.size);
        expect(await hashDiskImage(target), `point ${point.id} of ${image}`).toBe(expected!.sha256);
        await rm(target);
        count++;
      }
    }
    return count;
  }
}

describe('end to end on a real Ceph cluster (engine + local folder repository, client.backup)', () => {
  it('backs up two images through writes, discards, the last byte, grow, shrink and a deleted base, and restores every point', async () => {
    const root = uniqueImageName('e2e-root');
    const data = uniqueImageName('e2e-data');
    images.push(root, data);
    const rootSize = 20 * MiB + 12_345;
    const dataSize = 12 * MiB;
    await rbdHelper(cluster, [
      { op: 'create', image: root, size: rootSize },
      { op: 'create', image: data, size: dataSize },
      { op: 'fill', image: root, offset: 0, length: rootSize, seed: 11 },
      { op: 'fill', image: data, offset: MiB, length: 5 * MiB, seed: 12 },
      // The last object exists before the incremental: a write that creates an object makes rbd report it from
      // the object's start to the end of the write (zeros before it; measured on Ceph 16, see
      // exact-diff-extent.test.ts), which would blur the byte count below.
      { op: 'fill', image: data, offset: dataSize - MiB, length: MiB, seed: 13 },
    ]);
    const scenario = new Scenario(uniqueImageName('vm'), [root, data], 'exact');
    try {
      // 1. Full.
      const full = await scenario.backup();
      for (const result of full.values()) {
        expect(result.validity).toEqual({ kind: 'full', reason: 'first-backup' });
      }
      expect(full.get(root)!.capacityBytes).toBe(rootSize);
      expect(full.get(data)!.capacityBytes).toBe(dataSize);

      // 2. Writes at known offsets, a whole-object discard, a partial discard, the last byte of each image.
      const written = 4096 + 300_000 + 1 + 100 + 1;
      await rbdHelper(cluster, [
        { op: 'write', image: root, offset: MiB + 100, data: new Uint8Array(4096).fill(0x11) },
        { op: 'fill', image: root, offset: 9 * MiB, length: 300_000, seed: 21 },
        { op: 'discard', image: root, offset: OBJECT, length: OBJECT },
        { op: 'discard', image: root, offset: 13 * MiB, length: 64 * 1024 },
        { op: 'write', image: root, offset: rootSize - 1, data: Uint8Array.of(0xee) },
        { op: 'write', image: data, offset: 3 * MiB + 1, data: new Uint8Array(100).fill(0x22) },
        { op: 'write', image: data, offset: dataSize - 1, data: Uint8Array.of(0xdd) },
      ]);
      const second = await scenario.backup();
      for (const result of second.values()) expect(result.validity).toEqual({ kind: 'exact' });
      const bytesRead = second.get(root)!.bytesRead + second.get(data)!.bytesRead;
      // An exact diff reads what was written; discards come as zero records and are not read.
      expect(bytesRead).toBeGreaterThanOrEqual(written);
      expect(bytesRead).toBeLessThan(written + 64 * 1024);
      console.log(`exact incremental: ${written} bytes written, ${bytesRead} bytes read from export-diff`);

      // 3. Grow the root (and write in the new space), shrink the data image.
      const grownRoot = rootSize + 3 * MiB + 5;
      const shrunkData = dataSize - 2 * MiB - 7;
      await rbdHelper(cluster, [
        { op: 'resize', image: root, size: grownRoot },
        { op: 'write', image: root, offset: rootSize + 1000, data: new Uint8Array(5000).fill(0x33) },
        { op: 'write', image: root, offset: grownRoot - 1, data: Uint8Array.of(0x44) },
        { op: 'resize', image: data, size: shrunkData },
      ]);
      const third = await scenario.backup();
      for (const result of third.values()) expect(result.validity).toEqual({ kind: 'exact' });
      expect(third.get(root)!.capacityBytes).toBe(grownRoot);
      expect(third.get(data)!.capacityBytes).toBe(shrunkData);

      // 4. The other way round: shrink the root below its first size, grow the data image again.
      const shrunkRoot = 15 * MiB + 1;
      const grownData = shrunkData + 5 * MiB + 3;
      await rbdHelper(cluster, [
        { op: 'resize', image: root, size: shrunkRoot },
        { op: 'resize', image: data, size: grownData },
        { op: 'write', image: data, offset: grownData - 2, data: Uint8Array.of(1, 2) },
      ]);
      const fourth = await scenario.backup();
      expect(fourth.get(root)!.capacityBytes).toBe(shrunkRoot);
      expect(fourth.get(data)!.capacityBytes).toBe(grownData);

      // 5. The base snapshot of the data image is removed behind drkit's back: a full read, reason recorded.
      const base = (await snapshotNames(cluster, data))[0]!;
      await adminCommand(cluster, ['snap', 'rm', '--no-progress', `${cluster.pool}/${data}@${base}`]);
      await rbdHelper(cluster, [
        { op: 'write', image: data, offset: 7, data: new Uint8Array(10).fill(0x55) },
      ]);
      const fifth = await scenario.backup();
      expect(fifth.get(root)!.validity).toEqual({ kind: 'exact' });
      expect(fifth.get(data)!.validity).toMatchObject({ kind: 'full', reason: 'base-snapshot-missing' });
      const recorded = await repository.point(fifth.get(data)!.pointId);
      expect(recorded.validity).toMatchObject({ kind: 'full', reason: 'base-snapshot-missing' });

      // 6. Nothing changed: exact, nothing read, nothing written.
      const idle = await scenario.backup();
      for (const result of idle.values()) {
        expect(result.validity).toEqual({ kind: 'exact' });
        expect(result.bytesRead).toBe(0);
        expect(result.bytesWritten).toBe(0);
      }

      // Every point restores to the exported snapshot it was read from.
      expect(await scenario.restoreAll()).toBe(12);
      const report = await repository.verify();
      expect(report.ok).toBe(true);
    } finally {
      await scenario.engine.close();
    }
  }, 300_000);

  it('fast mode reads whole changed objects (superset), and falls back to exact when the object map is invalid', async () => {
    const image = uniqueImageName('e2e-fast');
    images.push(image);
    const size = 16 * MiB;
    await rbdHelper(cluster, [
      { op: 'create', image, size },
      { op: 'fill', image, offset: 0, length: size, seed: 31 },
    ]);
    const scenario = new Scenario(uniqueImageName('fast'), [image], 'fast');
    try {
      expect((await scenario.backup()).get(image)!.validity).toMatchObject({ kind: 'full' });

      // Two small writes in two objects: a whole-object diff reads both objects in full.
      await rbdHelper(cluster, [
        { op: 'write', image, offset: 100, data: new Uint8Array(10).fill(1) },
        { op: 'write', image, offset: 2 * OBJECT + 5, data: new Uint8Array(10).fill(2) },
      ]);
      const superset = (await scenario.backup()).get(image)!;
      expect(superset.validity).toMatchObject({ kind: 'superset' });
      expect(superset.bytesRead).toBe(2 * OBJECT);
      // The engine recognises the unchanged chunks of those objects by their hash.
      expect(superset.bytesSkippedUnchanged).toBeGreaterThan(0);

      // An invalid object map (disabled and enabled again, not rebuilt): exact, with the reason.
      await rbdHelper(cluster, [
        { op: 'invalidate-object-map', image },
        { op: 'write', image, offset: OBJECT + 3, data: new Uint8Array(3).fill(3) },
      ]);
      const fallback = (await scenario.backup()).get(image)!;
      expect(fallback.validity.kind).toBe('exact');
      expect(fallback.validity.detail).toMatch(/fast mode fell back to an exact diff because .*object map/);
      expect(fallback.bytesRead).toBeLessThan(OBJECT);
      expect(await scenario.restoreAll()).toBe(3);
    } finally {
      await scenario.engine.close();
    }
  }, 180_000);

  it('an image deleted and created again under the same name is read in full (disk-recreated)', async () => {
    const image = uniqueImageName('e2e-recreated');
    images.push(image);
    const size = 6 * MiB;
    await rbdHelper(cluster, [
      { op: 'create', image, size },
      { op: 'fill', image, offset: 0, length: MiB, seed: 41 },
    ]);
    const scenario = new Scenario(uniqueImageName('recreated'), [image], 'exact');
    try {
      await scenario.backup();
      await rbdHelper(cluster, [
        { op: 'remove', image },
        { op: 'create', image, size: size + MiB },
        { op: 'fill', image, offset: 2 * MiB, length: MiB, seed: 42 },
      ]);
      const next = (await scenario.backup()).get(image)!;
      expect(next.validity).toMatchObject({ kind: 'full', reason: 'disk-recreated' });
      expect(next.capacityBytes).toBe(size + MiB);
      expect(await scenario.restoreAll()).toBe(2);
    } finally {
      await scenario.engine.close();
    }
  }, 120_000);

  it("a job backs up a host's images and reports a missing one as skipped; one that requires quiescing fails and creates nothing", async () => {
    const image = uniqueImageName('e2e-skip');
    const missing = uniqueImageName('e2e-missing');
    images.push(image);
    await rbdHelper(cluster, [
      { op: 'create', image, size: 4 * MiB },
      { op: 'fill', image, offset: 0, length: MiB, seed: 51 },
    ]);
    const hostId = uniqueImageName('skip');
    const platform = createCephRbdPlatform({
      id: `ceph-e2e-${hostId}`,
      clusters: [backupClusterOptions(cluster)],
      hosts: [
        { id: hostId, name: hostId, images: [`${cluster.pool}/${image}`, `${cluster.pool}/${missing}`] },
      ],
    });
    const engine = createBackupEngine({ repository, platforms: [platform] });
    try {
      // Ceph cannot quiesce: the engine fails the host's disk itself and no snapshot is taken.
      const required = await engine.backup({ hosts: [hostId], quiesce: 'required' });
      expect([required.succeeded, required.failed, required.skipped]).toEqual([0, 1, 1]);
      const refused = required.tasks.find((task) => task.status === 'failed');
      expect(refused?.status === 'failed' && QuiesceFailedError.isInstance(refused.error)).toBe(true);
      expect(await snapshotNames(cluster, image)).toEqual([]);
      expect((await repository.ledger.list()).filter((entry) => entry.hostId === hostId)).toEqual([]);

      const job = await engine.backup({ hosts: [hostId] });
      expect([job.succeeded, job.failed, job.skipped]).toEqual([1, 0, 1]);
      expect(job.tasks.find((task) => task.status === 'skipped')).toMatchObject({
        diskId: `test/${cluster.pool}/${missing}`,
        reason: 'backing-missing',
        detail: expect.stringContaining(`image ${cluster.pool}/${missing} does not exist`),
      });
      const done = job.tasks.find((task) => task.status === 'succeeded');
      if (done?.status !== 'succeeded') throw new Error('no disk was backed up');
      expect(done.result.consistency).toBe('disk');
      expect(done.result.validity).toEqual({ kind: 'full', reason: 'first-backup' });
      const point = await repository.point(done.result.pointId);
      const snapshot = point.checkpoint!.snapshotName!;
      expect(await snapshotNames(cluster, image)).toEqual([snapshot]);
      const target = join(dir, `restore-${point.id}.img`);
      await repository.restore(point.id, { path: target });
      expect(await hashDiskImage(target)).toBe((await exportSha256(cluster, `${image}@${snapshot}`)).sha256);
      await rm(target);
    } finally {
      await engine.close();
    }
  }, 120_000);
});
