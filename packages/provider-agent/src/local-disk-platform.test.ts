import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { isMainThread } from 'node:worker_threads';
import { InvalidSettingsError, NotFoundError, PermissionError } from '@drkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pattern } from '../test/local-disk-helpers.js';
import { createLocalDiskPlatform, type LocalDiskPlatformOptions } from './local-disk-platform.js';

let directory: string;
let image: string;
let second: string;

beforeAll(async () => {
  directory = await mkdtemp(join(tmpdir(), 'drkit-local-platform-'));
  await chmod(directory, 0o755);
  image = join(directory, 'disk0.img');
  second = join(directory, 'disk1.img');
  await writeFile(image, pattern(12_288, 1));
  await writeFile(second, pattern(5000, 2));
});
afterAll(async () => {
  await rm(directory, { recursive: true, force: true });
});

/** Runs `body` with the effective uid of `nobody`, so permissions apply even when the tests run as root. */
async function asNobody<T>(body: () => Promise<T>): Promise<T> {
  const previous = process.geteuid!();
  process.seteuid!(65534);
  try {
    return await body();
  } finally {
    process.seteuid!(previous);
  }
}

describe('createLocalDiskPlatform: settings', () => {
  const invalid = (options: unknown, field: string) => {
    let thrown: unknown;
    try {
      createLocalDiskPlatform(options as LocalDiskPlatformOptions);
    } catch (error) {
      thrown = error;
    }
    expect(InvalidSettingsError.isInstance(thrown), `expected InvalidSettingsError for ${field}`).toBe(true);
    expect((thrown as InvalidSettingsError).field).toBe(field);
    expect((thrown as Error).message.startsWith(`${field}: `)).toBe(true);
  };

  it('names the offending field', () => {
    invalid(undefined, 'options');
    invalid({}, 'id');
    invalid({ disks: [{ path: image }] }, 'id');
    invalid({ id: 'local' }, 'disks');
    invalid({ id: 'local', disks: [] }, 'disks');
    invalid({ id: 'local', disks: 'disk.img' }, 'disks');
    invalid({ id: 'local', disks: [{ path: image }, null] }, 'disks[1]');
    invalid({ id: 'local', disks: [{ path: image }, { path: '' }] }, 'disks[1].path');
    invalid({ id: 'local', disks: [{ path: image }, { path: 42 }] }, 'disks[1].path');
    invalid({ id: 'local', disks: [{ path: 'a\0b' }] }, 'disks[0].path');
    invalid({ id: 'local', disks: [{ path: image, id: '' }] }, 'disks[0].id');
    invalid({ id: 'local', disks: [{ path: image, name: 7 }] }, 'disks[0].name');
    invalid(
      {
        id: 'local',
        disks: [
          { path: image, id: 'x' },
          { path: second, id: 'x' },
        ],
      },
      'disks[1].id',
    );
    invalid({ id: 'local', disks: [{ path: image, id: second }, { path: second }] }, 'disks[1].path');
    invalid(
      { id: 'local', disks: [{ path: image }, { path: relative(process.cwd(), image) }] },
      'disks[1].path',
    );
    invalid({ id: 'local', disks: [{ path: image }], readSizeBytes: 1000 }, 'readSizeBytes');
    invalid({ id: 'local', disks: [{ path: image }], readSizeBytes: 0 }, 'readSizeBytes');
    invalid({ id: 'local', disks: [{ path: image }], readSizeBytes: 512 * 1024 * 1024 }, 'readSizeBytes');
    invalid({ id: '', disks: [{ path: image }] }, 'id');
    invalid({ id: '  ', disks: [{ path: image }] }, 'id');
    invalid({ id: 7, disks: [{ path: image }] }, 'id');
    invalid({ id: 'local', disks: [{ path: image }], hostId: 3 }, 'hostId');
    invalid({ id: 'local', disks: [{ path: image }], hostName: ' ' }, 'hostName');
  });

  it('declares the local kind, v2, superset change tracking, no snapshots and no quiescing', () => {
    const platform = createLocalDiskPlatform({ id: 'local', disks: [{ path: image }] });
    expect(platform.specificationVersion).toBe('v2');
    expect(platform.kind).toBe('local');
    expect(platform.id).toBe('local');
    expect(platform.capabilities).toEqual({
      snapshots: 'none',
      quiesce: false,
      changeTracking: 'superset',
      retainsSnapshotAsBase: false,
    });
    expect(platform.createSnapshot).toBeUndefined();
    expect(platform.releaseSnapshot).toBeUndefined();
  });
});

describe('createLocalDiskPlatform: inventory', () => {
  it('lists one host, named after this machine by default, with one disk per path', async () => {
    const platform = createLocalDiskPlatform({
      id: 'local',
      disks: [{ path: relative(process.cwd(), image) }, { path: second, id: 'data', name: 'Data disk' }],
    });
    const hosts = [];
    for await (const host of platform.hosts()) hosts.push(host);
    expect(hosts).toHaveLength(1);
    const host = hosts[0]!;
    expect(host).toMatchObject({ id: hostname(), name: hostname(), platformId: platform.id });
    expect(host.disks).toEqual([
      {
        id: image,
        hostId: hostname(),
        name: image,
        capacityBytes: 12_288,
        attributes: { path: image, type: 'file' },
      },
      {
        id: 'data',
        hostId: hostname(),
        name: 'Data disk',
        capacityBytes: 5000,
        attributes: { path: second, type: 'file' },
      },
    ]);
  });

  it('uses the ids and names it is given', async () => {
    const platform = createLocalDiskPlatform({
      id: 'p1',
      hostId: 'h1',
      hostName: 'Host one',
      disks: [{ path: image }],
    });
    expect(platform.id).toBe('p1');
    for await (const host of platform.hosts()) {
      expect(host).toMatchObject({ id: 'h1', name: 'Host one', platformId: 'p1' });
      expect(host.disks[0]!.hostId).toBe('h1');
    }
  });

  it('verifies normal with one host when every disk can be read', async () => {
    const status = await createLocalDiskPlatform({
      id: 'local',
      disks: [{ path: image }, { path: second }],
    }).verify();
    expect(status).toMatchObject({ status: 'normal', hostCount: 1 });
    expect(Number.isNaN(Date.parse(status.checkedAt))).toBe(false);
  });

  it('verifies abnormal, saying what to do, for a missing path; hosts() and open() throw NotFoundError', async () => {
    const missing = join(directory, 'missing.img');
    const platform = createLocalDiskPlatform({ id: 'local', disks: [{ path: image }, { path: missing }] });
    const status = await platform.verify();
    expect(status).toMatchObject({ status: 'abnormal', code: 'NOT_FOUND' });
    expect(status.status === 'abnormal' && status.reason).toMatch(
      /missing\.img does not exist.*disks\[1\]\.path/,
    );
    const listing = (async () => {
      for await (const _host of platform.hosts());
    })();
    await expect(listing).rejects.toSatisfy(NotFoundError.isInstance);
    const disk = { id: missing, hostId: 'h', name: missing, capacityBytes: 0 };
    await expect(platform.changedBlockReader.open({ disk, chunkSize: 1024 * 1024 })).rejects.toSatisfy(
      NotFoundError.isInstance,
    );
    await expect(
      platform.changedBlockReader.open({ disk: { ...disk, id: 'not-configured' }, chunkSize: 1024 * 1024 }),
    ).rejects.toSatisfy(NotFoundError.isInstance);
  });

  it('reports a path that is not a disk (a directory) as invalid settings', async () => {
    const folder = join(directory, 'a-folder');
    await mkdir(folder, { recursive: true });
    const platform = createLocalDiskPlatform({ id: 'local', disks: [{ path: folder }] });
    expect(await platform.verify()).toMatchObject({ status: 'abnormal', code: 'INVALID_SETTINGS' });
    const disk = { id: folder, hostId: 'h', name: folder, capacityBytes: 0 };
    const failure = await platform.changedBlockReader
      .open({ disk, chunkSize: 1024 * 1024 })
      .catch((error: unknown) => error);
    expect(InvalidSettingsError.isInstance(failure)).toBe(true);
    expect((failure as InvalidSettingsError).field).toBe('disks[0].path');
    expect((failure as Error).message).toMatch(/is a directory/);
  });

  it('maps a permission problem to PermissionError and an abnormal status', async (context) => {
    const root = process.geteuid?.() === 0;
    if (root && !isMainThread) {
      context.skip('as root the test drops to nobody with seteuid, which worker threads cannot do');
      return;
    }
    const locked = join(directory, 'locked.img');
    await writeFile(locked, pattern(4096, 3));
    await chmod(locked, 0o000);
    const platform = createLocalDiskPlatform({ id: 'local', disks: [{ path: locked }] });
    const disk = { id: locked, hostId: 'h', name: locked, capacityBytes: 0 };
    const attempt = async () => {
      const status = await platform.verify();
      const failure = await platform.changedBlockReader
        .open({ disk, chunkSize: 1024 * 1024 })
        .catch((error: unknown) => error);
      return { status, failure };
    };
    // Root reads any file: drop to nobody for the attempt (the effective uid only, restored after).
    const { status, failure } = root ? await asNobody(attempt) : await attempt();
    expect(status).toMatchObject({ status: 'abnormal', code: 'PERMISSION_DENIED' });
    expect(PermissionError.isInstance(failure)).toBe(true);
    expect((failure as Error).message).toMatch(/cannot read .*locked\.img \(EACCES\).*run drkit as a user/);
  });

  it('honours an aborted signal in verify() and hosts()', async () => {
    const platform = createLocalDiskPlatform({ id: 'local', disks: [{ path: image }] });
    const reason = new Error('aborted');
    await expect(platform.verify({ signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    const listing = (async () => {
      for await (const _host of platform.hosts({ signal: AbortSignal.abort(reason) }));
    })();
    await expect(listing).rejects.toBe(reason);
  });
});
