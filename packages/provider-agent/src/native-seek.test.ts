import { closeSync, openSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pattern, writeSparseFile } from '../test/local-disk-helpers.js';
import { loadNativeSeek } from './native-seek.js';

let directory: string;
beforeAll(async () => {
  directory = await mkdtemp(join(tmpdir(), 'drkit-native-seek-'));
});
afterAll(async () => {
  await rm(directory, { recursive: true, force: true });
});

describe('the lseek addon', () => {
  const loaded = loadNativeSeek();
  if (!loaded)
    throw new Error('the lseek addon of @drkit/provider-agent is not built: run the package build');
  const native = loaded;

  it('loads once, from the prebuilt binary or a local build, and exports the whence values of this platform', () => {
    expect(loadNativeSeek()).toBe(native);
    expect(native.SEEK_SET).toBe(0);
    expect(native.SEEK_CUR).toBe(1);
    expect(native.SEEK_END).toBe(2);
    if (process.platform === 'linux') {
      expect(native.SEEK_DATA).toBe(3);
      expect(native.SEEK_HOLE).toBe(4);
    }
  });

  it('finds data and holes of a sparse file, -1 past the last data (ENXIO), and the end', async () => {
    const path = join(directory, 'sparse');
    await writeSparseFile(path, 1024 * 1024 + 10, [{ offset: 256 * 1024, data: pattern(8192, 1) }]);
    const fd = openSync(path, 'r');
    try {
      expect(native.seek(fd, 0, native.SEEK_DATA)).toBe(256 * 1024);
      expect(native.seek(fd, 256 * 1024, native.SEEK_HOLE)).toBe(256 * 1024 + 8192);
      expect(native.seek(fd, 256 * 1024 + 8192, native.SEEK_DATA)).toBe(-1);
      expect(native.seek(fd, 2 * 1024 * 1024, native.SEEK_DATA)).toBe(-1);
      expect(native.seek(fd, 0, native.SEEK_END)).toBe(1024 * 1024 + 10);
      expect(native.seek(fd, 5, native.SEEK_SET)).toBe(5);
      expect(native.seek(fd, 3, native.SEEK_CUR)).toBe(8);
      // Offsets past 4 GiB survive the trip through a JavaScript number.
      expect(native.seek(fd, 6 * 1024 ** 3 + 1, native.SEEK_SET)).toBe(6 * 1024 ** 3 + 1);
    } finally {
      closeSync(fd);
    }
  });

  it('throws errors shaped like Node system errors, and type errors for bad arguments', () => {
    const path = join(directory, 'closed');
    const fd = openSync(path, 'w');
    closeSync(fd);
    expect(() => native.seek(fd, 0, native.SEEK_SET)).toThrow(
      expect.objectContaining({ code: 'EBADF', errno: -9, syscall: 'lseek' }),
    );
    const open = openSync(path, 'r');
    try {
      expect(() => native.seek(open, -1, native.SEEK_SET)).toThrow(
        expect.objectContaining({ code: 'EINVAL' }),
      );
      expect(() => native.seek(open, 0, 99)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      expect(() => native.seek(open, 0.5, native.SEEK_SET)).toThrow(TypeError);
      expect(() => (native.seek as (...args: unknown[]) => number)(open, 0)).toThrow(TypeError);
      expect(() => (native.seek as (...args: unknown[]) => number)(String(open), 0, 0)).toThrow(TypeError);
    } finally {
      closeSync(open);
    }
  });
});
