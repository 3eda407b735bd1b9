// Starts the peers of the OpenStack integration tests once: a Ceph cluster (scripts/peers/ceph.sh, through the
// Ceph tests' own helper), then OpenStack (scripts/peers/openstack.sh) with Cinder's RBD driver writing into it,
// seeded with servers booted from volume. Tests read the facts with `inject('openstackPeer')` through
// openstack-test-peer.ts. When a peer cannot start, the facts carry the reason with the end of the logs and every
// test fails with it (never a silent skip). Both peers are stopped (by PID) at teardown.
// DRKIT_KEEP_PEERS=1 leaves the folders (logs, configs) in place after the run.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import type { CephClusterDescription } from '../ceph-cluster-description.js';
import { runCephScript } from '../ceph-global-setup.js';
import type { OpenStackPeerFacts, ProvidedOpenStackPeer } from './openstack-peer-description.js';

/** scripts/peers/openstack.sh of this repository. */
export const OPENSTACK_SCRIPT = fileURLToPath(
  new URL('../../../../../scripts/peers/openstack.sh', import.meta.url),
);

/** Starting OpenStack took about 75 s here; a fresh CI machine is slower. */
const START_TIMEOUT_MS = 12 * 60_000;

/** Runs `sh openstack.sh VERB ARGS...`; resolves with stderr, rejects with an Error holding stderr's end. */
export function runOpenStackScript(verb: 'start' | 'stop', args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      'sh',
      [OPENSTACK_SCRIPT, verb, ...args],
      { timeout: verb === 'start' ? START_TIMEOUT_MS : 120_000, maxBuffer: 64 * 1024 * 1024 },
      (error, _stdout, stderr) => {
        if (error) {
          reject(
            new Error(
              `sh openstack.sh ${verb} ${args.join(' ')} failed: ${error.message}\n${stderr.slice(-12_000)}`,
            ),
          );
        } else {
          resolve(stderr);
        }
      },
    );
  });
}

async function readTimings(path: string): Promise<Record<string, number>> {
  const text = await readFile(path, 'utf8').catch(() => '');
  const timings: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const [step, seconds] = line.trim().split(/\s+/);
    if (step && seconds !== undefined && /^\d+$/.test(seconds)) timings[step] = Number(seconds);
  }
  return timings;
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const cephDir = await mkdtemp(join(tmpdir(), 'drkit-os-ceph-'));
  const openstackDir = await mkdtemp(join(tmpdir(), 'drkit-os-'));
  let cephStarted = false;
  let openstackStarted = false;
  let provided: ProvidedOpenStackPeer;
  try {
    const cephStart = performance.now();
    cephStarted = true;
    await runCephScript('start', cephDir).catch((error: unknown) => {
      throw new Error(
        `the Ceph peer did not start (install its packages with \`sh scripts/peers/ceph.sh install\`): ${String(error)}`,
      );
    });
    const ceph = JSON.parse(await readFile(join(cephDir, 'cluster.json'), 'utf8')) as CephClusterDescription;
    const cephSeconds = Math.round((performance.now() - cephStart) / 1000);
    openstackStarted = true;
    await runOpenStackScript('start', [openstackDir, cephDir]).catch((error: unknown) => {
      throw new Error(
        'the OpenStack peer did not start (install its packages with `sh scripts/peers/openstack.sh install`; ' +
          `logs in ${openstackDir}/log): ${String(error)}`,
      );
    });
    const facts = JSON.parse(await readFile(join(openstackDir, 'facts.json'), 'utf8')) as OpenStackPeerFacts;
    const timings = { ...(await readTimings(join(openstackDir, 'timings.txt'))), ceph: cephSeconds };
    console.log(`OpenStack peer ready: ${JSON.stringify(timings)} (seconds)`);
    provided = { ok: true, facts, ceph, timings };
  } catch (error) {
    provided = { ok: false, reason: error instanceof Error ? error.message : String(error) };
  }
  project.provide('openstackPeer', provided);
  return async () => {
    const keep = process.env.DRKIT_KEEP_PEERS === '1';
    try {
      if (openstackStarted) await runOpenStackScript('stop', [openstackDir]);
    } finally {
      try {
        if (cephStarted) await runCephScript('stop', cephDir);
      } finally {
        if (!keep) {
          await rm(openstackDir, { recursive: true, force: true });
          await rm(cephDir, { recursive: true, force: true });
        }
      }
    }
  };
}
