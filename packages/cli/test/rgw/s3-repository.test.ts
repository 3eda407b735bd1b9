import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mutateDiskImage, writeDiskImage } from '@drkit/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rgw } from '../../../store-s3/test/integration/rgw-description.js';
import {
  freshBucket,
  rawClient,
  removeBucket,
  removeLockedBucket,
  retainUntil,
} from '../../../store-s3/test/integration/rgw-fixture.js';
import { runCli, sha256File } from '../run-cli.js';

const MiB = 1024 * 1024;

let dir: string;
let image: string;
const buckets: string[] = [];
const lockedBuckets: string[] = [];

/** The environment of a CLI run against the test RGW: endpoint and the AWS SDK's usual variables. */
function s3Env(secret = rgw().secretAccessKey): NodeJS.ProcessEnv {
  return {
    DRKIT_S3_ENDPOINT: rgw().endpoint,
    AWS_ACCESS_KEY_ID: rgw().accessKeyId,
    AWS_SECRET_ACCESS_KEY: secret,
    AWS_REGION: rgw().region,
    DRKIT_REPO: '',
    DRKIT_PASSPHRASE: '',
  };
}

async function bucket(): Promise<string> {
  const name = await freshBucket(rawClient());
  buckets.push(name);
  return name;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drkit-cli-rgw-'));
  image = join(dir, 'disk.img');
});

afterAll(async () => {
  for (const name of buckets) await removeBucket(name).catch(() => undefined);
  for (const name of lockedBuckets) await removeLockedBucket(rawClient(), name).catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

describe('drkit CLI with an S3 repository on Ceph RGW 16', () => {
  it.each([
    ['plain', {}],
    ['encrypted', { DRKIT_PASSPHRASE: 'cli s3 passphrase' }],
  ])(
    '%s: backs up twice to s3://bucket/prefix, and other processes list, verify and restore every point byte-identical',
    async (_name, extra) => {
      await writeDiskImage(image, { size: 24 * MiB, seed: 21 });
      const repo = `s3://${await bucket()}/site-a`;
      const env = { ...s3Env(), ...extra };
      const sums = [await sha256File(image)];
      const first = await runCli(['backup', image, '--repo', repo, '--json'], env);
      expect(first.code, first.stderr).toBe(0);
      expect(JSON.parse(first.stdout).tasks[0].validity).toEqual({ kind: 'full', reason: 'first-backup' });
      await mutateDiskImage(image, { fraction: 0.02, seed: 22, lastByte: true });
      sums.push(await sha256File(image));
      const second = await runCli(['backup', image], { ...env, DRKIT_REPO: repo });
      expect(second.code, second.stderr).toBe(0);

      const listed = await runCli(['points', '--repo', repo, '--json'], env);
      expect(listed.code, listed.stderr).toBe(0);
      const points = JSON.parse(listed.stdout) as { id: string }[];
      expect(points).toHaveLength(2);
      for (const [i, point] of points.entries()) {
        const out = join(dir, `restored-${i}.img`);
        const restored = await runCli(['restore', point.id, out, '--repo', repo], env);
        expect(restored.code, restored.stderr).toBe(0);
        expect(await sha256File(out)).toBe(sums[i]);
        await rm(out);
      }
      const verified = await runCli(['verify', '--repo', repo, '--json'], env);
      expect(verified.code, verified.stderr).toBe(0);
      for (const run of [first, second, listed, verified]) {
        expect(run.stdout + run.stderr).not.toContain(rgw().secretAccessKey);
      }
    },
  );

  it('a repository given in the configuration file, with its secret key from a file', async () => {
    await writeDiskImage(image, { size: 8 * MiB, seed: 23 });
    const name = await bucket();
    const secretFile = join(dir, 's3-secret');
    await writeFile(secretFile, `${rgw().secretAccessKey}\n`, { mode: 0o600 });
    const config = join(dir, 'drkit.json');
    await writeFile(
      config,
      JSON.stringify({
        repository: {
          type: 's3',
          bucket: name,
          prefix: 'from-config',
          endpoint: rgw().endpoint,
          region: rgw().region,
          credentials: { accessKeyId: rgw().accessKeyId, secretAccessKey: { file: secretFile } },
        },
      }),
    );
    const env = { ...s3Env('not-used-when-the-file-names-credentials'), AWS_ACCESS_KEY_ID: 'nobody' };
    const backup = await runCli(['backup', image, '--config', config, '--json'], env);
    expect(backup.code, backup.stderr).toBe(0);
    const listed = await runCli(['points', '--config', config, '--json'], env);
    expect(JSON.parse(listed.stdout)).toHaveLength(1);
  });

  it('immutable points from the configuration file: a governance lock on every point, the same policy asked of every later command', async () => {
    await writeDiskImage(image, { size: 6 * MiB, seed: 25 });
    const name = await freshBucket(rawClient(), true);
    lockedBuckets.push(name);
    const configWith = async (file: string, periodDays: number) => {
      const path = join(dir, file);
      await writeFile(
        path,
        JSON.stringify({
          repository: {
            type: 's3',
            bucket: name,
            prefix: 'repo',
            endpoint: rgw().endpoint,
            immutability: { mode: 'governance', periodDays, windowDays: periodDays },
          },
        }),
      );
      return path;
    };
    // About 9 seconds: long enough to see, short enough for the bucket to be emptied afterwards by bypass.
    const config = await configWith('locked.json', 0.0001);
    const env = s3Env();
    const backup = await runCli(['backup', image, '--config', config, '--json'], env);
    expect(backup.code, backup.stderr).toBe(0);
    const listed = await runCli(['points', '--config', config, '--json'], env);
    const [point] = JSON.parse(listed.stdout) as { id: string; createdAt: string }[];
    expect(point).toBeDefined();
    // Locked until its commit plus the period (8.64 s), to the millisecond.
    const until = await retainUntil(rawClient(), name, `points/${point!.id}.json`);
    expect(until - Date.parse(point!.createdAt)).toBeGreaterThanOrEqual(8640);
    // The URL form leaves the policy to the repository; another policy in a file is refused before anything runs.
    const byUrl = await runCli(['points', '--repo', `s3://${name}/repo`, '--json'], env);
    expect(JSON.parse(byUrl.stdout)).toHaveLength(1);
    const other = await runCli(['points', '--config', await configWith('other.json', 1)], env);
    expect(other.code, other.stderr).toBe(9);
    expect(other.stderr).toContain('immutability');
  });

  it('a wrong secret key exits 4 and never prints the secret; a missing bucket exits 3', async () => {
    await writeDiskImage(image, { size: 4 * MiB, seed: 24 });
    const wrong = 'this-secret-is-wrong-0123456789abcdefXYZ';
    const refused = await runCli(['backup', image, '--repo', `s3://${await bucket()}/x`], s3Env(wrong));
    expect(refused.code, refused.stderr).toBe(4);
    expect(refused.stdout + refused.stderr).not.toContain(wrong);
    const missing = await runCli(['points', '--repo', 's3://drkit-no-such-bucket-0000/x'], s3Env());
    expect(missing.code, missing.stderr).toBe(3);
    expect(missing.stderr).toContain('drkit-no-such-bucket-0000');
  });

  it('refuses --sync-level for an S3 repository and an s3:// URL without a bucket', async () => {
    const level = await runCli(['points', '--repo', 's3://backups/x', '--sync-level', 'file'], s3Env());
    expect(level.code).toBe(2);
    expect(level.stderr).toContain('--sync-level and DRKIT_SYNC_LEVEL are for a repository folder');
    const noBucket = await runCli(['points', '--repo', 's3://'], s3Env());
    expect(noBucket.code).toBe(9);
    expect(noBucket.stderr).toContain('--repo: s3://');
  });
});
