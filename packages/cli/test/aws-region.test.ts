// The `aws` provider alias with the region omitted: the CLI loads @drkit/provider-aws's openAwsPlatform, which
// discovers the region (DescribeRegions, then DescribeInstances in each enabled one) against the project's AWS
// emulator, whose other regions answer as empty ones.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AwsEmulator, startAwsEmulator } from '@drkit/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from './run-cli.js';

let dir: string;
let emulator: AwsEmulator;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drkit-cli-aws-'));
  emulator = await startAwsEmulator({
    region: 'ap-southeast-1',
    otherRegions: 'empty',
    snapshotCompletionPolls: 0,
  });
});

afterAll(async () => {
  await emulator.close();
  await rm(dir, { recursive: true, force: true });
});

/** A configuration of one `aws` platform without a region, its secret from the environment. */
async function config(name: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(
    path,
    stringify({
      repository: join(dir, 'repo'),
      platforms: [
        {
          id: 'aws-emu',
          provider: 'aws',
          options: {
            credentials: {
              accessKeyId: emulator.credentials.accessKeyId,
              secretAccessKey: { env: 'DRKIT_TEST_AWS_SECRET' },
            },
            endpoints: { ec2: emulator.endpoint, ebs: emulator.endpoint, sts: emulator.endpoint },
          },
        },
      ],
    }),
  );
  return path;
}

const env = () => ({
  DRKIT_REPO: '',
  DRKIT_CONFIG: '',
  DRKIT_TEST_AWS_SECRET: emulator.credentials.secretAccessKey,
});

it('no region has an instance yet: exit 9 naming options.region and the regions asked', async () => {
  const run = await runCli(['platforms', '--config', await config('empty.yaml'), '--json'], env());
  expect(run.code, run.stderr).toBe(9);
  expect(JSON.parse(run.stdout).error).toMatchObject({
    name: 'InvalidSettingsError',
    code: 'INVALID_SETTINGS',
    message: expect.stringMatching(/^platforms\[0\]\.options\.region: no region has an EC2 instance/),
  });
  // The enabled regions of DescribeRegions, in its order (ap-east-1 is not opted in).
  expect(run.stderr).toContain('no region has an EC2 instance (asked us-east-1, eu-west-1, ap-southeast-1)');
  expect(run.stdout + run.stderr).not.toContain(emulator.credentials.secretAccessKey);
});

it('the one region with instances is discovered: platforms and hosts answer from it', async () => {
  const volumeId = emulator.createVolume({ sizeGiB: 1 });
  const instanceId = emulator.createInstance({ name: 'web-1', volumes: [{ volumeId }] });
  const path = await config('discover.yaml');
  const platforms = await runCli(['platforms', '--config', path, '--json'], env());
  expect(platforms.code, platforms.stderr).toBe(0);
  // The discovered region is shown with the platform.
  expect(JSON.parse(platforms.stdout)).toEqual([
    expect.objectContaining({
      id: 'aws-emu',
      kind: 'aws',
      region: 'ap-southeast-1',
      status: 'normal',
      hostCount: 1,
    }),
  ]);
  const text = await runCli(['platforms', '--config', path], env());
  expect(text.stdout).toBe('aws-emu (aws, ap-southeast-1): status Normal, 1 host\n');
  const hosts = await runCli(['hosts', '--config', path, '--json'], env());
  expect(hosts.code, hosts.stderr).toBe(0);
  expect(hosts.stdout).toContain(instanceId);
  expect(hosts.stdout).toContain(volumeId);
  for (const run of [platforms, text, hosts])
    expect(run.stdout + run.stderr).not.toContain(emulator.credentials.secretAccessKey);
});
