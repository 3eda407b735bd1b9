// The provider through the engine against the AWS emulator: full, incremental and restores of every point.
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createBackupEngine, type Repository } from '@drkit/core';
import { afterEach, beforeEach, expect, it, vi } from 'vitest';

vi.setConfig({ testTimeout: 120_000 });

import {
  type AwsTestBed,
  BLOCK,
  openTempRepository,
  pattern,
  startAwsTestBed,
  succeeded,
} from './aws-test-setup.js';

let bed: AwsTestBed;
let dir: string;
let repository: Repository;

let temp: Awaited<ReturnType<typeof openTempRepository>>;

beforeEach(async () => {
  bed = await startAwsTestBed();
  temp = await openTempRepository('drkit-aws-e2e-');
  ({ dir, repository } = temp);
});

afterEach(async () => {
  await temp.close();
  await bed.close();
});

/** Compares a restored image with an EBS snapshot of the emulator, 4 MiB at a time (memcmp, no hashing). */
async function expectRestoredEquals(
  path: string,
  expected: { snapshotId: string },
  what: string,
): Promise<void> {
  const file = await open(path, 'r');
  try {
    const { size } = await file.stat();
    expect(size, `${what}: size`).toBe(bed.emulator.snapshot(expected.snapshotId)!.sizeGiB * 1024 ** 3);
    const buffer = Buffer.alloc(4 * 1024 * 1024);
    for (let offset = 0; offset < size; offset += buffer.length) {
      const { bytesRead } = await file.read(buffer, 0, buffer.length, offset);
      const reference = bed.emulator.readSnapshot(expected.snapshotId, offset, bytesRead);
      if (!buffer.subarray(0, bytesRead).equals(reference))
        throw new Error(`${what}: differs in the 4 MiB at ${offset}`);
    }
  } finally {
    await file.close();
  }
}

it('backs up an instance in full, then only the changed blocks, and every point restores byte for byte', async () => {
  const { emulator } = bed;
  const root = emulator.createVolume({ sizeGiB: 1 });
  const data = emulator.createVolume({ sizeGiB: 1, volumeType: 'io2', encrypted: true });
  for (const index of [0, 1, 2, 40, 41, 1023]) emulator.writeVolume(root, index * BLOCK, pattern(index));
  for (const index of [5, 6, 500]) emulator.writeVolume(data, index * BLOCK, pattern(100 + index));
  const instanceId = emulator.createInstance({
    name: 'db-1',
    volumes: [{ volumeId: root }, { volumeId: data }],
  });
  const platform = bed.platform({ maxConcurrentReads: 8 });
  await using engine = createBackupEngine({ repository, platforms: [platform], chunkSize: 1024 * 1024 });

  const snapshotsOf = () => new Map(emulator.snapshots().map((s) => [s.volumeId, s.id]));
  const expected: { pointId: string; snapshotId: string }[] = [];
  const first = succeeded(await engine.backup());
  expect(first).toHaveLength(2);
  const firstSnapshots = snapshotsOf();
  for (const task of first) {
    expect(task.hostId).toBe(instanceId);
    expect(task.result.validity).toEqual({ kind: 'full', reason: 'first-backup' });
    expect(task.result.consistency).toBe('host');
    expect(task.result.capacityBytes).toBe(1024 ** 3);
    expect(emulator.blockReads(firstSnapshots.get(task.diskId)!).size).toBe(
      emulator.writtenBlocks(task.diskId).length,
    );
    expect(task.result.bytesRead).toBe(emulator.writtenBlocks(task.diskId).length * BLOCK);
    expected.push({ pointId: task.result.pointId, snapshotId: firstSnapshots.get(task.diskId)! });
  }
  // Every point restores as the snapshot it was read from (the first ones now, before their snapshots go).
  for (const [i, point] of expected.entries()) {
    const path = join(dir, `first-${i}.img`);
    await repository.restore(point.pointId, { path });
    await expectRestoredEquals(path, { snapshotId: point.snapshotId }, `first point ${i}`);
    await rm(path);
  }
  // The snapshots are kept as the base of the next backup.
  expect(emulator.snapshots().map((s) => s.status)).toEqual(['completed', 'completed']);

  // Change some blocks: a rewrite, a partial write, a new block, a discard, and nothing on the data volume.
  emulator.writeVolume(root, 1 * BLOCK, pattern(7001));
  emulator.writeVolume(root, 40 * BLOCK + 4096, Buffer.from('a few bytes'));
  emulator.writeVolume(root, 700 * BLOCK, pattern(7002));
  emulator.discardVolume(root, 2 * BLOCK, BLOCK);
  emulator.resetStats();
  const second = succeeded(await engine.backup());
  const secondSnapshots = snapshotsOf();
  const byDisk = new Map(second.map((t) => [t.diskId, t]));
  expect(byDisk.get(root)!.result.validity).toEqual({ kind: 'exact' });
  expect(byDisk.get(data)!.result.validity).toEqual({ kind: 'exact' });
  // Only the changed blocks were read: 1, 40 and 700 (2 is now unwritten: a zero extent, nothing to read).
  expect([...emulator.blockReads(secondSnapshots.get(root)!).keys()].sort((a, b) => a - b)).toEqual([
    1, 40, 700,
  ]);
  expect(emulator.blockReads(secondSnapshots.get(data)!).size).toBe(0);
  expect(byDisk.get(root)!.result.bytesRead).toBe(3 * BLOCK);
  for (const task of second) {
    expected.push({ pointId: task.result.pointId, snapshotId: secondSnapshots.get(task.diskId)! });
  }
  expect(emulator.stats().openBodies).toBe(0);

  for (const [i, point] of expected.entries()) {
    if (i < 2) continue;
    const path = join(dir, `restore-${i}.img`);
    await repository.restore(point.pointId, { path });
    await expectRestoredEquals(path, { snapshotId: point.snapshotId }, `incremental point ${i}`);
    await rm(path);
  }
  // The first snapshots were released once the new ones became the base.
  expect(
    emulator
      .snapshots()
      .map((s) => s.id)
      .sort(),
  ).toEqual([...secondSnapshots.values()].sort());
});

it('reads in full, saying why, when the base snapshot was deleted behind its back', async () => {
  const { emulator } = bed;
  const volumeId = emulator.createVolume({ sizeGiB: 1 });
  emulator.writeVolume(volumeId, 3 * BLOCK, pattern(3));
  emulator.createInstance({ name: 'web-1', volumes: [{ volumeId }] });
  const platform = bed.platform();
  await using engine = createBackupEngine({ repository, platforms: [platform], chunkSize: 1024 * 1024 });
  succeeded(await engine.backup());
  for (const snapshot of emulator.snapshots()) emulator.deleteSnapshot(snapshot.id);
  emulator.writeVolume(volumeId, 9 * BLOCK, pattern(9));
  const [task] = succeeded(await engine.backup());
  expect(task!.result.validity).toMatchObject({ kind: 'full', reason: 'base-snapshot-missing' });
  const path = join(dir, 'restore.img');
  await repository.restore(task!.result.pointId, { path });
  await expectRestoredEquals(path, { snapshotId: emulator.snapshots()[0]!.id }, 'the full point');
});
