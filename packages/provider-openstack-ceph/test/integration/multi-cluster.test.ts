// Several Ceph clusters in one platform: the global setup's cluster (CephX on, client.backup) and a second one
// this file starts beside it with CephX off (`CEPH_AUTH=none sh scripts/peers/ceph.sh start DIR`). Covers the
// default one-host-per-image inventory across clusters, and the `listHosts` hook the OpenStack platform builds
// on: one host whose disks live in two clusters, backed up and restored through the engine.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackupEngine, createLocalFolderStore, type Host, openRepository } from '@drkit/core';
import { hashDiskImage } from '@drkit/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CephHostDefinition, createCephRbdPlatform } from '../../src/index.js';
import type { CephClusterDescription } from './ceph-cluster-description.js';
import { runCephScript } from './ceph-global-setup.js';
import {
  backupClusterOptions,
  cephCluster,
  exportSha256,
  rbdHelper,
  uniqueImageName,
} from './ceph-test-cluster.js';

const MiB = 1024 * 1024;
let first: CephClusterDescription;
let second: CephClusterDescription | undefined;
let secondDir: string;
let dir: string;
const firstImage = uniqueImageName('multi-a');
const secondImage = uniqueImageName('multi-b');

beforeAll(async () => {
  first = cephCluster();
  dir = await mkdtemp(join(tmpdir(), 'drkit-ceph-multi-'));
  secondDir = join(dir, 'cluster-2');
  await runCephScript('start', secondDir, {
    ...process.env,
    CEPH_AUTH: 'none',
    CEPH_MEMSTORE_BYTES: String(1 << 30),
  });
  second = JSON.parse(await readFile(join(secondDir, 'cluster.json'), 'utf8')) as CephClusterDescription;
  expect(second.auth).toBe('none');
  await rbdHelper(first, [
    { op: 'create', image: firstImage, size: 5 * MiB + 1 },
    { op: 'fill', image: firstImage, offset: 0, length: 3 * MiB, seed: 1 },
  ]);
  await rbdHelper(second, [
    { op: 'create', image: secondImage, size: 7 * MiB - 3 },
    { op: 'fill', image: secondImage, offset: MiB, length: 2 * MiB, seed: 2 },
  ]);
  // Starting a second cluster may take up to runCephScript's own 180 s on 2 busy cores; this hook waits longer,
  // so that a slow start fails with the script's message rather than a hook timeout.
}, 300_000);

afterAll(async () => {
  if (first) await rbdHelper(first, [{ op: 'remove', image: firstImage }]).catch(() => {});
  try {
    if (secondDir) await runCephScript('stop', secondDir);
  } finally {
    if (dir) await rm(dir, { recursive: true, force: true });
  }
}, 120_000);

function clusters() {
  return [
    backupClusterOptions(first, { name: 'ceph-a' }),
    backupClusterOptions(second!, { name: 'ceph-b', incrementalMode: 'fast' }),
  ];
}

describe('a platform over two Ceph clusters (CephX on and off)', { timeout: 120_000 }, () => {
  it('lists one host per image of each cluster by default', async () => {
    const platform = createCephRbdPlatform({ id: 'ceph-multi-default', clusters: clusters() });
    expect(platform.clusters.map((c) => [c.name, c.user])).toEqual([
      ['ceph-a', 'backup'],
      ['ceph-b', undefined],
    ]);
    const hosts: Host[] = [];
    for await (const host of platform.hosts()) hosts.push(host);
    const a = hosts.find((host) => host.id === `ceph-a/${first.pool}/${firstImage}`);
    const b = hosts.find((host) => host.id === `ceph-b/${second!.pool}/${secondImage}`);
    expect(a?.disks.map((disk) => [disk.id, disk.capacityBytes])).toEqual([[a?.id, 5 * MiB + 1]]);
    expect(b?.disks.map((disk) => [disk.id, disk.capacityBytes])).toEqual([[b?.id, 7 * MiB - 3]]);
    expect(b?.disks[0]?.attributes).toMatchObject({ 'ceph.cluster': 'ceph-b', 'ceph.image': secondImage });
    const status = await platform.verify();
    expect(status).toMatchObject({ status: 'normal', hostCount: hosts.length });
  });

  it('backs up a host from listHosts whose disks live in two clusters, and restores both', async () => {
    const listed: CephHostDefinition = {
      id: 'server-1',
      name: 'server one',
      attributes: { flavor: 'm1.small' },
      disks: [
        {
          id: 'volume-a',
          name: 'vda',
          attributes: { volumeType: 'ssd' },
          image: { cluster: 'ceph-a', pool: first.pool, image: firstImage },
        },
        { id: 'volume-b', name: 'vdb', image: { cluster: 'ceph-b', pool: second!.pool, image: secondImage } },
      ],
    };
    const platform = createCephRbdPlatform({
      id: 'ceph-multi',
      kind: 'openstack-ceph',
      clusters: clusters(),
      async *listHosts({ signal }) {
        signal?.throwIfAborted();
        yield listed;
      },
    });
    expect(platform.kind).toBe('openstack-ceph');
    const hosts: Host[] = [];
    for await (const host of platform.hosts()) hosts.push(host);
    expect(hosts).toHaveLength(1);
    expect(hosts[0]).toMatchObject({
      id: 'server-1',
      name: 'server one',
      attributes: { flavor: 'm1.small' },
    });
    expect(hosts[0]!.disks[0]!.attributes).toMatchObject({ volumeType: 'ssd', 'ceph.cluster': 'ceph-a' });

    const repository = await openRepository({
      store: createLocalFolderStore({ path: join(dir, 'repo') }),
      create: true,
    });
    const engine = createBackupEngine({ repository, platforms: [platform] });
    try {
      const full = await engine.backup();
      expect(full.failed, JSON.stringify(full.tasks)).toBe(0);
      await rbdHelper(second!, [
        { op: 'write', image: secondImage, offset: 5, data: new Uint8Array(7).fill(9) },
      ]);
      const next = await engine.backup();
      expect(next.failed).toBe(0);
      const byDisk = new Map(next.tasks.map((task) => [task.diskId, task]));
      const b = byDisk.get('volume-b');
      expect(b?.status === 'succeeded' && b.result.validity.kind).toBe('superset');
      const a = byDisk.get('volume-a');
      expect(a?.status === 'succeeded' && a.result.bytesRead).toBe(0);

      for (const [diskId, description, image] of [
        ['volume-a', first, firstImage],
        ['volume-b', second!, secondImage],
      ] as const) {
        const points = await repository.points({ diskId });
        expect(points).toHaveLength(2);
        const newest = points.at(-1)!;
        const target = join(dir, `${diskId}.img`);
        await repository.restore(newest.id, { path: target });
        const expected = await exportSha256(description, `${image}@${newest.checkpoint!.snapshotName}`);
        expect(await hashDiskImage(target)).toBe(expected.sha256);
      }
    } finally {
      await engine.close();
      await repository.close();
    }
  });
});
