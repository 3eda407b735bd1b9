// The provider through the backup engine against vcsim (govmomi 0.24.2 with the project's launcher), over HTTPS
// datastore ranges: content uploaded through the datastore file service (vcsim's disks start empty), a full
// backup, blocks changed, incrementals that read only the changed areas, every point restored byte for byte.
// Change ids and changed areas are the project's own extension of vcsim (scripts/peers/vcsim/cbt.go: 64 KiB block
// hashes remembered per change id at snapshot time, written from the vSphere API reference), not vcsim's.
import { createBackupEngine } from '@drkit/core';
import { expect, it, vi } from 'vitest';
import type { VmwareDiskSnapshotRef } from '../../src/index.js';
import { fillPattern, patternedImage } from './vcsim-disk.js';
import { useEngineFixture } from './vcsim-fixtures.js';

vi.setConfig({ testTimeout: 120_000 });

const KiB = 1024;
const MiB = 1024 * KiB;
const BLOCK = 64 * KiB;

const fx = useEngineFixture('drkit-vmware-e2e-');
const { succeeded, expectRestores } = fx;

it('backs up a VM disk in full, then only the changed areas, and every point restores byte for byte', async () => {
  const disk = await fx.startDisk({
    cbtPageBytes: 1 * MiB,
    initial: (capacity) => patternedImage(capacity, [0, 1, 5, 20, 63], 11),
  });
  const { host } = disk;
  await using engine = createBackupEngine({
    repository: fx.repository,
    platforms: [disk.platform],
    chunkSize: MiB,
  });
  const points: { pointId: string; image: Uint8Array }[] = [];

  const full = succeeded(await engine.backup({ hosts: [host.id], quiesce: 'none' }));
  expect(full.validity).toEqual({ kind: 'full', reason: 'first-backup' });
  expect(full.capacityBytes).toBe(4 * MiB);
  // "*": only the allocated areas are read, five 64 KiB blocks of a 4 MiB disk.
  expect(full.bytesRead).toBe(5 * BLOCK);
  points.push({ pointId: full.pointId, image: Uint8Array.from(disk.image) });

  // A rewritten block, a new one, a few bytes inside a block, and the last byte.
  fillPattern(disk.image, 1 * BLOCK, BLOCK, 700);
  fillPattern(disk.image, 7 * BLOCK, BLOCK, 701);
  disk.image.set(new TextEncoder().encode('a few bytes'), 20 * BLOCK + 4096);
  disk.image[disk.capacityBytes - 1] = disk.image[disk.capacityBytes - 1]! ^ 0x5a || 1;
  await disk.upload();
  const incremental = succeeded(await engine.backup({ hosts: [host.id], quiesce: 'none' }));
  expect(incremental.validity).toEqual({ kind: 'exact' });
  // Exactly the changed areas (the launcher tracks 64 KiB blocks): 1, 7, 20 and 63.
  expect(incremental.bytesRead).toBe(4 * BLOCK);
  points.push({ pointId: incremental.pointId, image: Uint8Array.from(disk.image) });

  const quiet = succeeded(await engine.backup({ hosts: [host.id], quiesce: 'none' }));
  expect(quiet.validity).toEqual({ kind: 'exact' });
  expect(quiet.bytesRead).toBe(0);
  points.push({ pointId: quiet.pointId, image: Uint8Array.from(disk.image) });

  // Change tracking turned off and on behind drkit's back: a new change id epoch, the old one refused.
  const vm = { type: 'VirtualMachine', value: host.attributes!['vmware.moref']! };
  await disk.admin.reconfigure(vm, '<changeTrackingEnabled>false</changeTrackingEnabled>');
  await disk.admin.reconfigure(vm, '<changeTrackingEnabled>true</changeTrackingEnabled>');
  fillPattern(disk.image, 30 * BLOCK, BLOCK, 702);
  await disk.upload();
  const reset = succeeded(await engine.backup({ hosts: [host.id], quiesce: 'none' }));
  expect(reset.validity).toMatchObject({ kind: 'full', reason: 'tracking-reset' });
  expect(reset.bytesRead).toBe(7 * BLOCK); // the allocated blocks 0, 1, 5, 7, 20, 30, 63
  points.push({ pointId: reset.pointId, image: Uint8Array.from(disk.image) });

  // A full backup on request reads the allocated areas again, and says so.
  const requested = succeeded(await engine.backup({ hosts: [host.id], quiesce: 'none', full: true }));
  expect(requested.validity).toMatchObject({ kind: 'full', reason: 'requested' });
  points.push({ pointId: requested.pointId, image: Uint8Array.from(disk.image) });

  for (const [i, point] of points.entries()) await expectRestores(point.pointId, point.image, `point ${i}`);
  // VMware's base is a change id: the engine released every snapshot after its backup.
  const snapshots = await disk.admin.property(vm, 'snapshot');
  expect(snapshots?.children.filter((c) => c.name === 'rootSnapshotList') ?? []).toEqual([]);
});

it('change tracking off, then on: every byte, then a full read saying why, then an exact incremental', async () => {
  const disk = await fx.startDisk({
    changeTracking: false,
    initial: (capacity) => patternedImage(capacity, [2, 3, 40], 5),
  });
  const { host, platform } = disk;
  await using engine = createBackupEngine({
    repository: fx.repository,
    platforms: [platform],
    chunkSize: MiB,
  });
  const points: { pointId: string; image: Uint8Array }[] = [];

  // No change id at the snapshot: QueryChangedDiskAreas cannot list anything, every byte is read.
  const off = succeeded(await engine.backup({ hosts: [host.id], quiesce: 'none' }));
  expect(off.validity).toMatchObject({ kind: 'full', reason: 'first-backup' });
  expect(off.bytesRead).toBe(disk.capacityBytes);
  points.push({ pointId: off.pointId, image: Uint8Array.from(disk.image) });

  expect(await platform.enableChangeTracking(host.id)).toEqual({ changed: true });
  fillPattern(disk.image, 10 * BLOCK, BLOCK, 900);
  await disk.upload();
  const enabled = succeeded(await engine.backup({ hosts: [host.id], quiesce: 'none' }));
  expect(enabled.validity).toMatchObject({ kind: 'full', reason: 'vmware-change-tracking-enabled' });
  expect(enabled.bytesRead).toBe(4 * BLOCK); // "*": the allocated blocks 2, 3, 10, 40
  points.push({ pointId: enabled.pointId, image: Uint8Array.from(disk.image) });

  fillPattern(disk.image, 3 * BLOCK, 512, 901);
  await disk.upload();
  const exact = succeeded(await engine.backup({ hosts: [host.id], quiesce: 'none' }));
  expect(exact.validity).toEqual({ kind: 'exact' });
  expect(exact.bytesRead).toBe(BLOCK);
  points.push({ pointId: exact.pointId, image: Uint8Array.from(disk.image) });

  for (const [i, point] of points.entries()) await expectRestores(point.pointId, point.image, `point ${i}`);
});

it('a change id vSphere does not know (InvalidArgument), or a restored VM, opens a full read with the reason, never a throw', async () => {
  const disk = await fx.startDisk({ initial: (capacity) => patternedImage(capacity, [4, 8], 21) });
  const { host, platform } = disk;
  const reader = platform.changedBlockReader;
  const first = await platform.createSnapshot({ host, name: 'drkit-e2e-1', quiesce: 'none' });
  const session = await reader.open({
    disk: disk.disk,
    snapshot: first,
    diskSnapshot: first.disks[0]!,
    chunkSize: MiB,
  });
  const checkpoint = session.checkpoint();
  await session.close();
  await platform.releaseSnapshot({ hostId: host.id, name: 'drkit-e2e-1' });

  const second = await platform.createSnapshot({ host, name: 'drkit-e2e-2', quiesce: 'none' });
  const ref = JSON.parse(second.disks[0]!.ref) as VmwareDiskSnapshotRef;
  // Same epoch as the snapshot's own change id, a sequence vSphere never issued: only vSphere can refuse it.
  const token = JSON.parse(checkpoint.token) as Record<string, string>;
  const unknown = `${ref.changeId!.slice(0, ref.changeId!.lastIndexOf('/'))}/9999`;
  const opened = await reader.open({
    disk: disk.disk,
    snapshot: second,
    diskSnapshot: second.disks[0]!,
    base: { ...checkpoint, token: JSON.stringify({ ...token, changeId: unknown }) },
    chunkSize: MiB,
  });
  try {
    expect(opened.validity).toMatchObject({ kind: 'full', reason: 'tracking-reset' });
    expect(opened.validity.kind === 'full' && opened.validity.detail).toContain('InvalidArgument');
  } finally {
    await opened.close();
  }
  // The same disk id, another VM moref: a restored or re-registered VM.
  const restored = await reader.open({
    disk: disk.disk,
    snapshot: second,
    diskSnapshot: second.disks[0]!,
    base: { ...checkpoint, token: JSON.stringify({ ...token, vm: 'vm-restored-elsewhere' }) },
    chunkSize: MiB,
  });
  try {
    expect(restored.validity).toMatchObject({ kind: 'full', reason: 'disk-recreated' });
  } finally {
    await restored.close();
    await platform.releaseSnapshot({ hostId: host.id, name: 'drkit-e2e-2' });
  }
});

it('a grown disk is read in full (disk-resized), then its lineage goes on with exact incrementals', async () => {
  const disk = await fx.startDisk({ initial: (capacity) => patternedImage(capacity, [6, 12], 31) });
  const { host } = disk;
  await using engine = createBackupEngine({
    repository: fx.repository,
    platforms: [disk.platform],
    chunkSize: MiB,
  });
  const points: { pointId: string; image: Uint8Array }[] = [];
  const full = succeeded(await engine.backup({ hosts: [host.id], quiesce: 'none' }));
  points.push({ pointId: full.pointId, image: Uint8Array.from(disk.image) });

  await disk.resize(5 * MiB);
  fillPattern(disk.image, 4 * MiB + BLOCK, BLOCK, 77);
  await disk.upload();
  const grown = succeeded(await engine.backup({ hosts: [host.id], quiesce: 'none' }));
  expect(grown.validity).toMatchObject({ kind: 'full', reason: 'disk-resized' });
  expect(grown.capacityBytes).toBe(5 * MiB);
  expect(grown.bytesRead).toBe(3 * BLOCK); // "*": the allocated blocks 6, 12 and the new one
  points.push({ pointId: grown.pointId, image: Uint8Array.from(disk.image) });

  fillPattern(disk.image, 6 * BLOCK, 100, 78);
  await disk.upload();
  const next = succeeded(await engine.backup({ hosts: [host.id], quiesce: 'none' }));
  expect(next.validity).toEqual({ kind: 'exact' });
  expect(next.bytesRead).toBe(BLOCK);
  points.push({ pointId: next.pointId, image: Uint8Array.from(disk.image) });
  for (const [i, point] of points.entries()) await expectRestores(point.pointId, point.image, `point ${i}`);
});
