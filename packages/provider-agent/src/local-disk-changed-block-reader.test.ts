import { mkdtemp, open, readFile, rename, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type Change,
  type DataChange,
  type Disk,
  InvalidArgumentError,
  SourceProtocolError,
} from '@drkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  applyChanges,
  attachLoopDevice,
  byteDifference,
  canPunchHoles,
  collect,
  coverageProblem,
  detachLoopDevice,
  layoutOf,
  openFileDescriptorCount,
  pattern,
  punchHole,
  writeSparseFile,
} from '../test/local-disk-helpers.js';
import type { LocalDiskPlatform } from './local-disk-platform.js';
import { createLocalDiskPlatform, createLocalDiskPlatformWith } from './local-disk-platform.js';
import {
  loadNativeSeek,
  type NativeSeek,
  SEEK_DATA_UNAVAILABLE_WARNING,
  tryLoadNativeSeek,
} from './native-seek.js';

/** The package's addon, which these tests need built (CI builds it). */
function builtNativeSeek(): NativeSeek {
  const native = loadNativeSeek();
  if (!native)
    throw new Error('the lseek addon of @drkit/provider-agent is not built: run the package build');
  return native;
}

const KiB = 1024;
const MiB = 1024 * KiB;
let directory: string;

beforeAll(async () => {
  directory = await mkdtemp(join(tmpdir(), 'drkit-local-disk-'));
});
afterAll(async () => {
  await rm(directory, { recursive: true, force: true });
});

async function onlyDisk(platform: LocalDiskPlatform): Promise<Disk> {
  for await (const host of platform.hosts()) {
    const disk = host.disks[0];
    if (disk) return disk;
  }
  throw new Error('no disk listed');
}

function dataChanges(changes: readonly Change[]): DataChange[] {
  return changes.filter((change): change is DataChange => change.kind === 'data');
}

describe('local-disk reader: change sets', () => {
  it('yields holes as zero changes and allocated extents as data, covering the file exactly', async () => {
    const path = join(directory, 'sparse.img');
    const first = pattern(8 * KiB, 1);
    const second = pattern(4 * KiB, 2);
    await writeSparseFile(path, MiB, [
      { offset: 64 * KiB, data: first },
      { offset: 512 * KiB, data: second },
    ]);
    const platform = createLocalDiskPlatform({ disks: [{ path }] });
    const disk = await onlyDisk(platform);
    const session = await platform.changedBlockReader.open({ disk });
    expect(session.capacityBytes).toBe(MiB);
    expect(session.validity).toEqual({ kind: 'full', reason: 'first-backup' });
    expect(session.holeDetection).toBe('seek-data');
    const changes = await collect(session);
    expect(layoutOf(changes)).toEqual([
      `zero 0 ${64 * KiB}`,
      `data ${64 * KiB} ${8 * KiB}`,
      `zero ${72 * KiB} ${440 * KiB}`,
      `data ${512 * KiB} ${4 * KiB}`,
      `zero ${516 * KiB} ${508 * KiB}`,
    ]);
    const [a, b] = dataChanges(changes);
    expect(Buffer.from(a!.data).equals(first)).toBe(true);
    expect(Buffer.from(b!.data).equals(second)).toBe(true);
    expect(byteDifference(applyChanges(new Uint8Array(0), MiB, changes), await readFile(path))).toBe('');
  });

  it('reads a file of exactly one block as one data change', async () => {
    const path = join(directory, 'one-block.img');
    const block = pattern(4096, 3);
    await writeFile(path, block);
    const platform = createLocalDiskPlatform({ disks: [{ path }] });
    const changes = await collect(await platform.changedBlockReader.open({ disk: await onlyDisk(platform) }));
    expect(layoutOf(changes)).toEqual(['data 0 4096']);
    expect(Buffer.from(dataChanges(changes)[0]!.data).equals(block)).toBe(true);
  });

  it('reads an empty file as capacity 0 with no changes', async () => {
    const path = join(directory, 'empty.img');
    await writeFile(path, new Uint8Array(0));
    const platform = createLocalDiskPlatform({ disks: [{ path }] });
    const disk = await onlyDisk(platform);
    expect(disk.capacityBytes).toBe(0);
    const session = await platform.changedBlockReader.open({ disk });
    expect(session.capacityBytes).toBe(0);
    expect(await collect(session)).toEqual([]);
    expect(session.checkpoint().capacityBytes).toBe(0);
  });

  it('reads files whose size is not a multiple of 4096, data or hole at the tail', async () => {
    const full = join(directory, 'odd-full.img');
    const bytes = pattern(10_000, 4);
    await writeFile(full, bytes);
    const fullPlatform = createLocalDiskPlatform({ disks: [{ path: full }] });
    const fullChanges = await collect(
      await fullPlatform.changedBlockReader.open({ disk: await onlyDisk(fullPlatform) }),
    );
    expect(layoutOf(fullChanges)).toEqual(['data 0 10000']);
    expect(Buffer.from(dataChanges(fullChanges)[0]!.data).equals(bytes)).toBe(true);

    const tail = join(directory, 'odd-tail.img');
    await writeSparseFile(tail, 3 * 4096 + 100, [{ offset: 3 * 4096, data: pattern(100, 5) }]);
    const tailPlatform = createLocalDiskPlatform({ disks: [{ path: tail }] });
    const tailChanges = await collect(
      await tailPlatform.changedBlockReader.open({ disk: await onlyDisk(tailPlatform) }),
    );
    expect(layoutOf(tailChanges)).toEqual(['zero 0 12288', 'data 12288 100']);

    const hole = join(directory, 'odd-hole.img');
    await writeSparseFile(hole, 3 * 4096 + 100, [{ offset: 0, data: pattern(4096, 6) }]);
    const holePlatform = createLocalDiskPlatform({ disks: [{ path: hole }] });
    const holeChanges = await collect(
      await holePlatform.changedBlockReader.open({ disk: await onlyDisk(holePlatform) }),
    );
    expect(layoutOf(holeChanges)).toEqual(['data 0 4096', 'zero 4096 8292']);
  });

  it('cuts data into pieces of at most the read size, at multiples of it', async () => {
    const path = join(directory, 'chunking.img');
    const data = pattern(140 * KiB, 7);
    await writeSparseFile(path, MiB, [{ offset: 60 * KiB, data }]);
    const platform = createLocalDiskPlatform({ disks: [{ path }], readSizeBytes: 64 * KiB });
    const changes = await collect(await platform.changedBlockReader.open({ disk: await onlyDisk(platform) }));
    expect(layoutOf(changes)).toEqual([
      `zero 0 ${60 * KiB}`,
      `data ${60 * KiB} ${4 * KiB}`,
      `data ${64 * KiB} ${64 * KiB}`,
      `data ${128 * KiB} ${64 * KiB}`,
      `data ${192 * KiB} ${8 * KiB}`,
      `zero ${200 * KiB} ${824 * KiB}`,
    ]);
    expect(Buffer.concat(dataChanges(changes).map((change) => change.data)).equals(data)).toBe(true);
  });

  it('uses 4 MiB pieces by default and yields buffers that own their memory (transferable)', async () => {
    const path = join(directory, 'default-read-size.img');
    await writeFile(path, pattern(9 * MiB + 5, 8));
    const platform = createLocalDiskPlatform({ disks: [{ path }] });
    const changes = await collect(await platform.changedBlockReader.open({ disk: await onlyDisk(platform) }));
    expect(layoutOf(changes)).toEqual([
      `data 0 ${4 * MiB}`,
      `data ${4 * MiB} ${4 * MiB}`,
      `data ${8 * MiB} ${MiB + 5}`,
    ]);
    const buffers = dataChanges(changes).map((change) => change.data);
    expect(new Set(buffers.map((data) => data.buffer)).size).toBe(buffers.length);
    for (const data of buffers) {
      expect(data.byteOffset).toBe(0);
      expect(data.buffer.byteLength).toBe(data.length);
    }
    const first = buffers[0]!;
    const copy = first.slice();
    const moved = structuredClone(first, { transfer: [first.buffer as ArrayBuffer] });
    expect(first.length).toBe(0);
    expect(byteDifference(moved, copy)).toBe('');
  });

  it("cuts data at the engine's chunk size when no read size is configured", async () => {
    const path = join(directory, 'chunk-size-hint.img');
    await writeFile(path, pattern(2 * MiB + 100, 9));
    const platform = createLocalDiskPlatform({ disks: [{ path }] });
    const disk = await onlyDisk(platform);
    const hinted = await collect(await platform.changedBlockReader.open({ disk, chunkSize: 512 * KiB }));
    expect(layoutOf(hinted)).toEqual([
      `data 0 ${512 * KiB}`,
      `data ${512 * KiB} ${512 * KiB}`,
      `data ${MiB} ${512 * KiB}`,
      `data ${1536 * KiB} ${512 * KiB}`,
      `data ${2 * MiB} 100`,
    ]);
    // An explicit read size wins over the hint.
    const explicit = createLocalDiskPlatform({ disks: [{ path }], readSizeBytes: MiB });
    const changes = await collect(
      await explicit.changedBlockReader.open({ disk: await onlyDisk(explicit), chunkSize: 512 * KiB }),
    );
    expect(layoutOf(changes)).toEqual([`data 0 ${MiB}`, `data ${MiB} ${MiB}`, `data ${2 * MiB} 100`]);
  });
  it('falls back to reading everything as data where SEEK_DATA is unsupported (EINVAL), and says so', async () => {
    const path = join(directory, 'no-seek-data.img');
    const data = pattern(4096, 9);
    await writeSparseFile(path, 64 * KiB, [{ offset: 16 * KiB, data }]);
    const real = builtNativeSeek();
    let holeQueries = 0;
    const withoutSeekData: NativeSeek = {
      ...real,
      seek(fd, offset, whence) {
        if (whence === real.SEEK_DATA || whence === real.SEEK_HOLE) {
          holeQueries++;
          throw Object.assign(new Error('EINVAL: invalid argument, lseek'), { code: 'EINVAL' });
        }
        return real.seek(fd, offset, whence);
      },
    };
    const platform = createLocalDiskPlatformWith({ disks: [{ path }] }, { nativeSeek: withoutSeekData });
    const session = await platform.changedBlockReader.open({ disk: await onlyDisk(platform) });
    expect(session.holeDetection).toBe('unsupported');
    const changes = await collect(session);
    expect(layoutOf(changes)).toEqual([`data 0 ${64 * KiB}`]);
    expect(byteDifference(dataChanges(changes)[0]!.data, await readFile(path))).toBe('');
    expect(holeQueries).toBe(1);
  });

  it('reads everything as data, byte for byte, when the addon is missing, and warns once with a typed code', async () => {
    const path = join(directory, 'no-addon.img');
    const data = pattern(4096, 11);
    await writeSparseFile(path, 64 * KiB + 100, [{ offset: 16 * KiB, data }]);
    const warnings: (Error & { code?: string })[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on('warning', onWarning);
    try {
      const platform = createLocalDiskPlatformWith({ disks: [{ path }] }, { nativeSeek: null });
      for (let round = 0; round < 2; round++) {
        const session = await platform.changedBlockReader.open({
          disk: await onlyDisk(platform),
          chunkSize: 32 * KiB,
        });
        expect(session.holeDetection).toBe('no-addon');
        const changes = await collect(session);
        expect(layoutOf(changes)).toEqual([
          `data 0 ${32 * KiB}`,
          `data ${32 * KiB} ${32 * KiB}`,
          `data ${64 * KiB} 100`,
        ]);
        expect(
          byteDifference(
            applyChanges(new Uint8Array(0), session.capacityBytes, changes),
            await readFile(path),
          ),
        ).toBe('');
      }
      // process.emitWarning delivers on the next tick.
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off('warning', onWarning);
    }
    const ours = warnings.filter((warning) => warning.code === SEEK_DATA_UNAVAILABLE_WARNING);
    expect(ours).toHaveLength(1);
    expect(ours[0]!.name).toBe('DrkitWarning');
    expect(ours[0]!.message).toMatch(/holes of sparse disk images are read as data/);
  });

  it('cannot load an addon from a folder that has none, and says why', async () => {
    const empty = await mkdtemp(join(directory, 'no-addon-'));
    const result = tryLoadNativeSeek(empty);
    expect(typeof result).toBe('string');
    expect(result).toMatch(/No native build was found/);
  });
});

describe('local-disk reader: checkpoints and changes between sessions', () => {
  it('reads a superset after a base, with the new capacity when the disk grew or shrank', async () => {
    const path = join(directory, 'resize.img');
    await writeSparseFile(path, 256 * KiB, [{ offset: 0, data: pattern(64 * KiB, 10) }]);
    const platform = createLocalDiskPlatform({ disks: [{ path, id: 'resize' }] });
    const first = await platform.changedBlockReader.open({ disk: await onlyDisk(platform) });
    const firstChanges = await collect(first);
    const firstContent = applyChanges(new Uint8Array(0), first.capacityBytes, firstChanges);
    const base = first.checkpoint();
    expect(base).toMatchObject({ diskId: 'resize', capacityBytes: 256 * KiB });
    expect(JSON.parse(base.token)).toMatchObject({
      format: 'drkit-local-disk',
      version: 1,
      sizeBytes: 256 * KiB,
    });

    // Grow, with data in the new part.
    await truncate(path, 512 * KiB + 100);
    await writeAt(path, 400 * KiB, pattern(4 * KiB, 11));
    const grown = await platform.changedBlockReader.open({ disk: await onlyDisk(platform), base });
    expect(grown.validity).toEqual({ kind: 'superset' });
    expect(grown.capacityBytes).toBe(512 * KiB + 100);
    const grownChanges = await collect(grown);
    expect(coverageProblem(grownChanges, grown.capacityBytes)).toBe('');
    const grownContent = applyChanges(firstContent, grown.capacityBytes, grownChanges);
    expect(byteDifference(grownContent, await readFile(path))).toBe('');
    expect(grown.checkpoint().capacityBytes).toBe(512 * KiB + 100);

    // Shrink below the first size.
    await truncate(path, 32 * KiB + 1);
    const shrunk = await platform.changedBlockReader.open({
      disk: await onlyDisk(platform),
      base: grown.checkpoint(),
    });
    expect(shrunk.validity).toEqual({ kind: 'superset' });
    expect(shrunk.capacityBytes).toBe(32 * KiB + 1);
    const shrunkChanges = await collect(shrunk);
    expect(
      byteDifference(applyChanges(grownContent, shrunk.capacityBytes, shrunkChanges), await readFile(path)),
    ).toBe('');
  });

  it.skipIf(!canPunchHoles)('yields a zero change where data became a hole since the base', async () => {
    const path = join(directory, 'punched.img');
    await writeFile(path, pattern(256 * KiB, 12));
    const platform = createLocalDiskPlatform({ disks: [{ path }] });
    const first = await platform.changedBlockReader.open({ disk: await onlyDisk(platform) });
    const firstContent = applyChanges(new Uint8Array(0), first.capacityBytes, await collect(first));
    await punchHole(path, 64 * KiB, 128 * KiB);
    const next = await platform.changedBlockReader.open({
      disk: await onlyDisk(platform),
      base: first.checkpoint(),
    });
    const changes = await collect(next);
    expect(layoutOf(changes)).toEqual([
      `data 0 ${64 * KiB}`,
      `zero ${64 * KiB} ${128 * KiB}`,
      `data ${192 * KiB} ${64 * KiB}`,
    ]);
    const content = applyChanges(firstContent, next.capacityBytes, changes);
    expect(byteDifference(content, await readFile(path))).toBe('');
    expect(content.subarray(64 * KiB, 192 * KiB).every((byte) => byte === 0)).toBe(true);
  });

  it('reads in full with reason disk-recreated when the file was replaced', async () => {
    const path = join(directory, 'recreated.img');
    await writeFile(path, pattern(8 * KiB, 13));
    const platform = createLocalDiskPlatform({ disks: [{ path }] });
    const first = await platform.changedBlockReader.open({ disk: await onlyDisk(platform) });
    await first.close();
    const base = first.checkpoint();
    // Same path, same size, new file: a new inode.
    await writeFile(`${path}.new`, pattern(8 * KiB, 14));
    await rename(`${path}.new`, path);
    const next = await platform.changedBlockReader.open({ disk: await onlyDisk(platform), base });
    expect(next.validity).toMatchObject({ kind: 'full', reason: 'disk-recreated' });
    expect((next.validity as { detail?: string }).detail).toContain('file:');
    await next.close();
  });

  it('reads in full with the given reason, or tracking-reset for a token it did not write', async () => {
    const path = join(directory, 'reasons.img');
    await writeFile(path, pattern(4096, 15));
    const platform = createLocalDiskPlatform({ disks: [{ path, id: 'reasons' }] });
    const disk = await onlyDisk(platform);
    const requested = await platform.changedBlockReader.open({ disk, fullReason: 'requested' });
    expect(requested.validity).toEqual({ kind: 'full', reason: 'requested' });
    await requested.close();
    const foreign = {
      diskId: 'reasons',
      token: 'change-id-52',
      capacityBytes: 4096,
      createdAt: '2024-01-01T00:00:00Z',
    };
    const reset = await platform.changedBlockReader.open({ disk, base: foreign });
    expect(reset.validity).toMatchObject({ kind: 'full', reason: 'tracking-reset' });
    await reset.close();
    await expect(
      platform.changedBlockReader.open({ disk, base: { ...foreign, diskId: 'another-disk' } }),
    ).rejects.toSatisfy(InvalidArgumentError.isInstance);
  });

  it('reports a disk that shrank while it was read, instead of inventing bytes', async () => {
    const path = join(directory, 'shrinking.img');
    await writeFile(path, pattern(256 * KiB, 16));
    const platform = createLocalDiskPlatform({ disks: [{ path }], readSizeBytes: 64 * KiB });
    const session = await platform.changedBlockReader.open({ disk: await onlyDisk(platform) });
    await truncate(path, 32 * KiB);
    const failure = await collect(session).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(SourceProtocolError.isInstance(failure)).toBe(true);
    expect((failure as SourceProtocolError).retryable).toBe(true);
    expect((failure as Error).message).toMatch(/shrank/);
  });
});

describe('local-disk reader: resources, abort, random access', () => {
  it('closes the file when the consumer breaks out of changes(), without close()', async () => {
    const path = join(directory, 'break.img');
    await writeFile(path, pattern(2 * MiB, 17));
    const platform = createLocalDiskPlatform({ disks: [{ path }], readSizeBytes: 64 * KiB });
    const disk = await onlyDisk(platform);
    const before = openFileDescriptorCount();
    if (before === undefined) throw new Error('this test needs /proc/self/fd');
    const session = await platform.changedBlockReader.open({ disk });
    expect(openFileDescriptorCount()).toBe(before + 1);
    let seen = 0;
    for await (const change of session.changes()) {
      expect(change.kind).toBe('data');
      if (++seen === 3) break;
    }
    expect(seen).toBe(3);
    expect(openFileDescriptorCount()).toBe(before);
    await session.close();
    await session[Symbol.asyncDispose]();
    expect(openFileDescriptorCount()).toBe(before);
    await expect(session.readRange({ offset: 0, length: 1 })).rejects.toSatisfy(
      InvalidArgumentError.isInstance,
    );
    await expect(collect(session)).rejects.toSatisfy(InvalidArgumentError.isInstance);
  });

  it('closes the file on close() without iterating, and on an error inside the loop', async () => {
    const path = join(directory, 'close.img');
    await writeFile(path, pattern(256 * KiB, 18));
    const platform = createLocalDiskPlatform({ disks: [{ path }], readSizeBytes: 64 * KiB });
    const disk = await onlyDisk(platform);
    const before = openFileDescriptorCount()!;
    const unused = await platform.changedBlockReader.open({ disk });
    await unused.close();
    expect(openFileDescriptorCount()).toBe(before);
    const failing = await platform.changedBlockReader.open({ disk });
    const boom = new Error('consumer failed');
    await expect(
      (async () => {
        for await (const _change of failing.changes()) throw boom;
      })(),
    ).rejects.toBe(boom);
    expect(openFileDescriptorCount()).toBe(before);
  });

  it('rejects with the signal reason, unwrapped, and closes the file', async () => {
    const path = join(directory, 'abort.img');
    await writeFile(path, pattern(MiB, 19));
    const platform = createLocalDiskPlatform({ disks: [{ path }], readSizeBytes: 64 * KiB });
    const disk = await onlyDisk(platform);
    const before = openFileDescriptorCount()!;
    const reason = new Error('stop now');
    await expect(platform.changedBlockReader.open({ disk, signal: AbortSignal.abort(reason) })).rejects.toBe(
      reason,
    );
    expect(openFileDescriptorCount()).toBe(before);

    const controller = new AbortController();
    const session = await platform.changedBlockReader.open({ disk });
    let seen = 0;
    const iteration = (async () => {
      for await (const _change of session.changes({ signal: controller.signal })) {
        if (++seen === 2) controller.abort('a string reason');
      }
    })();
    await expect(iteration).rejects.toBe('a string reason');
    expect(seen).toBe(2);
    expect(openFileDescriptorCount()).toBe(before);

    const ranged = await platform.changedBlockReader.open({ disk });
    await expect(
      ranged.readRange({ offset: 0, length: 10 }, { signal: AbortSignal.abort(reason) }),
    ).rejects.toBe(reason);
    await ranged.close();
  });

  it('reads arbitrary ranges with readRange and refuses ranges past the capacity', async () => {
    const path = join(directory, 'range.img');
    const bytes = pattern(100_000, 20);
    await writeFile(path, bytes);
    const platform = createLocalDiskPlatform({ disks: [{ path }] });
    const session = await platform.changedBlockReader.open({ disk: await onlyDisk(platform) });
    try {
      const range = await session.readRange({ offset: 12_345, length: 54_321 });
      expect(Buffer.from(range).equals(bytes.subarray(12_345, 12_345 + 54_321))).toBe(true);
      expect(Buffer.from(await session.readRange({ offset: 99_999, length: 1 }))[0]).toBe(bytes[99_999]);
      for (const extent of [
        { offset: 99_999, length: 2 },
        { offset: -1, length: 1 },
        { offset: 0, length: 0 },
        { offset: 0.5, length: 1 },
      ]) {
        await expect(session.readRange(extent)).rejects.toSatisfy(InvalidArgumentError.isInstance);
      }
    } finally {
      await session.close();
    }
  });
});

describe('local-disk reader: a real block device', () => {
  for (const [how, nativeSeek] of [
    ['SEEK_END', undefined],
    ['/sys/dev/block without the addon', null],
  ] as const) {
    it(`reads a loop device: capacity from ${how}, content byte for byte`, async (context) => {
      const image = join(directory, `loop-backing-${nativeSeek === null ? 'sysfs' : 'seek'}.img`);
      const size = 3 * MiB + 512 * KiB;
      await writeSparseFile(image, size, [
        { offset: 0, data: pattern(64 * KiB, 21) },
        { offset: 2 * MiB, data: pattern(128 * KiB, 22) },
      ]);
      const { device, why } = await attachLoopDevice(image);
      if (!device) {
        context.skip(`no block device to test with: ${why}`);
        return;
      }
      try {
        const platform = createLocalDiskPlatformWith(
          { disks: [{ path: device, id: 'loop' }], readSizeBytes: MiB },
          nativeSeek === null ? { nativeSeek } : {},
        );
        const disk = await onlyDisk(platform);
        expect(disk.capacityBytes).toBe(size);
        expect(disk.attributes).toMatchObject({ type: 'block-device', path: device });
        const session = await platform.changedBlockReader.open({ disk });
        expect(session.capacityBytes).toBe(size);
        const changes = await collect(session);
        expect(coverageProblem(changes, size)).toBe('');
        expect(changes.every((change) => change.kind === 'data' && change.data.length <= MiB)).toBe(true);
        expect(byteDifference(applyChanges(new Uint8Array(0), size, changes), await readFile(image))).toBe(
          '',
        );
        const token = JSON.parse(session.checkpoint().token) as { identity: string };
        expect(token.identity).toMatch(/^block-device:\d+:\/dev\/loop\d+$/);
        const again = await platform.changedBlockReader.open({ disk, base: session.checkpoint() });
        expect(again.validity).toEqual({ kind: 'superset' });
        await again.close();
      } finally {
        await detachLoopDevice(device);
      }
    });
  }
});

async function writeAt(path: string, offset: number, data: Uint8Array): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.write(data, 0, data.length, offset);
  } finally {
    await handle.close();
  }
}
