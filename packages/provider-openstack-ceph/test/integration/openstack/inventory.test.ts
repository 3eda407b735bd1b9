// The inventory of a real OpenStack (Keystone 22, Nova 26 with the fake compute driver, Cinder 21 with the RBD
// driver writing into a real Ceph cluster), compared with what scripts/peers/openstack-peer.py seeded.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createBackupEngine,
  createLocalFolderStore,
  type Host,
  openRepository,
  PermissionError,
} from '@drkit/core';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  createCinderClient,
  createKeystoneClient,
  createNovaClient,
  createOpenStackCephPlatform,
  type KeystoneTokenInfo,
} from '../../../src/index.js';
import type { OpenStackPeerFacts } from './openstack-peer-description.js';
import { openstackOptions, openstackPeer, platformOptions } from './openstack-test-peer.js';

const GiB = 1024 ** 3;
let peer: ReturnType<typeof openstackPeer>;
let facts: OpenStackPeerFacts;

beforeAll(() => {
  peer = openstackPeer();
  facts = peer.facts;
});

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of iterable) items.push(item);
  return items;
}

describe('the seeded cloud', () => {
  it('has volumes of type ceph as real RBD images (Cinder RBD driver), not the fake driver', () => {
    expect(facts.cinderDriver).toBe('rbd');
    expect(facts.servers.map((s) => s.name).sort()).toEqual(['app-b1', 'db-1', 'web-1']);
  });
});

describe('Keystone client', () => {
  it('authenticates with a password and reads the catalog of the region and interface', async () => {
    const tokens: KeystoneTokenInfo[] = [];
    const keystone = createKeystoneClient({
      ...openstackOptions(facts),
      onAuthenticated: (token) => tokens.push(token),
    });
    const token = await keystone.authenticate();
    expect(token.projectId).toBe(facts.admin.projectId);
    expect(token.projectName).toBe('admin');
    expect(token.roles).toContain('admin');
    // Both dates are Keystone's clock: the lifetime is compared, not the local clock (Keystone's default is 1 h).
    const lifetime = Date.parse(token.expiresAt) - Date.parse(token.issuedAt);
    expect(lifetime).toBeGreaterThanOrEqual(60_000);
    expect(token.endpoints.compute).toBe('http://127.0.0.1:8774/v2.1');
    expect(token.endpoints.volumev3).toBe(`http://127.0.0.1:8776/v3/${facts.admin.projectId}`);
    expect(token.endpoints.identity).toBe('http://127.0.0.1:5000/v3');
    expect(await keystone.endpoint('placement')).toBe('http://127.0.0.1:8778');
    // The token is reused, not requested again.
    await keystone.authenticate();
    expect(tokens).toHaveLength(1);
    expect(JSON.stringify(token)).not.toContain(facts.admin.password);
  });

  it('accepts a versionless auth URL and appends /v3', async () => {
    const keystone = createKeystoneClient({ ...openstackOptions(facts), authUrl: 'http://127.0.0.1:5000/' });
    expect(keystone.authUrl).toBe('http://127.0.0.1:5000/v3');
    expect((await keystone.authenticate()).projectId).toBe(facts.admin.projectId);
  });
});

describe('Nova and Cinder clients', () => {
  it("list every project's servers with attached volumes and flavor, page by page (limit/marker)", async () => {
    const keystone = createKeystoneClient(openstackOptions(facts));
    for (const pageSize of [1, 2, 1000]) {
      const servers = await collect(createNovaClient({ keystone, pageSize }).listServers());
      expect(servers.map((s) => s.name).sort(), `page size ${pageSize}`).toEqual(['app-b1', 'db-1', 'web-1']);
      for (const seeded of facts.servers) {
        const server = servers.find((s) => s.id === seeded.id)!;
        expect(server.projectId).toBe(seeded.projectId);
        expect(server.status).toBe('ACTIVE');
        expect(server.flavor.name).toBe(seeded.flavor);
        expect(server.flavor.vcpus).toBe(1);
        expect(server.imageId).toBeUndefined(); // booted from volume
        expect(server.attachedVolumes.map((v) => v.id).sort()).toEqual(
          seeded.volumes.map((v) => v.id).sort(),
        );
      }
    }
  });

  it("list every project's volumes with size, type, bootable (sent as a string), host and attachments", async () => {
    const keystone = createKeystoneClient(openstackOptions(facts));
    for (const pageSize of [1, 3, 1000]) {
      const volumes = await collect(createCinderClient({ keystone, pageSize }).listVolumes());
      for (const server of facts.servers) {
        for (const seeded of server.volumes) {
          const volume = volumes.find((v) => v.id === seeded.id);
          expect(volume, `volume ${seeded.name} with page size ${pageSize}`).toBeDefined();
          expect(volume!.sizeGiB).toBe(seeded.sizeGiB);
          expect(volume!.volumeType).toBe(seeded.volumeType);
          expect(volume!.bootable).toBe(seeded.bootable);
          expect(volume!.status).toBe('in-use');
          expect(volume!.host?.raw).toBe(seeded.host);
          expect(volume!.host?.backend).toBe(seeded.volumeType);
          expect(volume!.attachments).toEqual([
            { serverId: server.id, device: seeded.device, attachmentId: expect.any(String) },
          ]);
        }
      }
    }
  });

  it('refuses a member of one project the servers of all projects: PermissionError', async () => {
    const keystone = createKeystoneClient(openstackOptions(facts, facts.member));
    const nova = createNovaClient({ keystone });
    const error = await collect(nova.listServers()).catch((e: unknown) => e);
    expect(PermissionError.isInstance(error), String(error)).toBe(true);
    expect((error as Error).message).toMatch(/403.*admin role/s);
    // Its own project's servers it may list.
    const own = await collect(nova.listServers({ allProjects: false }));
    expect(own.map((s) => s.name)).toEqual(['app-b1']);
  });
});

describe('createOpenStackCephPlatform on the real peers', () => {
  it('verify(): normal, with the number of servers and the disk it leaves out (a volume not on RBD)', async () => {
    const platform = createOpenStackCephPlatform(platformOptions(peer));
    const status = await platform.verify();
    expect(status).toMatchObject({ status: 'normal', hostCount: 3 });
    if (status.status !== 'normal') throw new Error('unreachable');
    const db = facts.servers.find((s) => s.name === 'db-1')!;
    const scratch = db.volumes.find((v) => v.volumeType === 'local')!;
    // Cinder's pools (admin) say the `local` backend is not RBD (the fake driver reports protocol "fake").
    expect(status.skippedDisks).toEqual([
      {
        id: scratch.id,
        name: scratch.device,
        reason: 'unsupported-disk',
        detail:
          `volume type "local" lives on Cinder backend ${scratch.host} (storage protocol fake), not on Ceph ` +
          'RBD: drkit reads RBD volumes only',
        serverId: db.id,
        serverName: 'db-1',
        volumeId: scratch.id,
        device: scratch.device,
        volumeType: 'local',
      },
    ]);
  });

  it('hosts(): every server with its RBD volumes: disk id = volume id, name = device, capacity from Ceph', async () => {
    const platform = createOpenStackCephPlatform(platformOptions(peer));
    expect(platform.kind).toBe('openstack-ceph');
    const hosts: Host[] = await collect(platform.hosts());
    expect(hosts.map((h) => h.name).sort()).toEqual(['app-b1', 'db-1', 'web-1']);
    for (const seeded of facts.servers) {
      const host = hosts.find((h) => h.id === seeded.id)!;
      expect(host.platformId).toBe('openstack-it');
      expect(host.attributes?.['openstack.projectId']).toBe(seeded.projectId);
      expect(host.attributes?.['openstack.flavor']).toBe('drkit.tiny');
      const inCeph = seeded.volumes.filter((v) => v.inCeph);
      expect(host.disks.map((d) => d.id)).toEqual(inCeph.map((v) => v.id));
      for (const [index, volume] of inCeph.entries()) {
        const disk = host.disks[index]!;
        expect(disk.hostId).toBe(seeded.id);
        expect(disk.name).toBe(volume.device);
        expect(disk.capacityBytes).toBe(volume.sizeGiB * GiB);
        expect(disk.attributes).toMatchObject({
          'openstack.volumeName': volume.name,
          'openstack.volumeType': 'ceph',
          'openstack.sizeGiB': String(volume.sizeGiB),
          'openstack.bootable': String(volume.bootable),
          'openstack.backendHost': volume.host,
          'ceph.cluster': 'ceph-1',
          'ceph.pool': facts.cephPool,
          'ceph.image': `volume-${volume.id}`,
        });
      }
      const skipped = seeded.volumes.filter((v) => !v.inCeph);
      if (skipped.length > 0) {
        expect(host.skippedDisks?.map((d) => [d.id, d.name, d.reason])).toEqual(
          skipped.map((v) => [v.id, v.device, 'unsupported-disk']),
        );
      } else {
        expect(host.skippedDisks).toBeUndefined();
      }
      expect(host.attributes?.['openstack.skippedVolumes']).toBeUndefined();
    }
    const web = hosts.find((h) => h.name === 'web-1')!;
    expect(web.disks.map((d) => d.capacityBytes)).toEqual([1 * GiB, 2 * GiB]);
  });

  it('inventory(): the same mapping from Nova and Cinder alone, with the skipped volumes', async () => {
    const platform = createOpenStackCephPlatform(platformOptions(peer));
    const { hosts, skipped } = await platform.inventory();
    expect(hosts).toHaveLength(3);
    expect(skipped.map((s) => s.serverName)).toEqual(['db-1']);
    const web = hosts.find((h) => h.name === 'web-1')!;
    expect(web.disks.map((d) => d.image)).toEqual(
      facts.servers
        .find((s) => s.name === 'web-1')!
        .volumes.map((v) => ({ cluster: 'ceph-1', pool: facts.cephPool, image: `volume-${v.id}` })),
    );
  });

  it("a cluster without volumeTypes takes every type, but Cinder's pools still tell the local volume is not on RBD: skipped with why", async () => {
    const options = platformOptions(peer);
    const open = createOpenStackCephPlatform({
      ...options,
      ceph: [{ ...options.ceph[0]!, volumeTypes: undefined }],
    });
    const { skipped, hosts } = await open.inventory();
    // Rather than backing up a wrong disk or failing every server: left out, with the backend and its protocol.
    expect(skipped.map((s) => [s.serverName, s.volumeType, s.reason])).toEqual([
      ['db-1', 'local', 'unsupported-disk'],
    ]);
    expect(hosts.find((h) => h.name === 'db-1')!.disks).toHaveLength(1);
    const status = await open.verify();
    expect(status.status).toBe('normal');
    if (status.status !== 'normal') return;
    expect(status.hostCount).toBe(3);
    expect(status.skippedDisks).toHaveLength(1);
    expect(status.skippedDisks[0]).toMatchObject({ serverName: 'db-1', volumeType: 'local' });
    expect(status.skippedDisks[0]!.detail).toMatch(/storage protocol fake\), not on Ceph RBD/);
    const listed = [];
    for await (const host of open.hosts()) listed.push(host);
    const db = listed.find((h) => h.name === 'db-1')!;
    expect(db.disks).toHaveLength(1);
    expect(db.skippedDisks?.map((d) => d.reason)).toEqual(['unsupported-disk']);
  });

  it('a job backs up the Ceph volumes of db-1 and reports its local volume as skipped', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'drkit-openstack-skipped-'));
    const repository = await openRepository({ store: createLocalFolderStore({ path: dir }), create: true });
    const engine = createBackupEngine({
      repository,
      platforms: [createOpenStackCephPlatform(platformOptions(peer, { id: 'openstack-skipped' }))],
    });
    try {
      const db = facts.servers.find((s) => s.name === 'db-1')!;
      const job = await engine.backup({ hosts: [db.id] });
      expect([job.succeeded, job.failed, job.skipped]).toEqual([1, 0, 1]);
      const skipped = job.tasks.find((t) => t.status === 'skipped');
      expect(skipped).toMatchObject({
        diskId: db.volumes.find((v) => v.volumeType === 'local')!.id,
        reason: 'unsupported-disk',
      });
    } finally {
      await engine.close();
      await repository.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
