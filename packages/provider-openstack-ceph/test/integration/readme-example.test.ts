// Runs the README's example against the built package and the real Ceph cluster of the global setup.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';
import { cephCluster, rbdHelper, snapshotNames } from './ceph-test-cluster.js';

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

it('the README example backs up an RBD image twice: full, then exact', { timeout: 120_000 }, async () => {
  const cluster = cephCluster();
  const readme = await readFile(join(packageRoot, 'README.md'), 'utf8');
  const example = /```js\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(example, 'README.md has a ```js example').toBeDefined();
  expect(existsSync(join(packageRoot, 'dist/index.js')), 'build the package first: npx tsup').toBe(true);
  const image = 'vm-1-disk-0';
  await rbdHelper(cluster, [
    { op: 'create', image, size: 8 * 1024 * 1024 },
    { op: 'fill', image, offset: 0, length: 1024 * 1024, seed: 5 },
  ]);
  // Inside the package, so that `@drkit/provider-openstack-ceph` resolves to the package itself (its dist).
  const scratch = join(packageRoot, '.tmp');
  await mkdir(scratch, { recursive: true });
  const script = join(scratch, `readme-example-${process.pid}.mjs`);
  const cwd = await mkdtemp(join(tmpdir(), 'drkit-ceph-readme-'));
  try {
    await writeFile(script, example!);
    const { stdout } = await promisify(execFile)(process.execPath, [script], {
      cwd,
      env: { ...process.env, CEPH_MONITORS: cluster.monitors, CEPH_KEY: cluster.backupKey },
    });
    expect(stdout).toMatch(/status: 'normal'/);
    expect(stdout).toMatch(/hostCount: 1/);
    expect(stdout).toContain(
      "succeeded { kind: 'full', reason: 'first-backup' }\nsucceeded { kind: 'exact' }\n",
    );
    expect(await snapshotNames(cluster, image)).toHaveLength(1);
  } finally {
    await rm(script, { force: true });
    await rmdir(scratch).catch(() => {});
    await rm(cwd, { recursive: true, force: true });
    await rbdHelper(cluster, [{ op: 'remove', image }]);
  }
});
