// The core end-to-end test on the local-disk source: back up, change the disk in every way a disk changes,
// back up again several times, restore every point and compare bytes.
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackupEngine, createLocalFolderStore, openRepository, type Repository } from '@drkit/core';
import { hashDiskImage, mutateDiskImage, writeDiskImage } from '@drkit/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLocalDiskPlatform } from '../src/index.js';

const MiB = 1024 * 1024;
let dir: string;
let repository: Repository;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drkit-e2e-'));
  repository = await openRepository({
    store: createLocalFolderStore({ path: join(dir, 'repo') }),
    create: true,
  });
});
afterAll(async () => {
  await repository.close();
  await rm(dir, { recursive: true, force: true });
});

describe('end to end on the local-disk source', () => {
  // Five backups and five restores of a 28-48 MiB disk, hashed each time: about 3 s alone, several times that on 2
  // busy cores, so it gets a generous timeout of its own instead of vitest's 5 s.
  it('restores every point of a disk that was written, zeroed, grown and shrunk, byte for byte', {
    timeout: 120_000,
  }, async () => {
    const image = join(dir, 'disk.img');
    await writeDiskImage(image, { size: 40 * MiB + 12_345, seed: 'e2e' });
    const platform = createLocalDiskPlatform({
      id: 'local',
      disks: [{ path: image, id: 'disk-0' }],
      hostName: 'e2e-host',
    });
    const engine = createBackupEngine({ repository, platforms: [platform], chunkSize: 256 * 1024 });
    const expected: { sha: string; size: number }[] = [];
    const backup = async () => {
      expected.push({ sha: await hashDiskImage(image), size: (await stat(image)).size });
      const job = await engine.backup();
      const task = job.tasks[0];
      if (task?.status !== 'succeeded') throw (task as { error?: unknown })?.error ?? new Error('no task');
      return task.result;
    };
    try {
      const first = await backup();
      expect(first.validity).toEqual({ kind: 'full', reason: 'first-backup' });

      await mutateDiskImage(image, { fraction: 0.03, seed: 1, zeroRanges: 5, lastByte: true });
      const second = await backup();
      expect(second.validity).toEqual({ kind: 'superset' });
      // Most chunks are recognised as unchanged by their hash; few are written.
      expect(second.bytesSkippedUnchanged).toBeGreaterThan(second.bytesWritten);

      await mutateDiskImage(image, { fraction: 0.01, seed: 2, grow: 8 * MiB + 77 });
      const grown = await backup();
      expect(grown.capacityBytes).toBe(48 * MiB + 12_345 + 77);

      await mutateDiskImage(image, { fraction: 0.01, seed: 3, shrink: 20 * MiB + 5 });
      const shrunk = await backup();
      expect(shrunk.capacityBytes).toBe(28 * MiB + 12_345 + 72);

      // Nothing changed: nothing new is stored.
      const idle = await backup();
      expect(idle.bytesWritten).toBe(0);

      const points = await repository.points({ diskId: 'disk-0' });
      expect(points).toHaveLength(expected.length);
      for (const [i, point] of points.entries()) {
        const target = join(dir, `restore-${i}.img`);
        const { bytes } = await repository.restore(point.id, { path: target });
        expect(bytes).toBe(expected[i]!.size);
        expect(await hashDiskImage(target)).toBe(expected[i]!.sha);
        if (i > 0) expect(point.parentId).toBe(points[i - 1]!.id);
      }
      // And to a stream, for the last point.
      const chunks: Buffer[] = [];
      const { Writable } = await import('node:stream');
      await repository.restore(points.at(-1)!.id, {
        stream: new Writable({
          write(chunk: Buffer, _encoding, callback) {
            chunks.push(chunk);
            callback();
          },
        }),
      });
      expect(Buffer.concat(chunks).equals(await readFile(image))).toBe(true);
      const report = await repository.verify();
      expect(report.ok).toBe(true);
      expect(report.pointsChecked).toBe(expected.length);
    } finally {
      await engine.close();
    }
  });
});
