// The OpenStack platform with a logger, over nock (Keystone, Nova, Cinder) and a fake rbd (Ceph): what the logger
// sees of every HTTP request and rbd command, and that it never sees the password, the token or the Ceph key;
// skipped disks and deadlines through the whole listing. The real peers cover the rest in
// test/integration/openstack.
import { mkdtempSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Host, type Logger, TimeoutError } from '@drkit/core';
import nock from 'nock';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createFakeRbdFolder, rbdTempFolders } from '../../test/fake-rbd.js';
import { createOpenStackCephPlatform } from './openstack-ceph-platform.js';

const privateTmp = mkdtempSync(join(tmpdir(), 'drkit-openstack-logger-test-'));
process.env.TMPDIR = privateTmp;

const KEYSTONE = 'http://keystone.test:5000';
const NOVA = 'http://nova.test:8774';
const CINDER = 'http://cinder.test:8776';
const PASSWORD = 'p4ssw0rd-never-logged';
const TOKEN = 'gAAAAAB-secret-token-never-logged';
const KEY = 'AQC5VglrRa/WHRAATEludz7fZlhA4ZKBxD9SHw==';

let fake: Awaited<ReturnType<typeof createFakeRbdFolder>>;
let rbdPath: string;

beforeAll(() => nock.disableNetConnect());
beforeEach(async () => {
  fake = await createFakeRbdFolder();
  const listing = join(fake.dir, 'ls.json');
  // Ceph holds the image of volume v1 only: v2's type maps to this cluster, but its image does not exist.
  await writeFile(listing, JSON.stringify([{ image: 'volume-v1', id: 'id-1', size: 1_073_741_824 }]));
  rbdPath = await fake.script(
    'rbd',
    [
      'case " $* " in',
      `  *" ls --long "*) cat '${listing}'; exit 0 ;;`,
      '  *" ls "*) exit 0 ;;',
      `  *" snap create "*) echo "rbd: created with key ${KEY}" >&2; exit 0 ;;`,
      'esac',
      'exit 22',
    ].join('\n'),
  );
});
afterEach(async () => {
  nock.cleanAll();
  await fake.remove();
  expect(await rbdTempFolders()).toEqual([]);
});
afterAll(() => {
  nock.enableNetConnect();
  rmSync(privateTmp, { recursive: true, force: true });
});

function tokenBody() {
  const issued = new Date();
  return {
    token: {
      issued_at: issued.toISOString(),
      expires_at: new Date(issued.getTime() + 3_600_000).toISOString(),
      user: { id: 'u1', name: 'backup' },
      project: { id: 'p1', name: 'admin' },
      roles: [{ id: 'r1', name: 'admin' }],
      catalog: [
        {
          type: 'compute',
          endpoints: [{ interface: 'public', region_id: 'RegionOne', url: `${NOVA}/v2.1` }],
        },
        {
          type: 'volumev3',
          endpoints: [{ interface: 'public', region_id: 'RegionOne', url: `${CINDER}/v3/p1` }],
        },
      ],
    },
  };
}

function volume(id: string, volumeType: string, device: string, host: string) {
  return {
    id,
    name: `vol-${id}`,
    size: 1,
    volume_type: volumeType,
    bootable: 'false',
    status: 'in-use',
    'os-vol-host-attr:host': host,
    attachments: [{ server_id: 's1', device, attachment_id: `a-${id}` }],
  };
}

/** The cloud of one server with three volumes: v1 in Ceph, v2 mapped to Ceph but not there, v3 on LVM. */
function cloud(options: { pools: 'allowed' | 'forbidden'; times?: number }) {
  const times = options.times ?? 1;
  nock(KEYSTONE)
    .post('/v3/auth/tokens')
    .reply(201, () => tokenBody(), { 'X-Subject-Token': TOKEN });
  nock(CINDER)
    .get('/v3/p1/volumes/detail')
    .query(true)
    .times(times)
    .reply(200, {
      volumes: [
        volume('v1', 'ceph', '/dev/vda', 'node-1@ceph#ceph'),
        volume('v2', 'ceph', '/dev/vdb', 'node-1@ceph#ceph'),
        volume('v3', 'lvm', '/dev/vdc', 'node-2@lvm#lvm'),
      ],
    });
  const pools = nock(CINDER).get('/v3/p1/scheduler-stats/get_pools').query({ detail: 'true' }).times(times);
  if (options.pools === 'forbidden') {
    pools.reply(403, { forbidden: { message: 'Policy does not allow get_pools' } });
  } else {
    pools.reply(200, {
      pools: [
        {
          name: 'node-1@ceph#ceph',
          capabilities: {
            storage_protocol: 'ceph',
            location_info: 'ceph:/etc/ceph/ceph.conf:f-1:cinder:volumes',
          },
        },
        { name: 'node-2@lvm#lvm', capabilities: { storage_protocol: 'iSCSI', volume_backend_name: 'lvm' } },
      ],
    });
  }
  nock(NOVA)
    .get('/v2.1/servers/detail')
    .query(true)
    .times(times)
    .reply(200, {
      servers: [
        {
          id: 's1',
          name: 'web-1',
          tenant_id: 'p1',
          status: 'ACTIVE',
          flavor: { original_name: 'm1' },
          image: '',
          'os-extended-volumes:volumes_attached': [{ id: 'v1' }, { id: 'v2' }, { id: 'v3' }],
        },
      ],
    });
}

function platform() {
  return createOpenStackCephPlatform({
    id: 'openstack-test',
    openstack: {
      authUrl: `${KEYSTONE}/v3`,
      userDomainId: 'default',
      username: 'backup',
      password: PASSWORD,
      projectDomainId: 'default',
      projectName: 'admin',
      regionName: 'RegionOne',
    },
    ceph: [
      {
        name: 'ceph-1',
        monitors: '192.0.2.1',
        cephx: { user: 'backup', keyring: `[client.backup]\n\tkey = ${KEY}\n` },
        pool: 'volumes',
        incrementalMode: 'exact',
      },
    ],
    rbdPath,
  });
}

function recordingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const record = (level: string) => (fields: Readonly<Record<string, unknown>>, message: string) =>
    lines.push(`${level} ${message} ${JSON.stringify(fields)}`);
  return {
    logger: { debug: record('debug'), info: record('info'), warn: record('warn'), error: record('error') },
    lines,
  };
}

async function collect(hosts: AsyncIterable<Host>): Promise<Host[]> {
  const list: Host[] = [];
  for await (const host of hosts) list.push(host);
  return list;
}

// Each test starts fake rbd processes (sh scripts): fast alone, slower on 2 busy cores. Nothing is timed.
describe('the OpenStack platform with a logger (nock, fake rbd)', { timeout: 30_000 }, () => {
  it('logs method, host, path and status of each request and the argv of each rbd command, never a secret', async () => {
    cloud({ pools: 'allowed', times: 2 });
    const { logger, lines } = recordingLogger();
    const p = platform();
    const status = await p.verify({ logger });
    expect(status.status).toBe('normal');
    const [host] = await collect(p.hosts({ logger }));
    await p.createSnapshot({ host: host!, name: 'drkit-logged', quiesce: 'none', logger });
    const text = lines.join('\n');
    expect(text).toContain(
      '"service":"Keystone","method":"POST","host":"keystone.test:5000","path":"/v3/auth/tokens","status":201',
    );
    expect(text).toContain(
      '"service":"Cinder","method":"GET","host":"cinder.test:8776","path":"/v3/p1/volumes/detail","status":200',
    );
    expect(text).toContain('"path":"/v3/p1/scheduler-stats/get_pools","status":200');
    expect(text).toContain(
      '"service":"Nova","method":"GET","host":"nova.test:8774","path":"/v2.1/servers/detail","status":200',
    );
    expect(text).toContain('"argv":["rbd","snap","create","--no-progress","volumes/volume-v1@drkit-logged"]');
    expect(lines.every((line) => line.startsWith('debug '))).toBe(true);
    for (const secret of [PASSWORD, TOKEN, KEY, 'x-auth-token', 'X-Subject-Token', 'keyring']) {
      expect(text, secret).not.toContain(secret);
    }
  });

  it('a refused password is logged as a 401, without the password', async () => {
    nock(KEYSTONE)
      .post('/v3/auth/tokens')
      .reply(401, { error: { message: 'The request you have made requires authentication.' } });
    const { logger, lines } = recordingLogger();
    const status = await platform().verify({ logger });
    expect(status).toMatchObject({ status: 'abnormal', code: 'AUTHENTICATION_FAILED' });
    const text = lines.join('\n');
    expect(text).toContain('"path":"/v3/auth/tokens","status":401');
    expect(text).not.toContain(PASSWORD);
  });

  it('every disk it cannot protect is a skipped disk with its reason; verify() lists them with the server', async () => {
    cloud({ pools: 'allowed', times: 2 });
    const p = platform();
    const [host] = await collect(p.hosts());
    expect(host!.disks.map((d) => [d.id, d.name, d.capacityBytes])).toEqual([
      ['v1', '/dev/vda', 1_073_741_824],
    ]);
    expect(host!.skippedDisks?.map((d) => [d.id, d.name, d.reason])).toEqual([
      ['v3', '/dev/vdc', 'unsupported-disk'],
      ['v2', '/dev/vdb', 'backing-missing'],
    ]);
    expect(host!.skippedDisks?.[1]?.detail).toMatch(
      /^the RBD image volumes\/volume-v2 does not exist on Ceph cluster ceph-1 .*; Cinder volume v2 \(type "ceph"\) was mapped to Ceph cluster ceph-1: if it lives on another backend, list the Ceph volume types/,
    );
    expect(host!.attributes?.['openstack.skippedVolumes']).toBeUndefined();
    expect(host!.attributes?.['ceph.skippedDisks']).toBeUndefined();
    const status = await p.verify();
    expect(status.status === 'normal' && status.skippedDisks).toEqual([
      expect.objectContaining({
        id: 'v3',
        reason: 'unsupported-disk',
        serverId: 's1',
        serverName: 'web-1',
        volumeId: 'v3',
        device: '/dev/vdc',
        volumeType: 'lvm',
      }),
      expect.objectContaining({
        id: 'v2',
        reason: 'backing-missing',
        serverName: 'web-1',
        volumeId: 'v2',
        device: '/dev/vdb',
        volumeType: 'ceph',
      }),
    ]);
  });

  it("without the right to read Cinder's pools it maps by volume type alone", async () => {
    cloud({ pools: 'forbidden' });
    const { logger, lines } = recordingLogger();
    const [host] = await collect(platform().hosts({ logger }));
    // The cluster lists no volumeTypes, so it claims the LVM volume too: only Ceph can then say its image is not
    // there (backing-missing, with the hint to list the Ceph volume types), where the pools said unsupported-disk.
    expect(host!.skippedDisks?.map((d) => [d.id, d.reason])).toEqual([
      ['v2', 'backing-missing'],
      ['v3', 'backing-missing'],
    ]);
    expect(host!.skippedDisks?.[1]?.detail).toMatch(
      /Cinder volume v3 \(type "lvm"\) was mapped to Ceph cluster ceph-1/,
    );
    expect(lines.join('\n')).toMatch(/get_pools","status":403/);
  });

  it('a deadline bounds the whole listing: hosts() rejects with a TimeoutError, verify() is abnormal', async () => {
    const p = platform();
    await expect(collect(p.hosts({ deadline: 1 }))).rejects.toSatisfy(TimeoutError.isInstance);
    expect(await p.verify({ deadline: 1 })).toMatchObject({
      status: 'abnormal',
      code: 'TIMEOUT',
    });
    await expect(p.inventory({ deadline: 1 })).rejects.toSatisfy(TimeoutError.isInstance);
    expect(nock.pendingMocks()).toEqual([]);
  });
});
