// End to end on the real peers: the backup engine with a local-folder repository backs up the OpenStack server
// web-1 (two Cinder volumes, real RBD images written by Cinder's RBD driver) through createOpenStackCephPlatform,
// as Ceph's least-privilege client.backup user; the test writes into the volumes behind drkit's back through
// librbd and restores every point, comparing it with `rbd export` of the snapshot the point was read from.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type BackupEngine,
  createBackupEngine,
  createLocalFolderStore,
  type DiskTaskResult,
  openRepository,
  type Repository,
} from '@drkit/core';
import { hashDiskImage } from '@drkit/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOpenStackCephPlatform } from '../../../src/index.js';
import { exportSha256, rbdHelper, snapshotNames } from '../ceph-test-cluster.js';
import type { OpenStackPeerServer } from './openstack-peer-description.js';
import { openstackPeer, platformOptions } from './openstack-test-peer.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

let peer: ReturnType<typeof openstackPeer>;
let dir: string;
let repository: Repository;
let engine: BackupEngine;
let web: OpenStackPeerServer;

beforeAll(async () => {
  peer = openstackPeer();
  web = peer.facts.servers.find((s) => s.name === 'web-1')!;
  dir = await mkdtemp(join(tmpdir(), 'drkit-openstack-e2e-'));
  repository = await openRepository({
    store: createLocalFolderStore({ path: join(dir, 'repo') }),
    create: true,
  });
  engine = createBackupEngine({
    repository,
    platforms: [createOpenStackCephPlatform(platformOptions(peer, { id: 'openstack-e2e' }))],
  });
});

afterAll(async () => {
  await engine?.close();
  await repository?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const image = (volumeId: string) => `volume-${volumeId}`;
/** Point id → SHA-256 and size of `rbd export volume-<id>@<snapshot>` right after the backup. */
const expected = new Map<string, { sha256: string; size: number }>();

async function backupWeb(): Promise<Map<string, DiskTaskResult>> {
  const job = await engine.backup({ hosts: [web.id] });
  const results = new Map<string, DiskTaskResult>();
  for (const task of job.tasks) {
    if (task.status === 'failed') throw task.error;
    if (task.status === 'skipped') throw new Error(`disk ${task.diskId} skipped: ${task.detail}`);
    expect(task.hostId).toBe(web.id);
    results.set(task.diskId, task.result);
  }
  expect([...results.keys()].sort()).toEqual(web.volumes.map((v) => v.id).sort());
  for (const [volumeId, result] of results) {
    const point = await repository.point(result.pointId);
    const snapshot = point.checkpoint?.snapshotName;
    expect(snapshot).toMatch(/^drkit-/);
    expect(await snapshotNames(peer.ceph, image(volumeId))).toEqual([snapshot]);
    expected.set(result.pointId, await exportSha256(peer.ceph, `${image(volumeId)}@${snapshot}`));
  }
  return results;
}

describe('backup of an OpenStack server with two Ceph volumes (engine + local folder repository)', () => {
  it("full, then incremental after writes behind drkit's back; every point restores to its snapshot", async () => {
    const [root, data] = web.volumes;
    expect(root!.bootable).toBe(true);
    expect(data!.sizeGiB).toBe(2);
    const dataSize = data!.sizeGiB * GiB;
    await rbdHelper(peer.ceph, [
      { op: 'fill', image: image(root!.id), offset: 0, length: 8 * MiB, seed: 1 },
      { op: 'fill', image: image(data!.id), offset: 100 * MiB, length: 4 * MiB, seed: 2 },
      { op: 'fill', image: image(data!.id), offset: dataSize - MiB, length: MiB, seed: 3 },
    ]);

    const full = await backupWeb();
    for (const result of full.values())
      expect(result.validity).toEqual({ kind: 'full', reason: 'first-backup' });
    expect(full.get(root!.id)!.capacityBytes).toBe(GiB);
    expect(full.get(data!.id)!.capacityBytes).toBe(dataSize);

    const written = 4096 + 1 + 12_345;
    await rbdHelper(peer.ceph, [
      { op: 'write', image: image(root!.id), offset: 5 * MiB + 100, data: new Uint8Array(4096).fill(0x5a) },
      { op: 'discard', image: image(data!.id), offset: 100 * MiB, length: 4 * MiB },
      { op: 'fill', image: image(data!.id), offset: 300 * MiB + 7, length: 12_345, seed: 4 },
      { op: 'write', image: image(data!.id), offset: dataSize - 1, data: Uint8Array.of(0xee) },
    ]);
    const incremental = await backupWeb();
    for (const result of incremental.values()) expect(result.validity).toEqual({ kind: 'exact' });
    const bytesRead = [...incremental.values()].reduce((sum, r) => sum + r.bytesRead, 0);
    expect(bytesRead).toBeGreaterThanOrEqual(written);
    expect(bytesRead).toBeLessThan(written + 64 * 1024);

    let restored = 0;
    for (const volume of web.volumes) {
      const points = await repository.points({ hostId: web.id, diskId: volume.id });
      expect(points).toHaveLength(2);
      for (const point of points) {
        const target = join(dir, `restore-${point.id}.img`);
        const { bytes } = await repository.restore(point.id, { path: target });
        const want = expected.get(point.id)!;
        expect(bytes).toBe(want.size);
        expect(await hashDiskImage(target), `point ${point.id} of ${volume.name}`).toBe(want.sha256);
        await rm(target);
        restored++;
      }
    }
    expect(restored).toBe(4);
  });
});
