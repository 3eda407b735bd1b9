// Throttling storms through the engine against the AWS emulator: every read completes, every block is read once,
// and the blocks served per second of the emulator's clock stay at its quota. Time is virtual: the limiters sleep
// by moving the emulator's manual clock, whose quota buckets refill by it, so nothing here waits in real time and
// nothing asserts on the wall clock.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackupEngine, createLocalFolderStore, openRepository, type Repository } from '@drkit/core';
import type { AwsEmulatorOptions } from '@drkit/testkit';
import { afterEach, expect, it, vi } from 'vitest';
import type { AwsPlatform } from '../src/index.js';
import { type AwsTestBed, BLOCK, startAwsTestBed, succeeded, virtualTime } from './aws-test-setup.js';

vi.setConfig({ testTimeout: 300_000 });

let bed: AwsTestBed | undefined;
let dir: string | undefined;
let repository: Repository | undefined;

afterEach(async () => {
  await repository?.close();
  await bed?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
  bed = undefined;
  dir = undefined;
  repository = undefined;
});

async function setUp(options: AwsEmulatorOptions): Promise<AwsTestBed> {
  bed = await startAwsTestBed(options);
  dir = await mkdtemp(join(tmpdir(), 'drkit-aws-storm-'));
  repository = await openRepository({
    store: createLocalFolderStore({ path: join(dir, 'repo') }),
    create: true,
  });
  return bed;
}

/** An instance with one 1 GiB volume whose first `blocks` blocks are written (each with its index). */
function instanceWithBlocks(
  test: AwsTestBed,
  name: string,
  blocks: number,
): { volumeId: string; instanceId: string } {
  const volumeId = test.emulator.createVolume({ sizeGiB: 1 });
  for (let index = 0; index < blocks; index++) {
    const header = Buffer.alloc(16);
    header.write(`${name}:${index}`);
    test.emulator.writeVolume(volumeId, index * BLOCK, header);
  }
  const instanceId = test.emulator.createInstance({ name, volumes: [{ volumeId }] });
  return { volumeId, instanceId };
}

/**
 * The platforms with their reads held until every one has opened its session, so the proxies read at once
 * (otherwise one could finish in real time before the other's snapshot is taken).
 */
function startingTogether(platforms: AwsPlatform[]): AwsPlatform[] {
  let waiting = platforms.length;
  let release!: () => void;
  const together = new Promise<void>((resolve) => {
    release = resolve;
  });
  return platforms.map((platform) => {
    const reader = platform.changedBlockReader;
    return {
      ...platform,
      changedBlockReader: {
        ...reader,
        open: async (options: Parameters<typeof reader.open>[0]) => {
          const session = await reader.open(options);
          if (--waiting === 0) release();
          await together;
          return session;
        },
      },
    };
  });
}

/**
 * Backs up with the engine and measures on the emulator's clock. `sustained` leaves out the emulator's initial
 * burst (its bucket starts full, one second's worth): the rate the quota allows beyond it, honestly achieved.
 */
async function measure(test: AwsTestBed, jobs: { platform: AwsPlatform; hostId: string }[], quota: number) {
  test.emulator.resetStats();
  await using engine = createBackupEngine({
    repository: repository!,
    platforms: jobs.map((j) => j.platform),
    chunkSize: 1024 * 1024,
  });
  const start = test.clock.now();
  // The jobs run at once, one per platform (two sync proxies of one account).
  const results = await Promise.all(
    jobs.map((job) => engine.backup({ platformId: job.platform.id, hosts: [job.hostId] })),
  );
  const tasks = results.flatMap(succeeded);
  const elapsedSeconds = (test.clock.now() - start) / 1000;
  const stats = test.emulator.stats();
  return {
    tasks,
    served: stats.blocksServed,
    throttled: stats.throttled.GetSnapshotBlock ?? 0,
    elapsedSeconds,
    sustained: (stats.blocksServed - quota) / elapsedSeconds / quota,
  };
}

/** Every written block of each snapshot read exactly once. */
function expectEachBlockReadOnce(test: AwsTestBed, volumeIds: string[]): void {
  const snapshots = test.emulator.snapshots();
  for (const volumeId of volumeIds) {
    const snapshot = snapshots.find((s) => s.volumeId === volumeId)!;
    const reads = test.emulator.blockReads(snapshot.id);
    expect(reads.size, `${volumeId}: blocks read`).toBe(test.emulator.writtenBlocks(volumeId).length);
    expect(Math.max(...reads.values()), `${volumeId}: most reads of one block`).toBe(1);
  }
}

it('two sync proxies on one account (each limiter believing it has the whole quota): the storm settles at the quota', async () => {
  // The documented quotas scaled down 50x (20 GetSnapshotBlock/s per snapshot and per account), so the storm lasts
  // many seconds of the emulator's clock while the test moves 150 MiB; the limiters are told the same quota. Two platforms, each with its own limiter,
  // together ask for twice the account's quota: the emulator answers ThrottlingException until they back off.
  const quota = 20;
  const test = await setUp({
    quotas: { getSnapshotBlockPerSnapshot: quota, getSnapshotBlockPerAccount: quota },
  });
  const a = instanceWithBlocks(test, 'proxy-a', 150);
  const b = instanceWithBlocks(test, 'proxy-b', 150);
  const rateLimits = { getSnapshotBlockPerSnapshot: quota, getSnapshotBlockPerAccount: quota };
  const [first, second] = startingTogether([
    test.platform({ id: 'aws-a', rateLimits: { ...rateLimits, clock: virtualTime(test.clock) } }),
    test.platform({ id: 'aws-b', rateLimits: { ...rateLimits, clock: virtualTime(test.clock) } }),
  ]) as [AwsPlatform, AwsPlatform];
  const result = await measure(
    test,
    [
      { platform: first, hostId: a.instanceId },
      { platform: second, hostId: b.instanceId },
    ],
    quota,
  );
  expect(result.tasks).toHaveLength(2);
  expectEachBlockReadOnce(test, [a.volumeId, b.volumeId]);
  expect(result.served).toBe(300);
  // It was a storm: both limiters were throttled and backed off.
  expect(result.throttled).toBeGreaterThan(0);
  expect(first.rateLimiterState().throttles).toBeGreaterThan(0);
  expect(second.rateLimiterState().throttles).toBeGreaterThan(0);
  // Bounded work: throttled answers stay a fraction of the blocks read (about 15 % here).
  expect(result.throttled).toBeLessThan(result.served * 0.4);
  // The quota is used, and never more than the emulator allows. Two limiters sharing one account interleave in
  // real time over the emulator's clock, so on two busy cores the ratio varies (0.97-0.99 on a quiet machine,
  // 0.897 measured once under three concurrent test runs and two CPU burners): the floor here is what load cannot
  // break; the 0.9 goal is asserted for one limiter (next test), where it does not depend on interleaving.
  expect(result.sustained).toBeGreaterThanOrEqual(0.75);
  expect(result.served).toBeLessThanOrEqual(quota * result.elapsedSeconds + quota + 1);
  console.info(
    `two proxies: ${result.served} blocks in ${result.elapsedSeconds.toFixed(3)} s of the emulator's clock, ` +
      `${result.throttled} throttled, sustained ${(result.sustained * 100).toFixed(1)} % of the quota`,
  );
});

it('a limiter that believes the documented 1000/s where only 100/s is left converges and reads at the quota', async () => {
  // Another client of the account takes most of the quota: the emulator's snapshot bucket is 100/s, the platform's
  // limiter starts at its default 1000/s and must back off (RESOURCE_LEVEL_THROTTLE) without failing a read.
  const quota = 100;
  const test = await setUp({ quotas: { getSnapshotBlockPerSnapshot: quota } });
  const a = instanceWithBlocks(test, 'web-1', 300);
  const platform = test.platform({ maxConcurrentReads: 64 });
  const result = await measure(test, [{ platform, hostId: a.instanceId }], quota);
  expectEachBlockReadOnce(test, [a.volumeId]);
  expect(result.served).toBe(300);
  expect(result.throttled).toBeGreaterThan(0);
  expect(result.throttled).toBeLessThan(result.served * 0.4);
  expect(result.sustained).toBeGreaterThanOrEqual(0.9);
  expect(result.served).toBeLessThanOrEqual(quota * result.elapsedSeconds + quota + 1);
  console.info(
    `one proxy at 10x: ${result.served} blocks in ${result.elapsedSeconds.toFixed(3)} s, ` +
      `${result.throttled} throttled, sustained ${(result.sustained * 100).toFixed(1)} % of the quota`,
  );
});

it('a burst of injected throttles is waited out in the limiter: no disk task fails, no block is read twice', async () => {
  const test = await setUp({});
  const a = instanceWithBlocks(test, 'db-1', 60);
  const platform = test.platform({ maxConcurrentReads: 16 });
  test.emulator.injectFault({ operation: 'GetSnapshotBlock', kind: 'throttle', times: 120 });
  test.emulator.injectFault({ operation: 'ListSnapshotBlocks', kind: 'throttle', times: 5 });
  const result = await measure(test, [{ platform, hostId: a.instanceId }], 1000);
  expectEachBlockReadOnce(test, [a.volumeId]);
  expect(result.throttled).toBe(120);
  expect(test.emulator.pendingFaults()).toEqual([]);
});
