// Starts one throw-away Ceph 16 cluster (one monitor, one memstore OSD, CephX on, 127.0.0.1) for the
// integration tests of this package, with `scripts/peers/ceph.sh start DIR` in a fresh temp dir, and stops it
// (by PID) at teardown. Tests read its description with `inject('cephCluster')` through ceph-test-cluster.ts.
// When the cluster cannot start, the description carries the reason and every integration test fails with it
// (never a silent skip); the unit tests of the package still run.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import type { CephClusterDescription, ProvidedCephCluster } from './ceph-cluster-description.js';

/** scripts/peers/ceph.sh of this repository. */
export const CEPH_SCRIPT = fileURLToPath(new URL('../../../../scripts/peers/ceph.sh', import.meta.url));

/** Runs `sh ceph.sh VERB DIR`; resolves with stderr, rejects with an Error holding stderr. */
export function runCephScript(
  verb: 'start' | 'stop',
  dir: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('sh', [CEPH_SCRIPT, verb, dir], { env, timeout: 180_000 }, (error, _stdout, stderr) => {
      if (error) reject(new Error(`sh ceph.sh ${verb} ${dir} failed: ${error.message}\n${stderr}`));
      else resolve(stderr);
    });
  });
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const dir = await mkdtemp(join(tmpdir(), 'drkit-ceph-it-'));
  const started = performance.now();
  let provided: ProvidedCephCluster;
  try {
    await runCephScript('start', dir);
    const cluster = JSON.parse(await readFile(join(dir, 'cluster.json'), 'utf8')) as CephClusterDescription;
    provided = { ok: true, cluster, startupMs: Math.round(performance.now() - started) };
  } catch (error) {
    const logs = await readFile(join(dir, 'log', 'osd.0.log'), 'utf8').catch(() => '');
    provided = {
      ok: false,
      reason:
        `the Ceph test cluster did not start (install the packages with \`sh scripts/peers/ceph.sh install\`): ` +
        `${error instanceof Error ? error.message : String(error)}${logs ? `\nosd.0.log (end): ${logs.slice(-2000)}` : ''}`,
    };
  }
  project.provide('cephCluster', provided);
  return async () => {
    try {
      await runCephScript('stop', dir);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  };
}
