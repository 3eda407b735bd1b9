// examples/aws-backup.mjs against the project's AWS emulator: configured from environment variables only (the
// region discovered), it backs up one instance twice (the written blocks, then the changed ones), restores each
// new point to an image file and to a new EBS snapshot, and both equal the volume as it was backed up. It imports
// the built packages (dist/), as a user's script would: the test command builds every package first.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type AwsEmulator, startAwsEmulator } from '@drkit/testkit';
import { afterEach, beforeEach, expect, it, vi } from 'vitest';
import { BLOCK, GIB, pattern } from './aws-test-setup.js';

vi.setConfig({ testTimeout: 240_000 });

const EXAMPLES = fileURLToPath(new URL('../../../examples/', import.meta.url));
const DIST = fileURLToPath(new URL('../dist/index.js', import.meta.url));

let dir: string;
let emulator: AwsEmulator;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drkit-aws-example-'));
  // The real clock: the example's platform waits with its own defaults, as a user's would.
  emulator = await startAwsEmulator({
    snapshotCompletionPolls: 1,
    region: 'ap-southeast-1',
    otherRegions: 'empty',
  });
});

afterEach(async () => {
  await emulator.close();
  await rm(dir, { recursive: true, force: true });
});

function runExample(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['aws-backup.mjs', ...args],
      { cwd: EXAMPLES, env, timeout: 200_000 },
      (error, stdout, stderr) => {
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}

/** The volume's bytes as they are now (1 GiB), to compare restores with. */
function volumeBytes(volumeId: string): Buffer {
  return Buffer.from(emulator.readVolume(volumeId, 0, GIB));
}

it('backs up an instance from environment variables, then an incremental, and restores both to files and to EBS', async () => {
  expect(existsSync(DIST), `build the package first (pnpm -r build): ${DIST} is missing`).toBe(true);
  const volume = emulator.createVolume({ sizeGiB: 1 });
  for (const index of [0, 1, 7, 300, 2047]) emulator.writeVolume(volume, index * BLOCK, pattern(index));
  const instanceId = emulator.createInstance({ name: 'web-1', volumes: [{ volumeId: volume }] });
  const restoreTo = join(dir, 'restored');
  await mkdir(restoreTo);
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    DRKIT_AWS_ACCESS_KEY_ID: emulator.credentials.accessKeyId,
    DRKIT_AWS_SECRET_ACCESS_KEY: emulator.credentials.secretAccessKey,
    DRKIT_AWS_ENDPOINT: emulator.endpoint,
    DRKIT_PLATFORM_ID: 'aws-example',
    DRKIT_REPOSITORY: join(dir, 'repo'),
  };

  const first = await runExample(['--restore-to', restoreTo, '--restore-to-ebs', 'web-1'], env);
  expect(first.stderr).toBe('');
  expect(first.code).toBe(0);
  expect(first.stdout).toContain(`region ${emulator.region}`);
  expect(first.stdout).toMatch(
    new RegExp(
      `backed up instance ${instanceId} volume ${volume}: point \\S+, full \\(first-backup\\), ${5 * BLOCK} bytes read`,
    ),
  );
  const v1 = volumeBytes(volume);

  for (const index of [7, 1000]) emulator.writeVolume(volume, index * BLOCK, pattern(50 + index));
  const second = await runExample(['--restore-to', restoreTo, '--restore-to-ebs', instanceId], env);
  expect(second.stderr).toBe('');
  expect(second.code).toBe(0);
  // Only the two changed blocks are read.
  expect(second.stdout).toMatch(
    new RegExp(
      `backed up instance ${instanceId} volume ${volume}: point \\S+, exact, ${2 * BLOCK} bytes read`,
    ),
  );
  const v2 = volumeBytes(volume);

  const files = [
    ...`${first.stdout}${second.stdout}`.matchAll(/restored point \S+ to (\S+\.img) \(\d+ bytes\)/g),
  ];
  expect(files).toHaveLength(2);
  expect((await readFile(files[0]![1]!)).equals(v1)).toBe(true);
  expect((await readFile(files[1]![1]!)).equals(v2)).toBe(true);
  const snapshots = [...`${first.stdout}${second.stdout}`.matchAll(/to EBS snapshot (\S+) \(/g)].map(
    (m) => m[1]!,
  );
  expect(snapshots).toHaveLength(2);
  expect(Buffer.from(emulator.readSnapshot(snapshots[0]!, 0, GIB)).equals(v1)).toBe(true);
  expect(Buffer.from(emulator.readSnapshot(snapshots[1]!, 0, GIB)).equals(v2)).toBe(true);
  // The second restore builds on the first (only what changed is written).
  expect(second.stdout).toMatch(new RegExp(`blocks written, on ${snapshots[0]}\\)`));
});
