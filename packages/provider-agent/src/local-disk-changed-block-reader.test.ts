import { mkdtemp, open, readFile, rename, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type Change,
  type DataChange,
  type Disk,
  InvalidArgumentError,
  type Logger,
  SourceProtocolError,
  TimeoutError,
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
  listExtents,
  openFileDescriptorCount,
  pattern,
  punchHole,
  writeSparseFile,
} from '../test/local-disk-helpers.js';
import type { LocalDiskPlatform, LocalDiskPlatformOptions } from './local-disk-platform.js';
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
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;
/** The chunk size most tests open sessions with (the engine's default). */
const CHUNK = MiB;
let directory: string;

beforeAll(async () => {
  directory = await mkdtemp(join(tmpdir(), 'drkit-local-disk-'));
});
afterAll(async () => {
  await rm(directory, { recursive: true, force: true });
});

/** A local-disk platform with the id every platform must have. */
function platformOf(options: Omit<LocalDiskPlatformOptions, 'id'>, nativeSeek?: NativeSeek | null) {
  const settings = { id: 'local-test', ...options };
  return nativeSeek === undefined
    ? createLocalDiskPlatform(settings)
    : createLocalDiskPlatformWith(settings, { nativeSeek });
}

async function onlyDisk(platform: LocalDiskPlatform): Promise<Disk> {
  for await (const host of platform.hosts()) {
    const disk = host.disks[0];
    if (disk) return disk;
  }
  throw new Error('no disk listed');
}

/** Opens the platform's only disk with the default chunk size and whatever else is given. */
async function openOnly(
  platform: LocalDiskPlatform,
  options: Partial<Parameters<LocalDiskPlatform['changedBlockReader']['open']>[0]> = {},
) {
  return platform.changedBlockReader.open({ disk: await onlyDisk(platform), chunkSize: CHUNK, ...options });
}

function dataChanges(changes: readonly Change[]): DataChange[] {
  return changes.filter((change): change is DataChange => change.kind === 'data');
}

/** A NativeSeek that counts its calls. */
function countingSeek(real: NativeSeek): NativeSeek & { calls: number } {
  const counting = {
    ...real,
    calls: 0,
    seek(fd: number, offset: number, whence: number) {
      counting.calls++;
      return real.seek(fd, offset, whence);
    },
  };
  return counting;
}

describe('local-disk reader: declarations', () => {
  it('is a list-then-read reader of 4 KiB blocks with 4 reads in flight', () => {
    const platform = platformOf({ disks: [{ path: join(directory, 'any.img') }] });
    expect(platform.changedBlockReader.mode).toBe('extents');
    expect(platform.changedBlockReader.blockSize).toBe(4096);
    expect(platform.changedBlockReader.maxConcurrentReads).toBe(4);
  });

  it('refuses a chunk size that is not a multiple of its block size', async () => {
    const path = join(directory, 'chunk-size.img');
    await writeFile(path, pattern(4096, 1));
    const platform = platformOf({ disks: [{ path }] });
    for (const chunkSize of [0, 1000, 4096 + 512, Number.NaN]) {
      await expect(openOnly(platform, { chunkSize })).rejects.toSatisfy(InvalidArgumentError.isInstance);
    }
  });
});

describe('local-disk reader: extents', () => {
  it('lists allocated ranges as data; over a base, the holes as zero extents too', async () => {
    const path = join(directory, 'sparse.img');
    const first = pattern(8 * KiB, 1);
    const second = pattern(4 * KiB, 2);
    await writeSparseFile(path, MiB, [
      { offset: 64 * KiB, data: first },
      { offset: 512 * KiB, data: second },
    ]);
    const platform = platformOf({ disks: [{ path }] });
    const session = await openOnly(platform);
    expect(session.mode).toBe('extents');
    expect(session.capacityBytes).toBe(MiB);
    expect(session.validity).toEqual({ kind: 'full', reason: 'first-backup' });
    expect(session.holeDetection).toBe('seek-data');
    const changes = await collect(session);
    // A full read lists only the data: the rest reads as zeros.
    expect(layoutOf(changes)).toEqual([`data ${64 * KiB} ${8 * KiB}`, `data ${512 * KiB} ${4 * KiB}`]);
    const [a, b] = dataChanges(changes);
    expect(Buffer.from(a!.data).equals(first)).toBe(true);
    expect(Buffer.from(b!.data).equals(second)).toBe(true);
    expect(byteDifference(applyChanges(new Uint8Array(0), MiB, changes), await readFile(path))).toBe('');
    const base = session.checkpoint();
    await session.close();

    const incremental = await openOnly(platform, { base });
    expect(incremental.validity).toEqual({ kind: 'superset' });
    const extents = await listExtents(incremental);
    expect(layoutOf(extents)).toEqual([
      `zero 0 ${64 * KiB}`,
      `data ${64 * KiB} ${8 * KiB}`,
      `zero ${72 * KiB} ${440 * KiB}`,
      `data ${512 * KiB} ${4 * KiB}`,
      `zero ${516 * KiB} ${508 * KiB}`,
    ]);
    expect(extents.every((extent) => extent.token === undefined)).toBe(true);
    await incremental.close();
  });

  it('lists a file of exactly one block as one data extent', async () => {
    const path = join(directory, 'one-block.img');
    const block = pattern(4096, 3);
    await writeFile(path, block);
    const session = await openOnly(platformOf({ disks: [{ path }] }));
    const changes = await collect(session);
    await session.close();
    expect(layoutOf(changes)).toEqual(['data 0 4096']);
    expect(Buffer.from(dataChanges(changes)[0]!.data).equals(block)).toBe(true);
  });

  it('reads an empty file as capacity 0 with no extents', async () => {
    const path = join(directory, 'empty.img');
    await writeFile(path, new Uint8Array(0));
    const platform = platformOf({ disks: [{ path }] });
    const disk = await onlyDisk(platform);
    expect(disk.capacityBytes).toBe(0);
    const session = await openOnly(platform);
    expect(session.capacityBytes).toBe(0);
    expect(await collect(session)).toEqual([]);
    expect(session.checkpoint().capacityBytes).toBe(0);
    await session.close();
  });

  it('lists files whose size is not a multiple of 4096, data or hole at the tail, the last extent ending at the capacity', async () => {
    const full = join(directory, 'odd-full.img');
    const bytes = pattern(10_000, 4);
    await writeFile(full, bytes);
    const fullSession = await openOnly(platformOf({ disks: [{ path: full }] }));
    const fullChanges = await collect(fullSession);
    await fullSession.close();
    expect(layoutOf(fullChanges)).toEqual(['data 0 10000']);
    expect(Buffer.from(dataChanges(fullChanges)[0]!.data).equals(bytes)).toBe(true);

    for (const [name, writes, fullLayout, incrementalLayout] of [
      [
        'odd-tail.img',
        [{ offset: 3 * 4096, data: pattern(100, 5) }],
        ['data 12288 100'],
        ['zero 0 12288', 'data 12288 100'],
      ],
      [
        'odd-hole.img',
        [{ offset: 0, data: pattern(4096, 6) }],
        ['data 0 4096'],
        ['data 0 4096', 'zero 4096 8292'],
      ],
    ] as const) {
      const path = join(directory, name);
      await writeSparseFile(path, 3 * 4096 + 100, writes);
      const platform = platformOf({ disks: [{ path }] });
      const first = await openOnly(platform);
      const changes = await collect(first);
      await first.close();
      expect(layoutOf(changes)).toEqual(fullLayout);
      expect(
        byteDifference(applyChanges(new Uint8Array(0), 3 * 4096 + 100, changes), await readFile(path)),
      ).toBe('');
      const next = await openOnly(platform, { base: first.checkpoint() });
      expect(layoutOf(await listExtents(next))).toEqual(incrementalLayout);
      await next.close();
    }
  });

  it('rounds data out to 4 KiB on a file system with smaller blocks (the extra bytes are holes, read as zeros)', async () => {
    const path = join(directory, 'small-blocks.img');
    // What a 1 KiB-block file system reports: data at [1 KiB, 5 KiB) and [9 KiB, 10 KiB), holes elsewhere.
    await writeSparseFile(path, 64 * KiB, [
      { offset: KiB, data: pattern(4 * KiB, 7) },
      { offset: 9 * KiB, data: pattern(KiB, 8) },
    ]);
    const real = builtNativeSeek();
    const regions = [
      [KiB, 5 * KiB],
      [9 * KiB, 10 * KiB],
    ] as const;
    const smallBlocks: NativeSeek = {
      ...real,
      seek(fd, offset, whence) {
        if (whence === real.SEEK_DATA) {
          const region = regions.find(([, end]) => end > offset);
          if (!region) return -1;
          return Math.max(offset, region[0]);
        }
        if (whence === real.SEEK_HOLE) {
          const region = regions.find(([start, end]) => start <= offset && offset < end);
          return region ? region[1] : offset;
        }
        return real.seek(fd, offset, whence);
      },
    };
    const platform = platformOf({ disks: [{ path }] }, smallBlocks);
    const first = await openOnly(platform);
    const changes = await collect(first);
    await first.close();
    expect(layoutOf(changes)).toEqual(['data 0 8192', 'data 8192 4096']);
    expect(byteDifference(applyChanges(new Uint8Array(0), 64 * KiB, changes), await readFile(path))).toBe('');
    const next = await openOnly(platform, { base: first.checkpoint() });
    expect(layoutOf(await listExtents(next))).toEqual([
      'data 0 8192',
      'data 8192 4096',
      `zero 12288 ${52 * KiB}`,
    ]);
    await next.close();
  });

  it('cuts data into extents of at most the read size, at multiples of it', async () => {
    const path = join(directory, 'chunking.img');
    const data = pattern(140 * KiB, 7);
    await writeSparseFile(path, MiB, [{ offset: 60 * KiB, data }]);
    const session = await openOnly(platformOf({ disks: [{ path }], readSizeBytes: 64 * KiB }));
    const changes = await collect(session);
    await session.close();
    expect(layoutOf(changes)).toEqual([
      `data ${60 * KiB} ${4 * KiB}`,
      `data ${64 * KiB} ${64 * KiB}`,
      `data ${128 * KiB} ${64 * KiB}`,
      `data ${192 * KiB} ${8 * KiB}`,
    ]);
    expect(Buffer.concat(dataChanges(changes).map((change) => change.data)).equals(data)).toBe(true);
  });

  it("cuts at the session's chunk size by default, an explicit read size winning; read buffers own their memory", async () => {
    const path = join(directory, 'chunk-size-hint.img');
    await writeFile(path, pattern(2 * MiB + 100, 9));
    const platform = platformOf({ disks: [{ path }] });
    const hinted = await openOnly(platform, { chunkSize: 512 * KiB });
    const changes = await collect(hinted);
    await hinted.close();
    expect(layoutOf(changes)).toEqual([
      `data 0 ${512 * KiB}`,
      `data ${512 * KiB} ${512 * KiB}`,
      `data ${MiB} ${512 * KiB}`,
      `data ${1536 * KiB} ${512 * KiB}`,
      `data ${2 * MiB} 100`,
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

    const explicit = await openOnly(platformOf({ disks: [{ path }], readSizeBytes: MiB }), {
      chunkSize: 512 * KiB,
    });
    expect(layoutOf(await listExtents(explicit))).toEqual([
      `data 0 ${MiB}`,
      `data ${MiB} ${MiB}`,
      `data ${2 * MiB} 100`,
    ]);
    await explicit.close();
  });

  it("reads into the engine's allocate buffers, exactly the bytes asked, 4 reads at once", async () => {
    const path = join(directory, 'allocate.img');
    const bytes = pattern(MiB, 10);
    await writeFile(path, bytes);
    const allocated: Uint8Array[] = [];
    const session = await openOnly(platformOf({ disks: [{ path }] }), {
      chunkSize: 64 * KiB,
      allocate: (length) => {
        const buffer = new Uint8Array(length).fill(0xdb);
        allocated.push(buffer);
        return buffer;
      },
    });
    try {
      const requests = [
        { offset: 0, length: 4096 },
        { offset: 4096, length: 60 * KiB },
        { offset: 64 * KiB, length: 64 * KiB },
        { offset: MiB - 8192, length: 8192 },
      ];
      const answers = await Promise.all(requests.map((request) => session.read(request)));
      for (const [index, { offset, length }] of requests.entries()) {
        const { data } = answers[index]!;
        expect(data.buffer).toBe(allocated[index]!.buffer);
        expect(byteDifference(data, bytes.subarray(offset, offset + length))).toBe('');
      }
      expect(answers.every((answer) => answer.checksum === undefined)).toBe(true);
      // readRange is random access of the engine's own: a fresh buffer, not an allocated one.
      expect(allocated).toHaveLength(4);
      expect(
        byteDifference(await session.readRange({ offset: 100, length: 1000 }), bytes.subarray(100, 1100)),
      ).toBe('');
      expect(allocated).toHaveLength(4);
      for (const request of [
        { offset: MiB - 4096, length: 8192 },
        { offset: -4096, length: 4096 },
        { offset: 0, length: 0 },
      ]) {
        await expect(session.read(request)).rejects.toSatisfy(InvalidArgumentError.isInstance);
      }
    } finally {
      await session.close();
    }
  });

  it('falls back to listing everything as data where SEEK_DATA is unsupported (EINVAL), and says so', async () => {
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
    const session = await openOnly(platformOf({ disks: [{ path }] }, withoutSeekData));
    expect(session.holeDetection).toBe('unsupported');
    const changes = await collect(session);
    await session.close();
    expect(layoutOf(changes)).toEqual([`data 0 ${64 * KiB}`]);
    expect(byteDifference(dataChanges(changes)[0]!.data, await readFile(path))).toBe('');
    expect(holeQueries).toBe(1);
  });

  it('lists everything as data, byte for byte, when the addon is missing, and warns once with a typed code', async () => {
    const path = join(directory, 'no-addon.img');
    const data = pattern(4096, 11);
    await writeSparseFile(path, 64 * KiB + 100, [{ offset: 16 * KiB, data }]);
    const warnings: (Error & { code?: string })[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on('warning', onWarning);
    try {
      const platform = platformOf({ disks: [{ path }] }, null);
      for (let round = 0; round < 2; round++) {
        const session = await openOnly(platform, { chunkSize: 32 * KiB });
        expect(session.holeDetection).toBe('no-addon');
        const changes = await collect(session);
        await session.close();
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

describe('local-disk reader: what a huge sparse disk costs', () => {
  // 64 MiB written into an 8 TiB sparse file, then listed and read: a second or two alone, more on 2 busy cores.
  it('an 8 TiB sparse file holding 64 MiB costs what 64 MiB costs: a few lseeks per range, 64 MiB of reads', {
    timeout: 120_000,
  }, async () => {
    const path = join(directory, 'huge-sparse.img');
    const islands = 16;
    const island = 4 * MiB;
    const spacing = (8 * TiB) / islands;
    const writes = Array.from({ length: islands }, (_, index) => ({
      offset: index * spacing + (index % 2 === 0 ? 0 : 12 * MiB),
      data: pattern(island, 100 + index),
    }));
    await writeSparseFile(path, 8 * TiB, writes);
    const seek = countingSeek(builtNativeSeek());
    const platform = platformOf({ disks: [{ path }] }, seek);
    expect((await onlyDisk(platform)).capacityBytes).toBe(8 * TiB);

    const full = await openOnly(platform, { chunkSize: 4 * MiB });
    seek.calls = 0;
    let listedBytes = 0;
    let readBytes = 0;
    const extents = await listExtents(full);
    for (const extent of extents) {
      expect(extent.kind).toBe('data');
      listedBytes += extent.length;
      const { data } = await full.read(extent);
      readBytes += data.length;
      const source = writes.find((write) => write.offset === extent.offset)!;
      expect(byteDifference(data, source.data)).toBe('');
    }
    expect(extents).toHaveLength(islands);
    expect(listedBytes).toBe(islands * island);
    expect(readBytes).toBe(64 * MiB);
    // One SEEK_DATA and one SEEK_HOLE per island, and the SEEK_DATA that finds the trailing hole.
    expect(seek.calls).toBe(2 * islands + 1);
    const base = full.checkpoint();
    await full.close();

    const incremental = await openOnly(platform, { chunkSize: 4 * MiB, base });
    seek.calls = 0;
    const listed = await listExtents(incremental);
    await incremental.close();
    const zeros = listed.filter((extent) => extent.kind === 'zero');
    expect(listed.filter((extent) => extent.kind === 'data')).toHaveLength(islands);
    expect(zeros).toHaveLength(islands); // between the islands (the first starts at 0) and after the last
    expect(zeros.reduce((sum, extent) => sum + extent.length, 0)).toBe(8 * TiB - 64 * MiB);
    expect(seek.calls).toBe(2 * islands + 1);
  });

  it('lists as it goes: the first extent of many costs two lseeks, not a walk of the whole file', async () => {
    const path = join(directory, 'many-ranges.img');
    const ranges = 2000;
    await writeSparseFile(
      path,
      ranges * 64 * KiB,
      Array.from({ length: ranges }, (_, index) => ({
        offset: index * 64 * KiB,
        data: pattern(4096, index),
      })),
    );
    const seek = countingSeek(builtNativeSeek());
    const session = await openOnly(platformOf({ disks: [{ path }] }, seek));
    try {
      seek.calls = 0;
      const iterator = session.extents()[Symbol.asyncIterator]();
      const first = await iterator.next();
      expect(first.value).toEqual({ kind: 'data', offset: 0, length: 4096 });
      expect(seek.calls).toBe(2);
      await iterator.return?.();
    } finally {
      await session.close();
    }
  });
});

describe('local-disk reader: checkpoints and changes between sessions', () => {
  it('reads a superset after a base, with the new capacity when the disk grew or shrank', async () => {
    const path = join(directory, 'resize.img');
    await writeSparseFile(path, 256 * KiB, [{ offset: 0, data: pattern(64 * KiB, 10) }]);
    const platform = platformOf({ disks: [{ path, id: 'resize' }] });
    const first = await openOnly(platform);
    const firstChanges = await collect(first);
    await first.close();
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
    const grown = await openOnly(platform, { base });
    expect(grown.validity).toEqual({ kind: 'superset' });
    expect(grown.capacityBytes).toBe(512 * KiB + 100);
    const grownChanges = await collect(grown);
    await grown.close();
    expect(coverageProblem(grownChanges, grown.capacityBytes)).toBe('');
    const grownContent = applyChanges(firstContent, grown.capacityBytes, grownChanges);
    expect(byteDifference(grownContent, await readFile(path))).toBe('');
    expect(grown.checkpoint().capacityBytes).toBe(512 * KiB + 100);

    // Shrink below the first size.
    await truncate(path, 32 * KiB + 1);
    const shrunk = await openOnly(platform, { base: grown.checkpoint() });
    expect(shrunk.validity).toEqual({ kind: 'superset' });
    expect(shrunk.capacityBytes).toBe(32 * KiB + 1);
    const shrunkChanges = await collect(shrunk);
    await shrunk.close();
    expect(coverageProblem(shrunkChanges, shrunk.capacityBytes)).toBe('');
    expect(
      byteDifference(applyChanges(grownContent, shrunk.capacityBytes, shrunkChanges), await readFile(path)),
    ).toBe('');
  });

  it.skipIf(!canPunchHoles)('lists a zero extent where data became a hole since the base', async () => {
    const path = join(directory, 'punched.img');
    await writeFile(path, pattern(256 * KiB, 12));
    const platform = platformOf({ disks: [{ path }] });
    const first = await openOnly(platform);
    const firstContent = applyChanges(new Uint8Array(0), first.capacityBytes, await collect(first));
    await first.close();
    await punchHole(path, 64 * KiB, 128 * KiB);
    const next = await openOnly(platform, { base: first.checkpoint() });
    const changes = await collect(next);
    await next.close();
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
    const platform = platformOf({ disks: [{ path }] });
    const first = await openOnly(platform);
    await first.close();
    const base = first.checkpoint();
    // Same path, same size, new file: a new inode.
    await writeFile(`${path}.new`, pattern(8 * KiB, 14));
    await rename(`${path}.new`, path);
    const next = await openOnly(platform, { base });
    expect(next.validity).toMatchObject({ kind: 'full', reason: 'disk-recreated' });
    expect((next.validity as { detail?: string }).detail).toContain('file:');
    await next.close();
  });

  it("reads in full with the given reason, or checkpoint-invalid for a token it did not write or another disk's checkpoint", async () => {
    const path = join(directory, 'reasons.img');
    await writeFile(path, pattern(4096, 15));
    const platform = platformOf({ disks: [{ path, id: 'reasons' }] });
    const requested = await openOnly(platform, { fullReason: 'requested' });
    expect(requested.validity).toEqual({ kind: 'full', reason: 'requested' });
    await requested.close();
    const foreign = {
      diskId: 'reasons',
      token: 'change-id-52',
      capacityBytes: 4096,
      createdAt: '2024-01-01T00:00:00Z',
    };
    const garbled = await openOnly(platform, { base: foreign });
    expect(garbled.validity).toMatchObject({ kind: 'full', reason: 'checkpoint-invalid' });
    expect(layoutOf(await collect(garbled))).toEqual(['data 0 4096']);
    await garbled.close();
    const own = requested.checkpoint();
    const otherDisk = await openOnly(platform, { base: { ...own, diskId: 'another-disk' } });
    expect(otherDisk.validity).toMatchObject({ kind: 'full', reason: 'checkpoint-invalid' });
    expect((otherDisk.validity as { detail?: string }).detail).toMatch(/belongs to disk another-disk/);
    await otherDisk.close();
  });

  it('reports a disk that shrank while it was read, instead of inventing bytes', async () => {
    const path = join(directory, 'shrinking.img');
    await writeFile(path, pattern(256 * KiB, 16));
    const platform = platformOf({ disks: [{ path }], readSizeBytes: 64 * KiB });
    const listing = await openOnly(platform);
    const reading = await openOnly(platform);
    await truncate(path, 32 * KiB);
    try {
      for (const attempt of [
        () => collect(listing),
        () => reading.read({ offset: 64 * KiB, length: 64 * KiB }),
      ]) {
        const failure = await attempt().then(
          () => undefined,
          (error: unknown) => error,
        );
        expect(SourceProtocolError.isInstance(failure)).toBe(true);
        expect((failure as SourceProtocolError).retryable).toBe(true);
        expect((failure as Error).message).toMatch(/shrank/);
      }
    } finally {
      await listing.close();
      await reading.close();
    }
  });
});

describe('local-disk reader: resources, outcomes, abort, deadlines, logging', () => {
  it('holds the file until close(), also after the listing ended or was broken off', async () => {
    const path = join(directory, 'break.img');
    const bytes = pattern(2 * MiB, 17);
    await writeFile(path, bytes);
    const platform = platformOf({ disks: [{ path }], readSizeBytes: 64 * KiB });
    const before = openFileDescriptorCount();
    if (before === undefined) throw new Error('this test needs /proc/self/fd');
    const session = await openOnly(platform);
    expect(openFileDescriptorCount()).toBe(before + 1);
    let seen = 0;
    for await (const extent of session.extents()) {
      expect(extent.kind).toBe('data');
      if (++seen === 3) break;
    }
    expect(seen).toBe(3);
    // Still open: the engine completes chunks with readRange until it closes the session.
    expect(openFileDescriptorCount()).toBe(before + 1);
    expect(byteDifference(await session.readRange({ offset: 5, length: 10 }), bytes.subarray(5, 15))).toBe(
      '',
    );
    await session.close();
    await session.close();
    await session[Symbol.asyncDispose]();
    expect(openFileDescriptorCount()).toBe(before);
    await expect(session.readRange({ offset: 0, length: 1 })).rejects.toSatisfy(
      InvalidArgumentError.isInstance,
    );
    await expect(session.read({ offset: 0, length: 1 })).rejects.toSatisfy(InvalidArgumentError.isInstance);
    await expect(listExtents(session)).rejects.toSatisfy(InvalidArgumentError.isInstance);

    {
      await using scoped = await openOnly(platform);
      expect(openFileDescriptorCount()).toBe(before + 1);
      const boom = new Error('consumer failed');
      await expect(
        (async () => {
          for await (const _extent of scoped.extents()) throw boom;
        })(),
      ).rejects.toBe(boom);
      await expect(listExtents(scoped)).rejects.toSatisfy(InvalidArgumentError.isInstance);
    }
    expect(openFileDescriptorCount()).toBe(before);
  });

  it('commit and abandon are no-ops, harmless twice and after close', async () => {
    const path = join(directory, 'outcomes.img');
    await writeFile(path, pattern(8 * KiB, 18));
    const platform = platformOf({ disks: [{ path }] });
    const committed = await openOnly(platform);
    await collect(committed);
    const point = { pointId: 'p1', checkpoint: committed.checkpoint() };
    await committed.commit(point);
    await committed.commit(point);
    await committed.abandon({ kind: 'failed', error: new Error('late') });
    await committed.close();
    await committed.commit(point);
    const abandoned = await openOnly(platform, { base: point.checkpoint });
    await abandoned.abandon({ kind: 'cancelled', error: 'stop' });
    await abandoned.abandon({ kind: 'cancelled', error: 'stop' });
    await abandoned.close();
    await abandoned.abandon({ kind: 'cancelled', error: 'stop' });
    // Nothing is tracked, so nothing was lost: the next read from the same base is the same superset.
    const next = await openOnly(platform, { base: point.checkpoint });
    expect(next.validity).toEqual({ kind: 'superset' });
    expect(layoutOf(await listExtents(next))).toEqual([`data 0 ${8 * KiB}`]);
    await next.close();
  });

  it('rejects with the signal reason, unwrapped, and leaves nothing open once closed', async () => {
    const path = join(directory, 'abort.img');
    await writeFile(path, pattern(MiB, 19));
    const platform = platformOf({ disks: [{ path }], readSizeBytes: 64 * KiB });
    const before = openFileDescriptorCount()!;
    const reason = new Error('stop now');
    await expect(openOnly(platform, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    expect(openFileDescriptorCount()).toBe(before);

    const controller = new AbortController();
    const session = await openOnly(platform);
    let seen = 0;
    const iteration = (async () => {
      for await (const _extent of session.extents({ signal: controller.signal })) {
        if (++seen === 2) controller.abort('a string reason');
      }
    })();
    await expect(iteration).rejects.toBe('a string reason');
    expect(seen).toBe(2);
    await expect(session.read({ offset: 0, length: 10 }, { signal: AbortSignal.abort(reason) })).rejects.toBe(
      reason,
    );
    await expect(
      session.readRange({ offset: 0, length: 10 }, { signal: AbortSignal.abort(reason) }),
    ).rejects.toBe(reason);
    await session.close();
    expect(openFileDescriptorCount()).toBe(before);
  });

  it('rejects a call made past its deadline with a TimeoutError; the request timeout does not apply to a pread', async () => {
    const path = join(directory, 'deadline.img');
    await writeFile(path, pattern(64 * KiB, 20));
    const platform = platformOf({ disks: [{ path }] });
    const past = Date.now() - 1000;
    await expect(openOnly(platform, { deadline: past })).rejects.toSatisfy(TimeoutError.isInstance);
    await expect(platform.verify({ deadline: past })).rejects.toSatisfy(TimeoutError.isInstance);
    const session = await openOnly(platform, { requestTimeoutSeconds: 1, deadline: Date.now() + 60_000 });
    try {
      await expect(session.read({ offset: 0, length: 4096 }, { deadline: past })).rejects.toSatisfy(
        TimeoutError.isInstance,
      );
      await expect(session.readRange({ offset: 0, length: 1 }, { deadline: past })).rejects.toSatisfy(
        TimeoutError.isInstance,
      );
      await expect(listExtents(session)).resolves.toHaveLength(1);
      const { data } = await session.read({ offset: 0, length: 4096 }, { deadline: Date.now() + 60_000 });
      expect(data).toHaveLength(4096);
    } finally {
      await session.close();
    }
  });

  it('logs a debug line when a session opens, lists and closes, with counts, and none per read', async () => {
    const path = join(directory, 'logged.img');
    await writeFile(path, pattern(MiB, 21));
    const lines: { level: string; fields: Record<string, unknown>; message: string }[] = [];
    const at =
      (level: string) =>
      (fields: Readonly<Record<string, unknown>>, message: string): void => {
        lines.push({ level, fields: { ...fields }, message });
      };
    const logger: Logger = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
    const session = await openOnly(platformOf({ disks: [{ path, id: 'logged' }] }), {
      chunkSize: 64 * KiB,
      logger,
    });
    const changes = await collect(session);
    await session.commit({ pointId: 'p', checkpoint: session.checkpoint() });
    await session.close();
    expect(changes).toHaveLength(16);
    expect(lines.map((line) => `${line.level} ${line.message}`)).toEqual([
      'debug local disk session opened',
      'debug local disk extents listed',
      'debug local disk session closed',
    ]);
    expect(lines[0]!.fields).toMatchObject({
      diskId: 'logged',
      capacityBytes: MiB,
      validity: 'full',
      reason: 'first-backup',
    });
    expect(lines[1]!.fields).toMatchObject({
      dataExtents: 16,
      zeroExtents: 0,
      dataBytes: MiB,
      complete: true,
    });
    expect(lines[2]!.fields).toMatchObject({ reads: 16, bytesRead: MiB, outcome: 'committed' });
  });

  it('reads arbitrary ranges with readRange and refuses ranges past the capacity', async () => {
    const path = join(directory, 'range.img');
    const bytes = pattern(100_000, 20);
    await writeFile(path, bytes);
    const session = await openOnly(platformOf({ disks: [{ path }] }));
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
        const platform = platformOf(
          { disks: [{ path: device, id: 'loop' }], readSizeBytes: MiB },
          nativeSeek,
        );
        const disk = await onlyDisk(platform);
        expect(disk.capacityBytes).toBe(size);
        expect(disk.attributes).toMatchObject({ type: 'block-device', path: device });
        const session = await openOnly(platform);
        expect(session.capacityBytes).toBe(size);
        const changes = await collect(session);
        await session.close();
        // A block device has no holes: the full read lists all of it as data.
        expect(coverageProblem(changes, size)).toBe('');
        expect(changes.every((change) => change.kind === 'data' && change.data.length <= MiB)).toBe(true);
        expect(byteDifference(applyChanges(new Uint8Array(0), size, changes), await readFile(image))).toBe(
          '',
        );
        const token = JSON.parse(session.checkpoint().token) as { identity: string };
        expect(token.identity).toMatch(/^block-device:\d+:\/dev\/loop\d+$/);
        const again = await openOnly(platform, { base: session.checkpoint() });
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
