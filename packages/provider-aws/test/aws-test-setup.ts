// Test helpers: the project's AWS emulator (from @drkit/testkit) and a platform pointed at it.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BackupJobResult, createLocalFolderStore, openRepository, type Repository } from '@drkit/core';
import {
  type AwsEmulator,
  type AwsEmulatorOptions,
  createManualClock,
  type ManualClock,
  startAwsEmulator,
} from '@drkit/testkit';
import { type AwsPlatform, type AwsPlatformOptions, createAwsPlatform } from '../src/index.js';

export const BLOCK = 524_288;
export const GIB = 1024 ** 3;

export interface AwsTestBed {
  readonly emulator: AwsEmulator;
  readonly clock: ManualClock;
  platform(options?: Partial<AwsPlatformOptions>): AwsPlatform;
  close(): Promise<void>;
}

/**
 * The rate limiters' clock in virtual time: the emulator's manual clock, and a sleep that does not wait in real
 * time. Sleepers wake in the order of their end times, one per turn of the event loop, the clock set to each end
 * in turn (a discrete-event schedule: several limiters sharing the clock interleave as they would in real time).
 * The emulator's quota buckets refill by the same clock.
 */
export function virtualTime(clock: ManualClock): {
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
} {
  const shared = schedules.get(clock) ?? createSchedule(clock);
  schedules.set(clock, shared);
  return shared;
}

const schedules = new WeakMap<ManualClock, ReturnType<typeof createSchedule>>();

function createSchedule(clock: ManualClock) {
  const sleepers: { at: number; seq: number; wake: () => void }[] = [];
  let seq = 0;
  let pumping = false;
  const pump = () => {
    sleepers.sort((x, y) => x.at - y.at || x.seq - y.seq);
    const next = sleepers.shift();
    if (next) {
      if (next.at > clock.now()) clock.set(next.at);
      next.wake();
    }
    if (sleepers.length > 0) setImmediate(pump);
    else pumping = false;
  };
  return {
    now: () => clock.now(),
    sleep: (ms: number, signal?: AbortSignal) =>
      new Promise<void>((resolve, reject) => {
        if (signal?.aborted) {
          reject(signal.reason);
          return;
        }
        sleepers.push({ at: clock.now() + Math.max(0, ms), seq: seq++, wake: resolve });
        if (!pumping) {
          pumping = true;
          setImmediate(pump);
        }
      }),
  };
}

/** Starts an emulator (a manual clock, snapshots completed on the first poll) and makes platforms for it. */
export async function startAwsTestBed(options: AwsEmulatorOptions = {}): Promise<AwsTestBed> {
  const clock = createManualClock();
  const emulator = await startAwsEmulator({ clock, snapshotCompletionPolls: 1, ...options });
  const platforms: AwsPlatform[] = [];
  return {
    emulator,
    clock,
    platform(overrides = {}) {
      const platform = createAwsPlatform({
        id: 'aws-test',
        region: emulator.region,
        credentials: emulator.credentials,
        endpoints: { ec2: emulator.endpoint, ebs: emulator.endpoint, sts: emulator.endpoint },
        snapshotWait: { minDelayMs: 1, maxDelayMs: 5, timeoutMs: 30_000 },
        controlPlaneMaxAttempts: 1,
        rateLimits: { clock: virtualTime(clock) },
        ...overrides,
      });
      platforms.push(platform);
      return platform;
    },
    async close() {
      for (const platform of platforms) await platform.close();
      await emulator.close();
    },
  };
}

/** A block of recognisable bytes. */
export function pattern(seed: number, length = BLOCK): Buffer {
  const data = Buffer.alloc(length);
  for (let i = 0; i + 4 <= length; i += 4) data.writeUInt32LE((Math.imul(seed + 1, 2654435761) + i) >>> 0, i);
  return data;
}

/** A new repository in a new temporary folder, and what removes both. */
export async function openTempRepository(
  prefix: string,
): Promise<{ dir: string; repository: Repository; close(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const repository = await openRepository({
    store: createLocalFolderStore({ path: join(dir, 'repo') }),
    create: true,
  });
  return {
    dir,
    repository,
    async close() {
      await repository.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The tasks of a job, every one succeeded (else an error naming the first that did not). */
export function succeeded(result: BackupJobResult) {
  return result.tasks.map((task) => {
    if (task.status !== 'succeeded')
      throw new Error(`${task.diskId}: ${task.status} ${String((task as { error?: unknown }).error)}`);
    return task;
  });
}

/** A 1 GiB volume of one instance `db-1`: data blocks 0, 3 and 6, block 5 written with zeros (listed, read, all zero). */
export function setUpVolume(emulator: AwsEmulator): string {
  const volumeId = emulator.createVolume({ sizeGiB: 1 });
  for (const index of [0, 3, 6]) emulator.writeVolume(volumeId, index * BLOCK, pattern(index));
  emulator.writeVolume(volumeId, 5 * BLOCK, Buffer.alloc(BLOCK));
  emulator.createInstance({ name: 'db-1', volumes: [{ volumeId }] });
  return volumeId;
}
