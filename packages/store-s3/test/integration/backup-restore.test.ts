import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackupEngine, openRepository } from '@drkit/core';
import { createLocalDiskPlatform } from '@drkit/provider-agent';
import { mutateDiskImage, writeDiskImage } from '@drkit/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshBucket, removeBucket, rgwStore } from './rgw-fixture.js';

async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

describe('a repository on Ceph RGW 16', () => {
  let bucket: string;
  let work: string;
  beforeAll(async () => {
    bucket = await freshBucket();
    work = await mkdtemp(join(tmpdir(), 'drkit-s3-e2e-'));
  });
  afterAll(async () => {
    await removeBucket(bucket);
    await rm(work, { recursive: true, force: true });
  });

  it('backs up, backs up again after changes, and restores every point byte-identical (also from a second client)', async () => {
    const image = join(work, 'disk.img');
    await writeDiskImage(image, { size: 24 * 1024 * 1024, seed: 7 });
    const sums = [await sha256(image)];
    const store = rgwStore(bucket);
    const repository = await openRepository({ store, create: true });
    const platform = createLocalDiskPlatform({
      id: 'local',
      hostName: 'h',
      disks: [{ path: image, name: 'disk.img' }],
    });
    const engine = createBackupEngine({ repository, platforms: [platform] });
    const points: string[] = [];
    try {
      for (let round = 0; round < 2; round++) {
        if (round > 0) {
          await mutateDiskImage(image, { fraction: 0.05, seed: 11, zeroRanges: 2, lastByte: true });
          sums.push(await sha256(image));
        }
        const job = await engine.backup();
        const task = job.tasks[0]!;
        if (task.status === 'failed') throw task.error;
        if (task.status !== 'succeeded') throw new Error(`the backup task was ${task.status}`);
        points.push(task.result.pointId);
      }
    } finally {
      await engine.close();
      await repository.close();
    }
    expect(sums[0]).not.toBe(sums[1]);
    // A second client (its own store, sockets and repository object) reads what the first wrote.
    const other = rgwStore(bucket);
    const reopened = await openRepository({ store: other });
    try {
      for (const [i, pointId] of points.entries()) {
        const target = join(work, `restore-${i}.img`);
        await reopened.restore(pointId, { path: target });
        expect(await sha256(target)).toBe(sums[i]);
      }
      expect((await reopened.verify()).ok).toBe(true);
    } finally {
      await reopened.close();
      other.destroy();
      store.destroy();
    }
  });
});
