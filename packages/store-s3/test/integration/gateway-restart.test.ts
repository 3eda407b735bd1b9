// radosgw killed with SIGKILL mid-backup and started again on the same port, on an RGW of this file's own (the shared
// one is untouched). The fault is triggered by work (the n-th chunk put), never by time: the backup either fails with
// a typed retryable error or rides the restart out and completes; no listed point fails to restore byte-identical;
// no listed chunk is half-written; a backup after the restart completes and verify finds nothing damaged.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import {
  createBackupEngine,
  type DiskTaskOutcome,
  isRetryableError,
  openRepository,
  type Repository,
  type Store,
  UnreachableError,
} from '@drkit/core';
import { createLocalDiskPlatform } from '@drkit/provider-agent';
import { mutateDiskImage, writeDiskImage } from '@drkit/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { S3RetryOptions } from '../../src/index.js';
import { sha256File } from './disk-files.js';
import { type OwnRgw, rgwScript, startOwnRgw, triggeringStore } from './own-rgw.js';

const MiB = 1024 * 1024;
const CHUNK = MiB;
/** The chunk put before which radosgw is killed (the second backup writes about 15 new chunks). */
const KILL_AT = 4;

/** The point a task made; throws its error when it did not succeed. */
function pointOf(task: DiskTaskOutcome): string {
  if (task.status === 'succeeded') return task.result.pointId;
  throw task.status === 'failed' ? task.error : new Error(`the backup task was ${task.status}`);
}

describe('radosgw killed (SIGKILL) and restarted mid-backup', { timeout: 240_000 }, () => {
  let own: OwnRgw;
  let work: string;
  beforeAll(async () => {
    own = await startOwnRgw();
    work = await mkdtemp(join(tmpdir(), 'drkit-s3-restart-'));
  }, 240_000);
  afterAll(async () => {
    await own?.stop();
    if (work !== undefined) await rm(work, { recursive: true, force: true });
  }, 240_000);

  /** Backs the image up once through `repository`; the job's task. */
  async function backUp(repository: Repository, image: string) {
    const platform = createLocalDiskPlatform({
      id: 'local',
      hostId: 'h',
      hostName: 'h',
      disks: [{ path: image, name: 'disk.img' }],
    });
    const engine = createBackupEngine({ repository, platforms: [platform], hostLockPollIntervalMs: 100 });
    try {
      return (await engine.backup()).tasks[0]!;
    } finally {
      await engine.close();
    }
  }

  /** Every listed point restores to the bytes it was taken of; every listed chunk blob is whole (hash-checked). */
  async function expectNothingHalfWritten(
    repository: Repository,
    store: Store,
    sums: Map<string, string>,
  ): Promise<void> {
    for (const point of await repository.points()) {
      expect(sums.has(point.id), `point ${point.id} was listed but no backup reported it`).toBe(true);
      const target = join(work, `restore-${point.id}.img`);
      await repository.restore(point.id, { path: target });
      expect(await sha256File(target)).toBe(sums.get(point.id));
      await rm(target);
    }
    let chunks = 0;
    for await (const entry of store.list('chunks/')) {
      const id = Buffer.from(entry.key.split('/')[2]!, 'hex');
      // Also the chunks of a backup that failed: none may be a part of what it was to be.
      expect((await repository.readChunk(id, CHUNK)).byteLength).toBe(CHUNK);
      chunks++;
    }
    expect(chunks).toBeGreaterThan(0);
    const report = await repository.verify();
    expect(report.ok, inspect(report.damaged)).toBe(true);
  }

  it.each([
    {
      outcome:
        'fails with a typed retryable error (few attempts, radosgw stays down until the backup has failed)',
      ridesOut: false,
    },
    {
      outcome: 'completes (the retries wait for the restart: resumed from where the kill hit it)',
      ridesOut: true,
    },
  ])('$outcome', async ({ ridesOut }) => {
    const bucket = `drkit-${randomBytes(6).toString('hex')}`;
    await own.bucket(bucket);
    const image = join(work, `disk-${bucket}.img`);
    await writeDiskImage(image, { size: 24 * MiB, seed: 41 });

    // While radosgw is down, a retry waits for the restart (ridesOut) or not at all; either way bounded by work.
    let down: Promise<void> | undefined;
    let retries = 0;
    const retry: S3RetryOptions = ridesOut
      ? {
          attempts: 6,
          onRetry: () => void retries++,
          sleep: async () => {
            await down;
          },
        }
      : { attempts: 2, onRetry: () => void retries++, sleep: async () => {} };
    const s3 = own.store(bucket, retry);
    let killed = 0;
    let restart: Promise<void> | undefined;
    const store = triggeringStore(s3);
    // A small stale threshold where a failed backup leaves its locks behind (their delete failed too); the default
    // where the backup must outlive the outage.
    const repository = await openRepository({
      store,
      create: true,
      ...(ridesOut ? {} : { lockStaleAfterMs: 4000 }),
    });
    const sums = new Map<string, string>();
    try {
      // A first point, before any fault.
      const first = await backUp(repository, image);
      sums.set(pointOf(first), await sha256File(image));
      expect(killed).toBe(0);

      // The backup the kill hits: most chunks change, and radosgw dies before its KILL_AT-th chunk put.
      await mutateDiskImage(image, { fraction: 0.6, seed: 42, lastByte: true });
      const hitSum = await sha256File(image);
      store.arm(KILL_AT, async () => {
        killed++;
        let reopened!: () => void;
        down = new Promise<void>((resolve) => {
          reopened = resolve;
        });
        await rgwScript('kill-gateway', own.dir);
        // Reopened also when the restart fails: the retries then fail, and `await restart` says why.
        if (ridesOut) restart = rgwScript('restart-gateway', own.dir).finally(reopened);
      });
      const hit = await backUp(repository, image);
      expect(killed).toBe(1);
      expect(retries).toBeGreaterThan(0);
      if (ridesOut) {
        sums.set(pointOf(hit), hitSum);
      } else {
        expect(hit.status).toBe('failed');
        if (hit.status !== 'failed') return;
        expect(UnreachableError.isInstance(hit.error), inspect(hit.error)).toBe(true);
        expect(isRetryableError(hit.error)).toBe(true);
        // Nothing of it was committed; now radosgw comes back.
        restart = rgwScript('restart-gateway', own.dir);
      }
      await restart;
      expect(await repository.points()).toHaveLength(sums.size);
      await expectNothingHalfWritten(repository, store, sums);

      // After the restart: another change, another backup, and everything listed restores.
      await mutateDiskImage(image, { fraction: 0.1, seed: 43, zeroRanges: 1 });
      const after = await backUp(repository, image);
      sums.set(pointOf(after), await sha256File(image));
      expect(await repository.points()).toHaveLength(sums.size);
      await expectNothingHalfWritten(repository, store, sums);
    } finally {
      await restart?.catch(() => undefined);
      await repository.close();
      s3.destroy();
    }
  });
});
