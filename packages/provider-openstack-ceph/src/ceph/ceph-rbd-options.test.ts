import { InvalidSettingsError } from '@drkit/core';
import { describe, expect, it } from 'vitest';
import { type CephClusterOptions, parseMonitors, resolveCephRbdOptions } from './ceph-rbd-options.js';
import { createCephRbdPlatform } from './ceph-rbd-platform.js';

const KEY = 'AQBBY9hfBc0+AxAAzyym+6l+MeTpMlgNTbye/A==';
const cluster: CephClusterOptions = {
  name: 'ceph-1',
  monitors: '10.0.0.201,10.0.0.202,10.0.0.203',
  cephx: { user: 'cinder', keyring: KEY },
  pool: 'volumes',
  incrementalMode: 'exact',
};

function settingsError(run: () => unknown): InvalidSettingsError {
  try {
    run();
  } catch (error) {
    expect(InvalidSettingsError.isInstance(error), String(error)).toBe(true);
    expect((error as Error).message).not.toContain(KEY);
    return error as InvalidSettingsError;
  }
  throw new Error('expected an InvalidSettingsError');
}

describe('parseMonitors', () => {
  it.each([
    ['10.0.0.201,10.0.0.202,10.0.0.203', '10.0.0.201,10.0.0.202,10.0.0.203', false],
    ['10.0.0.201:6789, 10.0.0.202:3300', '10.0.0.201:6789,10.0.0.202:3300', false],
    ['v2:127.0.0.1:3300,v1:127.0.0.1:6789', 'v2:127.0.0.1:3300,v1:127.0.0.1:6789', false],
    [
      '[v2:10.0.0.1:3300,v1:10.0.0.1:6789],[v2:10.0.0.2:3300,v1:10.0.0.2:6789]',
      '[v2:10.0.0.1:3300,v1:10.0.0.1:6789],[v2:10.0.0.2:3300,v1:10.0.0.2:6789]',
      false,
    ],
    ['mon1.example.com,mon2.example.com:6789', 'mon1.example.com,mon2.example.com:6789', false],
    ['[fd00::1]:6789,[fd00::2]', '[fd00::1]:6789,[fd00::2]', true],
    ['[v2:[fd00::1]:3300,v1:[fd00::1]:6789]', '[v2:[fd00::1]:3300,v1:[fd00::1]:6789]', true],
  ])('accepts %s', (input, monHost, ipv6) => {
    expect(parseMonitors(input, 'm')).toEqual({ monHost, ipv6 });
  });

  it.each([
    ['', /list the Ceph monitors/],
    ['10.0.0.1:99999', /port 99999 is out of range/],
    ['fd00::1', /is not a monitor address/],
    ['[10.0.0.1]:6789', /only IPv6 addresses go in brackets/],
    ['[v2:10.0.0.1:3300,10.0.0.1:6789]', /every address starts with v1: or v2:/],
    ['under_score.example', /neither an IP address nor a host name/],
    ['[v2:10.0.0.1:3300', /unbalanced brackets/],
  ])('rejects %j', (input, message) => {
    expect(settingsError(() => parseMonitors(input, 'clusters[0].monitors')).message).toMatch(
      new RegExp(`^clusters\\[0\\]\\.monitors: .*${message.source}`),
    );
  });
});

describe('createCephRbdPlatform options', () => {
  it('builds a platform with the declared capabilities and no secret in its description', () => {
    const platform = createCephRbdPlatform({ id: 'ceph-prod', clusters: [cluster] });
    expect(platform.specificationVersion).toBe('v2');
    expect(platform.kind).toBe('ceph-rbd');
    expect(platform.id).toBe('ceph-prod');
    expect(platform.capabilities).toEqual({
      snapshots: 'host',
      quiesce: false,
      retainsSnapshotAsBase: true,
      changeTracking: 'exact',
    });
    expect(platform.clusters).toEqual([
      {
        name: 'ceph-1',
        cluster: 'ceph',
        monitors: '10.0.0.201,10.0.0.202,10.0.0.203',
        pool: 'volumes',
        incrementalMode: 'exact',
        volumeTypes: [],
        user: 'cinder',
      },
    ]);
    expect(JSON.stringify(platform)).not.toContain(KEY);
    expect(createCephRbdPlatform({ id: 'p', kind: 'openstack-ceph', clusters: [cluster] }).kind).toBe(
      'openstack-ceph',
    );
  });

  it.each([
    [{ clusters: [cluster] }, 'id', /is required: a stable name you choose/],
    [{ id: '', clusters: [cluster] }, 'id', /must be a non-empty string/],
    [{ id: '  ', clusters: [cluster] }, 'id', /must be a non-empty string/],
    [{ id: 42, clusters: [cluster] }, 'id', /must be a non-empty string/],
    [{ id: ' ceph ', clusters: [cluster] }, 'id', /must not start or end with whitespace/],
    [{}, 'clusters', /list at least one Ceph cluster/],
    [{ clusters: [] }, 'clusters', /list at least one/],
    [{ clusters: [{ ...cluster, name: 'a/b' }] }, 'clusters[0].name', /"a\/b" is not valid/],
    [{ clusters: [cluster, cluster] }, 'clusters[1].name', /duplicate cluster name "ceph-1"/],
    [{ clusters: [{ ...cluster, monitors: '' }] }, 'clusters[0].monitors', /list the Ceph monitors/],
    [{ clusters: [{ ...cluster, pool: undefined }] }, 'clusters[0].pool', /is required/],
    [{ clusters: [{ ...cluster, pool: '-x' }] }, 'clusters[0].pool', /not a valid pool name/],
    [
      { clusters: [{ ...cluster, incrementalMode: 'rbd du' }] },
      'clusters[0].incrementalMode',
      /must be "exact" .* or "fast"/,
    ],
    [{ clusters: [{ ...cluster, cephx: true }] }, 'clusters[0].cephx', /must be `\{ user, keyring \}`/],
    [
      { clusters: [{ ...cluster, cephx: { user: 'cinder', keyring: 'AQ==' } }] },
      'clusters[0].cephx.keyring',
      /not a valid Ceph key/,
    ],
    [{ clusters: [{ ...cluster, cephx: { keyring: KEY } }] }, 'clusters[0].cephx.user', /name the Ceph user/],
    [{ clusters: [{ ...cluster, cluster: 'ceph prod' }] }, 'clusters[0].cluster', /not valid/],
    [{ clusters: [{ ...cluster, volumeTypes: 'ssd' }] }, 'clusters[0].volumeTypes', /must be a list/],
    [{ clusters: [{ ...cluster, volumeTypes: ['ssd', ''] }] }, 'clusters[0].volumeTypes[1]', /non-empty/],
    [{ clusters: [{ ...cluster, timeoutSeconds: 0 }] }, 'clusters[0].timeoutSeconds', /from 1 to 3600/],
    [{ clusters: [cluster], hosts: [] }, 'hosts', /list at least one host/],
    [{ clusters: [cluster], hosts: [{ images: ['volumes/a'] }] }, 'hosts[0].name', /is required/],
    [
      { clusters: [cluster], hosts: [{ name: 'h', images: [] }] },
      'hosts[0].images',
      /list at least one image/,
    ],
    [
      { clusters: [cluster], hosts: [{ name: 'h', images: ['a'] }] },
      'hosts[0].images[0]',
      /not "pool\/image"/,
    ],
    [
      { clusters: [cluster], hosts: [{ name: 'h', images: ['other:volumes/a'] }] },
      'hosts[0].images[0]',
      /no cluster is named "other"/,
    ],
    [
      {
        clusters: [cluster],
        hosts: [
          { name: 'h', images: ['volumes/a'] },
          { name: 'h', images: ['volumes/b'] },
        ],
      },
      'hosts[1].id',
      /duplicate host id "h"/,
    ],
    [
      { clusters: [cluster], hosts: [{ name: 'h', images: ['volumes/a', 'ceph-1:volumes/a'] }] },
      'hosts[0].images[1]',
      /already listed at hosts\[0\]\.images\[0\]/,
    ],
    [
      { clusters: [cluster, { ...cluster, name: 'ceph-2' }], hosts: [{ name: 'h', images: ['volumes/a'] }] },
      'hosts[0].images[0]',
      /say which one: "ceph-1:volumes\/a"/,
    ],
    [
      {
        clusters: [cluster],
        hosts: [{ name: 'h', images: ['volumes/a'] }],
        listHosts: async function* () {},
      },
      'hosts',
      /either `hosts` or `listHosts`/,
    ],
    [{ clusters: [cluster], listHosts: 'nope' }, 'listHosts', /must be a function/],
    [{ clusters: [cluster], rbdPath: '' }, 'rbdPath', /non-empty/],
  ])('rejects %j naming %s', (options, field, message) => {
    // Every case but the id's own has a valid id, so that the field named is the one the case breaks.
    const withId = field === 'id' ? options : { id: 'p', ...options };
    const error = settingsError(() => resolveCephRbdOptions(withId as never));
    expect(error.field).toBe(field);
    expect(error.message).toMatch(message);
  });

  it('resolves image refs with and without the cluster prefix', () => {
    const resolved = resolveCephRbdOptions({
      id: 'p',
      clusters: [cluster, { ...cluster, name: 'ceph-2', cephx: false }],
      hosts: [{ name: 'vm-100', images: ['ceph-1:rbd/vm-100-disk-0', 'ceph-2:volumes/volume-1'] }],
    });
    expect(resolved.hosts).toEqual([
      {
        id: 'vm-100',
        name: 'vm-100',
        disks: [
          {
            id: 'ceph-1/rbd/vm-100-disk-0',
            name: 'vm-100-disk-0',
            image: { cluster: 'ceph-1', pool: 'rbd', image: 'vm-100-disk-0' },
          },
          {
            id: 'ceph-2/volumes/volume-1',
            name: 'volume-1',
            image: { cluster: 'ceph-2', pool: 'volumes', image: 'volume-1' },
          },
        ],
      },
    ]);
    expect(resolved.clusters.get('ceph-2')?.connection.auth).toBe(false);
    expect(resolved.clusters.get('ceph-1')?.connection.timeoutSeconds).toBe(30);
  });
});
