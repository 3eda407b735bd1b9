// The pure parts of the OpenStack platform: option validation (messages name the field) and the mapping of Nova
// servers and Cinder volumes to RBD images. The platform against real peers: test/integration/openstack.
import { InvalidSettingsError } from '@drkit/core';
import { describe, expect, it } from 'vitest';
import {
  type CinderBackendPool,
  type CinderVolume,
  parseBackendPool,
  parseVolumeHost,
} from './cinder-client.js';
import type { NovaServer } from './nova-client.js';
import type { OpenStackCephPlatformOptions } from './openstack-ceph-options.js';
import {
  type ClusterChoice,
  chooseCluster,
  createOpenStackCephPlatform,
  mapServer,
} from './openstack-ceph-platform.js';

const KEY = 'AQBBY9hfBc0+AxAAzyym+6l+MeTpMlgNTbye/A==';

function validOptions(): OpenStackCephPlatformOptions {
  return {
    id: 'openstack-prod',
    openstack: {
      authUrl: 'http://192.168.10.201:5000/v3',
      userDomainId: 'default',
      username: 'admin',
      password: 'secret-password-xyz',
      projectDomainId: 'default',
      projectName: 'admin',
      regionName: 'RegionOne',
    },
    ceph: [
      {
        name: 'ceph-1',
        monitors: '10.0.0.201,10.0.0.202,10.0.0.203',
        cephx: { user: 'cinder', keyring: KEY },
        pool: 'volumes',
        incrementalMode: 'exact',
        volumeTypes: ['ceph', 'ssd'],
      },
      {
        name: 'ceph-2',
        monitors: '10.0.1.201',
        cephx: false,
        pool: 'volumes-sata',
        incrementalMode: 'fast',
        cluster: 'backup',
        volumeTypes: ['sata'],
      },
    ],
  };
}

/** The field named by the InvalidSettingsError of the options changed by `change` (which returns new options). */
function fieldOf(change: (options: Record<string, unknown>) => Record<string, unknown>): string {
  const changed = change(validOptions() as unknown as Record<string, unknown>);
  try {
    createOpenStackCephPlatform(changed as unknown as OpenStackCephPlatformOptions);
  } catch (error) {
    if (!InvalidSettingsError.isInstance(error)) throw error;
    expect(error.message.startsWith(`${error.field}: `)).toBe(true);
    expect(error.message).not.toContain('secret-password-xyz');
    expect(error.message).not.toContain(KEY);
    return error.field;
  }
  throw new Error('expected an InvalidSettingsError');
}

/** Options whose `openstack` has `patch` applied. */
const openstack = (patch: Record<string, unknown>) => (o: Record<string, unknown>) => ({
  ...o,
  openstack: { ...(o.openstack as object), ...patch },
});

/** Options whose `ceph[index]` has `patch` applied. */
const cluster = (index: number, patch: Record<string, unknown>) => (o: Record<string, unknown>) => ({
  ...o,
  ceph: (o.ceph as object[]).map((c, i) => (i === index ? { ...c, ...patch } : c)),
});

describe('createOpenStackCephPlatform options', () => {
  it("accepts both of the console's tables and reports the connection without the password", () => {
    const platform = createOpenStackCephPlatform(validOptions());
    expect(platform.specificationVersion).toBe('v2');
    expect(platform.kind).toBe('openstack-ceph');
    expect(platform.id).toBe('openstack-prod');
    expect(platform.openstack).toEqual({
      authUrl: 'http://192.168.10.201:5000/v3',
      userDomainId: 'default',
      username: 'admin',
      projectDomainId: 'default',
      projectName: 'admin',
      regionName: 'RegionOne',
      interface: 'public',
    });
    expect(JSON.stringify(platform)).not.toContain('secret-password-xyz');
    expect(platform.clusters.map((c) => [c.name, c.cluster, c.pool, c.user])).toEqual([
      ['ceph-1', 'ceph', 'volumes', 'cinder'],
      ['ceph-2', 'backup', 'volumes-sata', undefined],
    ]);
    expect(platform.capabilities).toEqual({
      snapshots: 'host',
      quiesce: false,
      retainsSnapshotAsBase: true,
      changeTracking: 'exact',
    });
    expect(platform.changedBlockReader).toMatchObject({
      mode: 'stream',
      blockSize: 512,
      maxConcurrentReads: 1,
    });
  });

  it('names the field of every invalid value', () => {
    expect(fieldOf((o) => ({ ...o, openstack: undefined }))).toBe('openstack');
    expect(fieldOf(openstack({ authUrl: 'not a url' }))).toBe('openstack.authUrl');
    expect(fieldOf(openstack({ authUrl: 'http://10.0.0.1:5000/v2.0' }))).toBe('openstack.authUrl');
    expect(fieldOf(openstack({ userDomainId: '' }))).toBe('openstack.userDomainId');
    expect(fieldOf(openstack({ username: undefined }))).toBe('openstack.username');
    expect(fieldOf(openstack({ password: '' }))).toBe('openstack.password');
    expect(fieldOf(openstack({ projectDomainId: ' ' }))).toBe('openstack.projectDomainId');
    expect(fieldOf(openstack({ projectName: '' }))).toBe('openstack.projectName');
    expect(fieldOf(openstack({ regionName: '' }))).toBe('openstack.regionName');
    expect(fieldOf(openstack({ interface: 'publicURL' }))).toBe('openstack.interface');
    expect(fieldOf(openstack({ caCertificates: 'not a pem' }))).toBe('openstack.caCertificates');
    expect(fieldOf(openstack({ caCertificates: ['-----BEGIN CERTIFICATE-----\n...', 'x'] }))).toBe(
      'openstack.caCertificates[1]',
    );
    expect(fieldOf(openstack({ pageSize: 0 }))).toBe('openstack.pageSize');
    expect(fieldOf(openstack({ renewBeforeSeconds: -1 }))).toBe('openstack.renewBeforeSeconds');
    expect(fieldOf((o) => ({ ...o, httpTimeoutSeconds: 0 }))).toBe('httpTimeoutSeconds');
    expect(fieldOf((o) => ({ ...o, httpTimeoutSeconds: 1.5 }))).toBe('httpTimeoutSeconds');
    expect(fieldOf((o) => ({ ...o, ceph: [] }))).toBe('ceph');
    expect(fieldOf(cluster(1, { pool: 'bad/pool' }))).toBe('ceph[1].pool');
    expect(fieldOf(cluster(0, { monitors: '' }))).toBe('ceph[0].monitors');
    expect(fieldOf(cluster(0, { incrementalMode: 'du' }))).toBe('ceph[0].incrementalMode');
    expect(fieldOf(cluster(0, { cephx: { user: 'cinder', keyring: 'short' } }))).toBe(
      'ceph[0].cephx.keyring',
    );
    expect(fieldOf(cluster(1, { name: 'ceph-1' }))).toBe('ceph[1].name');
    expect(fieldOf(cluster(1, { volumeTypes: ['ssd'] }))).toBe('ceph[1].volumeTypes');
    expect(fieldOf((o) => ({ ...o, id: '' }))).toBe('id');
    expect(fieldOf((o) => ({ ...o, id: undefined }))).toBe('id');
    expect(fieldOf((o) => ({ ...o, id: 7 }))).toBe('id');
  });

  it('requires the id: none is derived from the Keystone URL', () => {
    const { id: _id, ...withoutId } = validOptions();
    let error: unknown;
    try {
      createOpenStackCephPlatform(withoutId as OpenStackCephPlatformOptions);
    } catch (caught) {
      error = caught;
    }
    expect(InvalidSettingsError.isInstance(error)).toBe(true);
    expect((error as InvalidSettingsError).field).toBe('id');
    expect((error as Error).message).toMatch(/^id: is required: a stable name you choose/);
  });
});

const clusters: ClusterChoice[] = [
  { name: 'ceph-1', pool: 'volumes', volumeTypes: ['ceph', 'ssd'] },
  { name: 'ceph-2', pool: 'volumes-sata', volumeTypes: ['sata'] },
];

function volume(id: string, overrides: Partial<CinderVolume> = {}): CinderVolume {
  return {
    id,
    name: `vol-${id}`,
    projectId: 'p1',
    sizeGiB: 10,
    volumeType: 'ceph',
    bootable: false,
    status: 'in-use',
    host: parseVolumeHost('node-1@ceph#ceph'),
    attachments: [{ serverId: 's1', device: '/dev/vdb', attachmentId: 'a' }],
    ...overrides,
  };
}

const server: NovaServer = {
  id: 's1',
  name: 'web-1',
  projectId: 'p1',
  status: 'ACTIVE',
  flavor: { name: 'm1.small', vcpus: 1, ramMiB: 2048, diskGiB: 0 },
  attachedVolumes: ['data', 'root', 'sata', 'lvm', 'gone', 'broken'].map((id) => ({
    id,
    deleteOnTermination: false,
  })),
  imageId: undefined,
  availabilityZone: 'nova',
  computeHost: undefined,
};

/** What Cinder's RBD driver reports for a backend writing into `pool`. */
function rbdCapabilities(pool: string): Record<string, unknown> {
  return {
    storage_protocol: 'ceph',
    volume_backend_name: 'ceph',
    location_info: `ceph:/etc/ceph/ceph.conf:f-1:cinder:${pool}`,
  };
}

describe('mapping servers and volumes to RBD images', () => {
  it('parses host@backend#pool', () => {
    expect(parseVolumeHost('node-1@ceph#ceph')).toEqual({
      raw: 'node-1@ceph#ceph',
      host: 'node-1',
      backend: 'ceph',
      pool: 'ceph',
    });
    expect(parseVolumeHost('node-1@lvm')).toMatchObject({ host: 'node-1', backend: 'lvm', pool: undefined });
    expect(parseVolumeHost('node-1')).toMatchObject({ host: 'node-1', backend: undefined, pool: undefined });
  });

  it('picks the cluster by volume type; the backend names one of several clusters without types', () => {
    expect(chooseCluster(volume('v', { volumeType: 'sata' }), clusters)).toEqual({ cluster: clusters[1] });
    expect(chooseCluster(volume('v', { volumeType: 'lvm' }), clusters)).toEqual({
      reason: 'backing-unreachable',
      detail:
        'volume type "lvm" is held by no configured Ceph cluster (ceph-1: ceph, ssd; ceph-2: sata): add the ' +
        "cluster that holds it, or its type to a cluster's volumeTypes",
    });
    const open: ClusterChoice[] = [
      { name: 'rbd-a', pool: 'volumes', volumeTypes: [] },
      { name: 'rbd-b', pool: 'volumes', volumeTypes: [] },
    ];
    expect(chooseCluster(volume('v', { host: parseVolumeHost('n@rbd-b#rbd-b') }), open)).toEqual({
      cluster: open[1],
    });
    expect(chooseCluster(volume('v', { host: parseVolumeHost('n@other#other') }), open)).toMatchObject({
      reason: 'openstack-ceph-cluster-ambiguous',
      detail: expect.stringMatching(/could be in several Ceph clusters/),
    });
    expect(chooseCluster(volume('v', { volumeType: undefined }), [open[0]!])).toEqual({ cluster: open[0] });
  });

  it('maps a server: disks sorted by device, id = volume id, image volume-<id>; the rest skipped with a reason', () => {
    const volumes = new Map(
      [
        volume('data'),
        volume('root', {
          bootable: true,
          attachments: [{ serverId: 's1', device: '/dev/vda', attachmentId: 'r' }],
        }),
        volume('sata', {
          volumeType: 'sata',
          host: parseVolumeHost('node-2@sata#sata'),
          attachments: [{ serverId: 's1', device: '/dev/vdc', attachmentId: 's' }],
        }),
        volume('lvm', {
          volumeType: 'lvm',
          attachments: [{ serverId: 's1', device: '/dev/vdd', attachmentId: 'l' }],
        }),
        volume('broken', { status: 'error', attachments: [] }),
      ].map((v) => [v.id, v]),
    );
    const { host, skipped } = mapServer(server, volumes, clusters);
    expect(host.disks.map((d) => [d.id, d.name, d.image])).toEqual([
      ['root', '/dev/vda', { cluster: 'ceph-1', pool: 'volumes', image: 'volume-root' }],
      ['data', '/dev/vdb', { cluster: 'ceph-1', pool: 'volumes', image: 'volume-data' }],
      ['sata', '/dev/vdc', { cluster: 'ceph-2', pool: 'volumes-sata', image: 'volume-sata' }],
    ]);
    expect(host.disks[0]!.attributes).toEqual({
      'openstack.volumeName': 'vol-root',
      'openstack.sizeGiB': '10',
      'openstack.bootable': 'true',
      'openstack.volumeType': 'ceph',
      'openstack.backendHost': 'node-1@ceph#ceph',
      'openstack.device': '/dev/vda',
    });
    expect(skipped.map((s) => [s.volumeId, s.reason, s.detail])).toEqual([
      [
        'lvm',
        'backing-unreachable',
        expect.stringMatching(
          /^volume type "lvm" is held by no configured Ceph cluster \(ceph-1: ceph, ssd;/,
        ),
      ],
      [
        'gone',
        'backing-missing',
        'Cinder does not list volume gone (deleted meanwhile, or not visible to this user)',
      ],
      ['broken', 'openstack-ceph-volume-unavailable', expect.stringMatching(/^the volume is error: /)],
    ]);
    expect(skipped[0]).toMatchObject({
      id: 'lvm',
      name: '/dev/vdd',
      serverId: 's1',
      serverName: 'web-1',
      device: '/dev/vdd',
      volumeType: 'lvm',
    });
    // The host carries them as v2 skipped disks, and no attribute repeats them.
    expect(host.skippedDisks).toEqual(
      skipped.map(({ id, name, reason, detail }) => ({ id, name, reason, detail })),
    );
    expect(host.skippedDisks?.map((d) => d.name)).toEqual(['/dev/vdd', 'gone', 'vol-broken']);
    expect(host.attributes).toEqual({
      'openstack.projectId': 'p1',
      'openstack.status': 'ACTIVE',
      'openstack.flavor': 'm1.small',
      'openstack.availabilityZone': 'nova',
    });
  });

  it("lists Nova's ephemeral root disk of a server booted from an image as a skipped disk (unsupported-disk)", () => {
    const { host, skipped } = mapServer(
      { ...server, attachedVolumes: [], imageId: 'img-1' },
      new Map(),
      clusters,
    );
    expect(host.disks).toEqual([]);
    expect(host.skippedDisks).toEqual([
      {
        id: 's1_disk',
        name: 'ephemeral root disk',
        reason: 'unsupported-disk',
        detail: expect.stringMatching(/booted from image img-1: its root disk is Nova's ephemeral disk/),
      },
    ]);
    expect(skipped[0]).toMatchObject({ volumeId: undefined, serverName: 'web-1' });
  });

  it("tells a non-RBD backend (unsupported-disk) and an RBD pool no cluster is configured for (backing-unreachable) from Cinder's pools", () => {
    const pools = new Map<string, CinderBackendPool>(
      [
        { name: 'node-1@ceph#ceph', capabilities: rbdCapabilities('volumes') },
        { name: 'node-1@ssd#ssd', capabilities: rbdCapabilities('volumes-ssd') },
        { name: 'node-2@lvm#lvm', capabilities: { storage_protocol: 'iSCSI', volume_backend_name: 'lvm' } },
        { name: 'node-3@other#other', capabilities: rbdCapabilities('elsewhere') },
      ].map((entry) => [entry.name, parseBackendPool(entry)!]),
    );
    const volumes = new Map(
      [
        volume('data'),
        // A type ceph-1 holds, but Cinder keeps it in another pool than ceph-1's.
        volume('fast', { volumeType: 'ssd', host: parseVolumeHost('node-1@ssd#ssd') }),
        // A type a cluster claims, on a backend that is not RBD at all.
        volume('lvm', { volumeType: 'ceph', host: parseVolumeHost('node-2@lvm#lvm') }),
        // A type no cluster holds, on an RBD backend: reachable only with another cluster configured.
        volume('other', { volumeType: 'gold', host: parseVolumeHost('node-3@other#other') }),
      ].map((v) => [v.id, v]),
    );
    const attached = {
      ...server,
      attachedVolumes: [...volumes.keys()].map((id) => ({ id, deleteOnTermination: false })),
    };
    const { host, skipped } = mapServer(attached, volumes, clusters, pools);
    expect(host.disks.map((d) => d.id)).toEqual(['data']);
    expect(skipped.map((s) => [s.id, s.reason])).toEqual([
      ['fast', 'backing-unreachable'],
      ['lvm', 'unsupported-disk'],
      ['other', 'backing-unreachable'],
    ]);
    expect(skipped[0]!.detail).toMatch(/Cinder keeps the volume in Ceph pool volumes-ssd .* pool volumes/);
    expect(skipped[1]!.detail).toMatch(/backend node-2@lvm#lvm \(storage protocol iSCSI\), not on Ceph RBD/);
    expect(skipped[2]!.detail).toMatch(
      /held by no configured Ceph cluster .* \(Cinder keeps it in Ceph pool elsewhere, fsid f-1\)/,
    );
  });

  it('reads the Ceph pool of an RBD backend from location_info, from both ends', () => {
    expect(parseBackendPool({ name: 'n@ceph#ceph', capabilities: rbdCapabilities('volumes') })).toEqual({
      name: 'n@ceph#ceph',
      storageProtocol: 'ceph',
      volumeBackendName: 'ceph',
      ceph: { cluster: 'ceph', fsid: 'f-1', pool: 'volumes' },
    });
    expect(
      parseBackendPool({
        name: 'n@ceph#ceph',
        capabilities: { storage_protocol: 'ceph', location_info: 'ceph:C:/odd:path.conf:f-2:cinder:vol' },
      })?.ceph,
    ).toEqual({ cluster: 'ceph', fsid: 'f-2', pool: 'vol' });
    expect(parseBackendPool({ name: 'n@lvm#lvm', capabilities: { storage_protocol: 'iSCSI' } })?.ceph).toBe(
      undefined,
    );
    expect(parseBackendPool({ capabilities: {} })).toBeUndefined();
  });
});
