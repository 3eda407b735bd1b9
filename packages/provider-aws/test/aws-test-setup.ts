// Test helpers: the project's AWS emulator (from @drkit/testkit) and a platform pointed at it.
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
