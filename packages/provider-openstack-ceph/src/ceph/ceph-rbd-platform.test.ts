// The Ceph RBD platform's inventory and snapshots against a fake rbd (the real cluster covers them end to end in
// test/integration/): skipped disks instead of silent omissions or throws, v2 host snapshots, quiescing, deadlines
// and logging. The fake answers `ls --long` with a fixed listing and records every call's argv.
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Host, InvalidArgumentError, type Logger, QuiesceFailedError, TimeoutError } from '@drkit/core';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createFakeRbdFolder, rbdTempFolders } from '../../test/fake-rbd.js';
import type { CephRbdPlatformOptions } from './ceph-rbd-options.js';
import { createCephRbdPlatform } from './ceph-rbd-platform.js';

const privateTmp = mkdtempSync(join(tmpdir(), 'drkit-platform-test-'));
process.env.TMPDIR = privateTmp;
afterAll(() => rmSync(privateTmp, { recursive: true, force: true }));

const KEY = 'AQC5VglrRa/WHRAATEludz7fZlhA4ZKBxD9SHw==';
const LISTING = [
  { image: 'a', id: 'id-a', size: 1_048_576 },
  { image: 'a', snapshot: 'drkit-old', id: 'id-a', size: 1_048_576 },
  { image: '-bad', id: 'id-bad', size: 4096 },
  { image: 'b', id: 'id-b', size: 2048 },
];
let fake: Awaited<ReturnType<typeof createFakeRbdFolder>>;
let rbdPath: string;

beforeEach(async () => {
  fake = await createFakeRbdFolder();
  const listing = join(fake.dir, 'ls.json');
  await writeFile(listing, JSON.stringify(LISTING));
  rbdPath = await fake.script(
    'rbd',
    [
      `echo "$*" >> '${join(fake.dir, 'calls.log')}'`,
      'case " $* " in',
      `  *" ls --long "*) cat '${listing}'; exit 0 ;;`,
      '  *" ls "*) exit 0 ;;',
      '  *" snap create "*|*" snap rm "*) exit 0 ;;',
      'esac',
      'exit 22',
    ].join('\n'),
  );
});
afterEach(async () => {
  await fake.remove();
  expect(await rbdTempFolders()).toEqual([]);
});

function platform(overrides: Partial<CephRbdPlatformOptions> = {}) {
  return createCephRbdPlatform({
    id: 'fake-platform',
    clusters: [
      {
        name: 'fake',
        monitors: '192.0.2.1',
        cephx: { user: 'backup', keyring: KEY },
        pool: 'volumes',
        incrementalMode: 'exact',
      },
    ],
    rbdPath,
    ...overrides,
  });
}

async function calls(): Promise<string[]> {
  const text = await readFile(join(fake.dir, 'calls.log'), 'utf8').catch(() => '');
  return text.split('\n').filter((line) => line !== '');
}

async function collect(hosts: AsyncIterable<Host>): Promise<Host[]> {
  const list: Host[] = [];
  for await (const host of hosts) list.push(host);
  return list;
}

function recordingLogger(): { logger: Logger; text: () => string } {
  const lines: string[] = [];
  const record = (level: string) => (fields: Readonly<Record<string, unknown>>, message: string) =>
    lines.push(`${level} ${message} ${JSON.stringify(fields)}`);
  return {
    logger: { debug: record('debug'), info: record('info'), warn: record('warn'), error: record('error') },
    text: () => lines.join('\n'),
  };
}

// Each test starts fake rbd processes (sh scripts): fast alone, slower on 2 busy cores. Nothing is timed.
describe('the Ceph RBD platform (fake rbd)', { timeout: 30_000 }, () => {
  it('lists one host per image; an image whose name rbd cannot take is a skipped disk, not left out', async () => {
    const hosts = await collect(platform().hosts());
    expect(hosts.map((h) => [h.id, h.disks.map((d) => [d.id, d.capacityBytes])])).toEqual([
      ['fake/volumes/-bad', []],
      ['fake/volumes/a', [['fake/volumes/a', 1_048_576]]],
      ['fake/volumes/b', [['fake/volumes/b', 2048]]],
    ]);
    expect(hosts[0]!.skippedDisks).toEqual([
      {
        id: 'fake/volumes/-bad',
        name: '-bad',
        reason: 'unsupported-disk',
        detail: expect.stringMatching(/cannot be passed to rbd safely .* rename it with `rbd rename`/),
      },
    ]);
    expect(hosts[1]!.skippedDisks).toBeUndefined();
    expect(hosts[1]!.disks[0]!.attributes).toEqual({
      'ceph.cluster': 'fake',
      'ceph.pool': 'volumes',
      'ceph.image': 'a',
      'ceph.imageId': 'id-a',
    });
    // Nothing ran with the bad name.
    expect((await calls()).some((line) => line.includes('-bad'))).toBe(false);
  });

  it('a configured host whose image is missing lists it as a skipped disk (backing-missing) and stays normal', async () => {
    const p = platform({
      hosts: [{ id: 'db-1', name: 'db-1', images: ['volumes/a', 'volumes/gone', 'volumes/b'] }],
    });
    const [host] = await collect(p.hosts());
    expect(host!.disks.map((d) => d.id)).toEqual(['fake/volumes/a', 'fake/volumes/b']);
    expect(host!.skippedDisks).toEqual([
      {
        id: 'fake/volumes/gone',
        name: 'gone',
        reason: 'backing-missing',
        detail:
          'the RBD image volumes/gone does not exist on Ceph cluster fake (`rbd ls volumes` does not list it)',
      },
    ]);
    expect(await p.verify()).toMatchObject({ status: 'normal', hostCount: 1 });
  });

  it("passes the host source's skipped disks through, checked", async () => {
    const skipped = { id: 'v9', name: '/dev/vdc', reason: 'unsupported-disk', detail: 'an LVM volume' };
    const p = platform({
      *listHosts() {
        yield {
          id: 's1',
          name: 'server 1',
          disks: [{ id: 'v1', name: '/dev/vda', image: { cluster: 'fake', pool: 'volumes', image: 'a' } }],
          skippedDisks: [skipped],
        };
      },
    });
    const [host] = await collect(p.hosts());
    expect(host!.disks.map((d) => d.id)).toEqual(['v1']);
    expect(host!.skippedDisks).toEqual([skipped]);

    const bad = platform({
      *listHosts() {
        yield { id: 's1', name: 's', disks: [], skippedDisks: [{ ...skipped, reason: 'Not A Word' }] };
      },
    });
    await expect(collect(bad.hosts())).rejects.toSatisfy(InvalidArgumentError.isInstance);
  });

  it('createSnapshot snapshots every image and returns one reference per disk, consistency disk', async () => {
    const p = platform({ hosts: [{ id: 'h', name: 'h', images: ['volumes/a', 'volumes/b'] }] });
    const [host] = await collect(p.hosts());
    for (const quiesce of ['none', 'preferred'] as const) {
      const name = `drkit-${quiesce}`;
      const snapshot = await p.createSnapshot({ host: host!, name, quiesce });
      expect(snapshot).toEqual({
        hostId: 'h',
        name,
        disks: [
          { diskId: 'fake/volumes/a', ref: `fake/volumes/a@${name}` },
          { diskId: 'fake/volumes/b', ref: `fake/volumes/b@${name}` },
        ],
        consistency: 'disk',
      });
    }
    const creates = (await calls()).filter((line) => line.includes(' snap create '));
    expect(creates.map((line) => line.split(' ').at(-1))).toEqual(
      expect.arrayContaining(['volumes/a@drkit-none', 'volumes/b@drkit-none', 'volumes/a@drkit-preferred']),
    );
    expect(creates).toHaveLength(4);
  });

  it("quiesce 'required' is a QuiesceFailedError before anything is created", async () => {
    const p = platform({ hosts: [{ id: 'h', name: 'h', images: ['volumes/a'] }] });
    const [host] = await collect(p.hosts());
    const before = (await calls()).length;
    await expect(p.createSnapshot({ host: host!, name: 'drkit-q', quiesce: 'required' })).rejects.toSatisfy(
      (error: unknown) =>
        QuiesceFailedError.isInstance(error) && /cannot quiesce a guest/.test(error.message),
    );
    expect(await calls()).toHaveLength(before);
  });

  it('honours a deadline: hosts() rejects with a TimeoutError, verify() reports abnormal TIMEOUT', async () => {
    const p = platform();
    const past = Date.now() - 1;
    await expect(collect(p.hosts({ deadline: past }))).rejects.toSatisfy(TimeoutError.isInstance);
    expect(await p.verify({ deadline: past })).toMatchObject({ status: 'abnormal', code: 'TIMEOUT' });
    const host = (await collect(p.hosts())).find((h) => h.id === 'fake/volumes/a');
    await expect(
      p.createSnapshot({ host: host!, name: 'drkit-late', quiesce: 'none', deadline: past }),
    ).rejects.toSatisfy(TimeoutError.isInstance);
    await expect(
      p.releaseSnapshot({ hostId: host!.id, name: 'drkit-late', deadline: past }),
    ).rejects.toSatisfy(TimeoutError.isInstance);
    expect((await calls()).some((line) => line.includes('drkit-late'))).toBe(false);
  });

  it('logs the rbd commands of inventory and snapshots, never the key', async () => {
    const { logger, text } = recordingLogger();
    const p = platform({ hosts: [{ id: 'h', name: 'h', images: ['volumes/a'] }] });
    expect(await p.verify({ logger })).toMatchObject({ status: 'normal' });
    const [host] = await collect(p.hosts({ logger }));
    await p.createSnapshot({ host: host!, name: 'drkit-log', quiesce: 'none', logger });
    await p.releaseSnapshot({ hostId: 'h', name: 'drkit-log', logger });
    const logged = text();
    expect(logged).toContain('"argv":["rbd","ls","volumes"]');
    expect(logged).toContain('"argv":["rbd","ls","--long","volumes","--format","json"]');
    expect(logged).toContain('"argv":["rbd","snap","create","--no-progress","volumes/a@drkit-log"]');
    expect(logged).toContain('"argv":["rbd","snap","rm","--no-progress","volumes/a@drkit-log"]');
    expect(logged).not.toContain(KEY);
    expect(logged).not.toContain('keyring');
  });
});
