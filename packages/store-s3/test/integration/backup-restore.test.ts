import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { createBackupEngine, openRepository, type RepositoryEncryption } from '@drkit/core';
import { createLocalDiskPlatform } from '@drkit/provider-agent';
import { mutateDiskImage, writeDiskImage } from '@drkit/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { plainChunkIds, sha256File, writeMarkedRegion } from './disk-files.js';
import { freshBucket, rawClient, removeBucket, rgwStore } from './rgw-fixture.js';

const MiB = 1024 * 1024;
const PASSPHRASE = 'rgw end-to-end passphrase';

describe.each([
  { name: 'without encryption', encrypted: false },
  { name: 'encrypted at rest', encrypted: true },
])('a repository on Ceph RGW 16, $name', ({ encrypted }) => {
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
    // A marker in the data (a raw chunk: random bytes around it) and in the host's name (the point metadata).
    const marker = `drkit-plaintext-marker-${randomBytes(8).toString('hex')}`;
    const image = join(work, 'disk.img');
    await writeDiskImage(image, { size: 24 * MiB, seed: 7 });
    await writeMarkedRegion(image, marker, 3 * MiB);
    const sums = [await sha256File(image)];
    const plainIds = await plainChunkIds(image);
    const encryption: RepositoryEncryption | undefined = encrypted
      ? { passphrase: PASSPHRASE, scrypt: { N: 1024, r: 8, p: 1 } }
      : undefined;
    const store = rgwStore(bucket);
    const repository = await openRepository({
      store,
      create: true,
      ...(encryption === undefined ? {} : { encryption }),
    });
    const platform = createLocalDiskPlatform({
      id: 'local',
      hostId: 'h',
      hostName: `host-${marker}`,
      disks: [{ path: image, name: 'disk.img' }],
    });
    const engine = createBackupEngine({ repository, platforms: [platform] });
    const points: string[] = [];
    try {
      for (let round = 0; round < 2; round++) {
        if (round > 0) {
          await mutateDiskImage(image, { fraction: 0.05, seed: 11, zeroRanges: 2, lastByte: true });
          sums.push(await sha256File(image));
          for (const id of await plainChunkIds(image)) plainIds.add(id);
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

    // What the bucket holds, read with a plain S3 client: the marker, and chunk keys named by plain SHA-256.
    const client = rawClient();
    const keys: string[] = [];
    let withMarker = 0;
    for await (const entry of store.list('')) {
      keys.push(entry.key);
      const reply = await client.send(new GetObjectCommand({ Bucket: bucket, Key: `repo/${entry.key}` }));
      const body = Buffer.from(await reply.Body!.transformToByteArray());
      if (body.includes(marker)) withMarker++;
    }
    client.destroy();
    const chunkIds = keys.filter((key) => key.startsWith('chunks/')).map((key) => key.split('/')[2]!);
    expect(chunkIds.length).toBeGreaterThan(10);
    const plainNamed = chunkIds.filter((id) => plainIds.has(id)).length;
    if (encrypted) {
      expect(withMarker).toBe(0);
      expect(plainNamed).toBe(0);
    } else {
      // The control: without encryption the same checks do see the plain bytes and ids.
      expect(withMarker).toBeGreaterThanOrEqual(2); // the raw chunk and the point metadata (host name)
      expect(plainNamed).toBe(chunkIds.length);
    }

    // A second client (its own store, sockets and repository object, the passphrase only) reads what the first wrote.
    const other = rgwStore(bucket);
    const reopened = await openRepository({
      store: other,
      ...(encrypted ? { encryption: { passphrase: PASSPHRASE } } : {}),
    });
    try {
      expect((await reopened.points()).map((point) => point.id).sort()).toEqual([...points].sort());
      for (const [i, pointId] of points.entries()) {
        const target = join(work, `restore-${i}.img`);
        await reopened.restore(pointId, { path: target });
        expect(await sha256File(target)).toBe(sums[i]);
      }
      const report = await reopened.verify();
      expect(report.ok).toBe(true);
      expect(report.chunksChecked).toBe(chunkIds.length);
    } finally {
      await reopened.close();
      other.destroy();
      store.destroy();
    }
  });
});
