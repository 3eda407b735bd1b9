// examples/openstack-ceph-backup.mjs against the real peers: configured from environment variables only, it
// backs up the named server twice (full, then an exact incremental) and prints the points. It imports the built
// package (dist/), as a user's script would: the test command builds every package first.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openstackPeer } from './openstack-test-peer.js';

const EXAMPLES = fileURLToPath(new URL('../../../../../examples/', import.meta.url));
const DIST = fileURLToPath(new URL('../../../dist/index.js', import.meta.url));

let peer: ReturnType<typeof openstackPeer>;
let dir: string;

beforeAll(async () => {
  peer = openstackPeer();
  dir = await mkdtemp(join(tmpdir(), 'drkit-openstack-example-'));
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

function runExample(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['openstack-ceph-backup.mjs', ...args],
      { cwd: EXAMPLES, env, timeout: 240_000 },
      (error, stdout, stderr) => {
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}

describe('examples/openstack-ceph-backup.mjs', () => {
  it('backs up the named server from environment variables and prints its points', async () => {
    expect(existsSync(DIST), `build the package first (pnpm -r build): ${DIST} is missing`).toBe(true);
    const { facts, ceph } = peer;
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      OS_AUTH_URL: facts.authUrl,
      OS_USERNAME: facts.admin.username,
      OS_PASSWORD: facts.admin.password,
      OS_PROJECT_NAME: facts.admin.projectName,
      OS_REGION_NAME: facts.regionName,
      CEPH_MONITORS: ceph.monitors,
      CEPH_USER: ceph.backupUser,
      CEPH_KEY: ceph.backupKey,
      CEPH_POOL: facts.cephPool,
      CEPH_VOLUME_TYPES: 'ceph',
      DRKIT_PLATFORM_ID: 'openstack-example',
      DRKIT_REPOSITORY: join(dir, 'repo'),
    };
    const server = facts.servers.find((s) => s.name === 'app-b1')!;
    const volume = server.volumes[0]!;

    const first = await runExample(['app-b1'], env);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toContain('platform openstack-example: normal, 3 servers');
    expect(first.stdout).toMatch(
      /not backed up: volume \S+ of db-1 \(unsupported-disk\): volume type "local" lives on Cinder backend/,
    );
    expect(first.stdout).toMatch(
      new RegExp(`backed up server ${server.id} volume ${volume.id}: point \\S+, full \\(first-backup\\)`),
    );
    expect(first.stdout).toContain(
      `app-b1 ${volume.device} (volume ${volume.id})  ${volume.sizeGiB * 1024 ** 3} bytes`,
    );

    const second = await runExample(['app-b1'], env);
    expect(second.code).toBe(0);
    expect(second.stdout).toMatch(
      new RegExp(`backed up server ${server.id} volume ${volume.id}: point \\S+, exact`),
    );
    expect(second.stdout.split('\n').filter((line) => line.includes(`(volume ${volume.id})`))).toHaveLength(
      2,
    );
    expect(second.stdout).not.toContain(facts.admin.password);
  });

  it('a wrong password: exits 1 with the abnormal status and its code, never the password', async () => {
    const { facts, ceph } = peer;
    const result = await runExample([], {
      PATH: process.env.PATH,
      OS_AUTH_URL: facts.authUrl,
      OS_USERNAME: 'admin',
      OS_PASSWORD: 'wrong-password-42',
      OS_PROJECT_NAME: 'admin',
      CEPH_MONITORS: ceph.monitors,
      CEPH_USER: ceph.backupUser,
      CEPH_KEY: ceph.backupKey,
      DRKIT_PLATFORM_ID: 'openstack-example',
      DRKIT_REPOSITORY: join(dir, 'repo-2'),
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /is abnormal \(AUTHENTICATION_FAILED\): Keystone at .* refused user "admin"/,
    );
    expect(result.stderr + result.stdout).not.toContain('wrong-password-42');
  });
});
