// examples/vmware-backup.mjs against vcsim (govmomi 0.24.2 with the project's launcher): configured from
// environment variables only, it backs up one VM twice (a full read of the allocated areas, then an exact
// incremental: change ids and changed areas are the launcher's extension, scripts/peers/vcsim/cbt.go), restores
// each new point, and the restored images equal the disk as it was backed up. It imports the built package (dist/),
// as a user's script would: the test command builds every package first.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, expect, it, vi } from 'vitest';
import { fillPattern, patternedImage, startVcsimDisk, type VcsimDisk } from './vcsim-disk.js';

vi.setConfig({ testTimeout: 180_000 });

const EXAMPLES = fileURLToPath(new URL('../../../../examples/', import.meta.url));
const DIST = fileURLToPath(new URL('../../dist/index.js', import.meta.url));
const BLOCK = 64 * 1024;

let dir: string;
let disk: VcsimDisk | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drkit-vmware-example-'));
});

afterEach(async () => {
  await disk?.close();
  disk = undefined;
  await rm(dir, { recursive: true, force: true });
});

function runExample(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['vmware-backup.mjs', ...args],
      { cwd: EXAMPLES, env, timeout: 170_000 },
      (error, stdout, stderr) => {
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}

async function restoredImages(stdout: string): Promise<Buffer[]> {
  const paths = [...stdout.matchAll(/restored point \S+ to (\S+) \(\d+ bytes\)/g)].map((m) => m[1]!);
  return Promise.all(paths.map((p) => readFile(p)));
}

it('backs up a vcsim VM from environment variables, then an incremental, and restores both byte for byte', async () => {
  expect(existsSync(DIST), `build the package first (pnpm -r build): ${DIST} is missing`).toBe(true);
  // Change tracking starts off: the example turns it on before the snapshot, so "*" reads the allocated areas only.
  disk = await startVcsimDisk({
    changeTracking: false,
    initial: (capacity) => patternedImage(capacity, [0, 3, 17], 81),
  });
  const { host, vcsim } = disk;
  const ca = join(dir, 'vcsim-ca.pem');
  await writeFile(ca, vcsim.certificate);
  const restoreTo = join(dir, 'restored');
  await mkdir(restoreTo);
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    VSPHERE_URL: vcsim.url,
    VSPHERE_USERNAME: vcsim.username,
    VSPHERE_PASSWORD: vcsim.password,
    VSPHERE_CA: ca,
    DRKIT_PLATFORM_ID: 'vcsim-example',
    DRKIT_REPOSITORY: join(dir, 'repo'),
  };

  const first = await runExample(['--restore-to', restoreTo, host.name], env);
  expect(first.stderr).toBe('');
  expect(first.code).toBe(0);
  expect(first.stdout).toMatch(
    /platform vcsim-example: normal, vcenter VMware vCenter Server .*, 2 VMs on 4 ESXi hosts/,
  );
  expect(first.stdout).toContain(`turned change tracking on for ${host.name}`);
  expect(first.stdout).toMatch(
    new RegExp(
      `backed up VM ${host.id} disk \\S+: point \\S+, full \\(first-backup\\), ${3 * BLOCK} bytes read`,
    ),
  );
  const [full] = await restoredImages(first.stdout);
  expect(full?.equals(disk.image)).toBe(true);
  const fullImage = Uint8Array.from(disk.image);

  fillPattern(disk.image, 3 * BLOCK, 4096, 82);
  await disk.upload();
  const second = await runExample(['--restore-to', restoreTo, host.name], env);
  expect(second.code).toBe(0);
  expect(second.stdout).not.toContain('turned change tracking on');
  expect(second.stdout).toMatch(
    new RegExp(`backed up VM ${host.id} disk \\S+: point \\S+, exact, ${BLOCK} bytes read`),
  );
  const [incremental] = await restoredImages(second.stdout);
  expect(incremental?.equals(disk.image)).toBe(true);
  expect(incremental?.equals(fullImage)).toBe(false);
  expect(second.stdout.split('\n').filter((line) => line.includes(`  ${host.name} `))).toHaveLength(2);
  expect(first.stdout + second.stdout).not.toContain(vcsim.password);
});

it('a wrong password: exits 1 with the abnormal status and its code, never the password', async () => {
  disk = await startVcsimDisk();
  const { vcsim } = disk;
  const ca = join(dir, 'vcsim-ca.pem');
  await writeFile(ca, vcsim.certificate);
  const result = await runExample([], {
    PATH: process.env.PATH,
    VSPHERE_URL: vcsim.url,
    VSPHERE_USERNAME: vcsim.username,
    VSPHERE_PASSWORD: 'wrong-password-58',
    VSPHERE_CA: ca,
    DRKIT_PLATFORM_ID: 'vcsim-example',
    DRKIT_REPOSITORY: join(dir, 'repo-2'),
  });
  expect(result.code).toBe(1);
  expect(result.stderr).toMatch(
    /platform vcsim-example is abnormal \(AUTHENTICATION_FAILED\): .*InvalidLogin/,
  );
  expect(result.stderr + result.stdout).not.toContain('wrong-password-58');
  expect(existsSync(join(dir, 'repo-2'))).toBe(false);
});
