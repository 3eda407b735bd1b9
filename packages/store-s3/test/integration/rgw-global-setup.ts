// Starts one throw-away Ceph RGW 16 (scripts/peers/rgw.sh start DIR: a micro-Ceph cluster plus radosgw on a free
// 127.0.0.1 port and an S3 user) for the tests of this project, and stops it by PID at teardown. When it cannot
// start, every test fails with the reason (never a silent skip).
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import type { ProvidedRgw, RgwDescription } from './rgw-description.js';

const RGW_SCRIPT = fileURLToPath(new URL('../../../../scripts/peers/rgw.sh', import.meta.url));

function runRgwScript(verb: 'start' | 'stop', dir: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('sh', [RGW_SCRIPT, verb, dir], { timeout: 240_000 }, (error, _stdout, stderr) => {
      if (error) reject(new Error(`sh rgw.sh ${verb} ${dir} failed: ${error.message}\n${stderr}`));
      else resolve(stderr);
    });
  });
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const dir = await mkdtemp(join(tmpdir(), 'drkit-rgw-it-'));
  let provided: ProvidedRgw;
  try {
    await runRgwScript('start', join(dir, 'peer'));
    const rgw = JSON.parse(await readFile(join(dir, 'peer', 'rgw.json'), 'utf8')) as RgwDescription;
    provided = { ok: true, rgw };
  } catch (error) {
    provided = {
      ok: false,
      reason: `Ceph RGW did not start (install it with \`sh scripts/peers/rgw.sh install\`): ${
        error instanceof Error ? error.message : String(error)
      }`,
    };
  }
  project.provide('rgw', provided);
  return async () => {
    try {
      await runRgwScript('stop', join(dir, 'peer'));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  };
}
