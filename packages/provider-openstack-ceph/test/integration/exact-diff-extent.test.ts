// How exact an exact incremental of RBD is, on the real Ceph cluster of the global setup: a write inside the
// extent an object had at the base is reported to the byte; a write past that extent is reported from the
// object's end at the base (its start, when the object did not exist) to the end of the write, zeros in between.
// That is librbd's own diff (RADOS clone overlap covers only the base extent of an object), which `rbd diff
// --from-snap` shows too; it never reaches past the object. The contract suite's fixture declares one object as
// its `exactGranularityBytes` because of it (ceph-rbd.contract.test.ts).
import type { Change, Checkpoint, Disk, Extent, Host } from '@drkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CephRbdPlatform, createCephRbdPlatform } from '../../src/index.js';
import type { CephClusterDescription } from './ceph-cluster-description.js';
import {
  adminCommand,
  backupClusterOptions,
  cephCluster,
  rbdHelper,
  uniqueImageName,
} from './ceph-test-cluster.js';

const MiB = 1024 * 1024;
const OBJECT = 4 * MiB;

let cluster: CephClusterDescription;
const image = uniqueImageName('exact-extent');

beforeAll(() => {
  cluster = cephCluster();
});

afterAll(async () => {
  if (cluster) await rbdHelper(cluster, [{ op: 'remove', image }]).catch(() => {});
}, 120_000);

/** Reads the disk at a new host snapshot named `name` (from `base` when given): validity, checkpoint, changes. */
async function read(platform: CephRbdPlatform, host: Host, disk: Disk, name: string, base?: Checkpoint) {
  const snapshot = await platform.createSnapshot({ host, name, quiesce: 'none' });
  const diskSnapshot = snapshot.disks.find((entry) => entry.diskId === disk.id)!;
  await using session = await platform.changedBlockReader.open({
    disk,
    snapshot,
    diskSnapshot,
    chunkSize: MiB,
    ...(base ? { base } : {}),
  });
  const changes: Change[] = [];
  for await (const change of session.changes()) changes.push(change);
  return { validity: session.validity, checkpoint: session.checkpoint(), changes };
}

/** The data ranges of a change set, adjacent ones merged. */
function dataRanges(changes: readonly Change[]): Extent[] {
  const ranges: { offset: number; length: number }[] = [];
  for (const change of changes) {
    if (change.kind !== 'data') continue;
    const last = ranges.at(-1);
    if (last && last.offset + last.length === change.offset) last.length += change.data.length;
    else ranges.push({ offset: change.offset, length: change.data.length });
  }
  return ranges;
}

/** The offsets of the non-zero bytes of a change set's data. */
function nonZeroOffsets(changes: readonly Change[]): number[] {
  const offsets: number[] = [];
  for (const change of changes) {
    if (change.kind !== 'data') continue;
    change.data.forEach((byte, at) => {
      if (byte !== 0) offsets.push(change.offset + at);
    });
  }
  return offsets;
}

describe('an exact RBD incremental (Ceph 16 memstore, client.backup)', { timeout: 120_000 }, () => {
  it('a write inside an object is reported to the byte, one past its end from the end it had at the base', async () => {
    await rbdHelper(cluster, [
      { op: 'create', image, size: 3 * OBJECT, order: 22 },
      // Object 0 holds [0, 1 500 000); object 1 is whole; object 2 does not exist.
      { op: 'fill', image, offset: 0, length: 1_500_000, seed: 41 },
      { op: 'fill', image, offset: OBJECT, length: OBJECT, seed: 42 },
    ]);
    const platform = createCephRbdPlatform({
      id: 'ceph-exact-extent',
      clusters: [backupClusterOptions(cluster, { incrementalMode: 'exact' })],
      hosts: [{ id: 'exact-extent', name: 'exact-extent', images: [`${cluster.pool}/${image}`] }],
    });
    let host: Host | undefined;
    for await (const entry of platform.hosts()) if (entry.id === 'exact-extent') host = entry;
    if (!host) throw new Error('the platform does not list host exact-extent');
    const disk = host.disks[0]!;
    const full = await read(platform, host, disk, 'drkit-extent-1');
    expect(full.validity).toEqual({ kind: 'full', reason: 'first-backup' });

    await rbdHelper(cluster, [
      { op: 'write', image, offset: 2_099_621, data: Uint8Array.of(0xa1) },
      { op: 'write', image, offset: OBJECT + MiB, data: new Uint8Array(100).fill(0xa2) },
      { op: 'write', image, offset: 2 * OBJECT + 2 * MiB, data: Uint8Array.of(0xa3) },
    ]);
    const incremental = await read(platform, host, disk, 'drkit-extent-2', full.checkpoint);
    expect(incremental.validity).toEqual({ kind: 'exact' });
    const expected = [
      // Past the end of object 0: from its end at the base to the written byte.
      { offset: 1_500_000, length: 2_099_622 - 1_500_000 },
      // Inside object 1: the 100 bytes written.
      { offset: OBJECT + MiB, length: 100 },
      // Object 2 did not exist: from its start to the written byte.
      { offset: 2 * OBJECT, length: 2 * MiB + 1 },
    ];
    expect(dataRanges(incremental.changes)).toEqual(expected);
    // The bytes around the written ones are zeros (the object was shorter, or absent, at the base).
    expect(nonZeroOffsets(incremental.changes)).toEqual([
      2_099_621,
      ...Array.from({ length: 100 }, (_, at) => OBJECT + MiB + at),
      2 * OBJECT + 2 * MiB,
    ]);
    // librbd's own diff says the same: this is not the reader's doing.
    const diff = JSON.parse(
      await adminCommand(cluster, [
        'diff',
        '--format',
        'json',
        '--from-snap',
        'drkit-extent-1',
        `${cluster.pool}/${image}@drkit-extent-2`,
      ]),
    ) as { offset: number; length: number; exists: string }[];
    expect(diff).toEqual(expected.map((range) => ({ ...range, exists: 'true' })));

    await platform.releaseSnapshot({ hostId: host.id, name: 'drkit-extent-1' });
    await platform.releaseSnapshot({ hostId: host.id, name: 'drkit-extent-2' });
  });
});
