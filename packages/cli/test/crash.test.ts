import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mutateDiskImage, writeDiskImage } from '@drkit/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, runCli, sha256File } from './run-cli.js';

const MiB = 1024 * 1024;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drkit-crash-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function countChunks(repo: string): Promise<number> {
  let n = 0;
  try {
    for (const sub of await readdir(join(repo, 'chunks')))
      n += (await readdir(join(repo, 'chunks', sub))).length;
  } catch {
    return 0;
  }
  return n;
}

/** Starts a backup and SIGKILLs it once it has stored at least `minChunks` chunks. */
async function killMidBackup(
  image: string,
  repo: string,
  minChunks: number,
): Promise<{ chunksAtKill: number }> {
  const before = await countChunks(repo);
  const child = spawn(process.execPath, [CLI, 'backup', image, '--repo', repo], { stdio: 'ignore' });
  const exited = new Promise<NodeJS.Signals | null>((resolve) =>
    child.on('exit', (_code, signal) => resolve(signal)),
  );
  let chunksAtKill = 0;
  for (;;) {
    chunksAtKill = await countChunks(repo);
    if (chunksAtKill - before >= minChunks) break;
    if (child.exitCode !== null)
      throw new Error('the backup finished before it could be killed: use a bigger image');
    await new Promise((r) => setTimeout(r, 5));
  }
  child.kill('SIGKILL');
  expect(await exited).toBe('SIGKILL');
  return { chunksAtKill };
}

describe('a backup killed with SIGKILL', () => {
  it('leaves no half point, resumes on the next run, and every point restores identically', async () => {
    const image = join(dir, 'disk.img');
    const repo = join(dir, 'repo');
    await writeDiskImage(image, { size: 384 * MiB, seed: 11 });
    const sums: string[] = [await sha256File(image)];

    const { chunksAtKill } = await killMidBackup(image, repo, 20);
    const afterKill = JSON.parse((await runCli(['points', '--json', '--repo', repo])).stdout);
    expect(afterKill).toEqual([]);

    const rerun = await runCli(['backup', image, '--repo', repo, '--json']);
    expect(rerun.code, rerun.stderr).toBe(0);
    const task = JSON.parse(rerun.stdout).tasks[0];
    // The chunks the killed run stored are reused, not written again.
    expect(task.bytesDeduplicated).toBeGreaterThanOrEqual(chunksAtKill * 0.5 * MiB);

    await mutateDiskImage(image, { fraction: 0.05, seed: 12, lastByte: true });
    sums.push(await sha256File(image));
    await killMidBackup(image, repo, 3).catch((error: Error) => {
      // An incremental may be too quick to catch mid-way; then it simply committed.
      if (!/finished before/.test(error.message)) throw error;
    });
    const points = JSON.parse((await runCli(['points', '--json', '--repo', repo])).stdout);
    expect(points.length).toBeLessThanOrEqual(2);
    if (points.length === 1) {
      const again = await runCli(['backup', image, '--repo', repo]);
      expect(again.code, again.stderr).toBe(0);
    }
    const all = JSON.parse((await runCli(['points', '--json', '--repo', repo])).stdout);
    expect(all).toHaveLength(2);
    for (const [i, p] of all.entries()) {
      const target = join(dir, `restore-${i}.img`);
      const restored = await runCli(['restore', p.id, target, '--repo', repo]);
      expect(restored.code, restored.stderr).toBe(0);
      expect(await sha256File(target)).toBe(sums[i]);
    }
    const verify = await runCli(['verify', '--repo', repo]);
    expect(verify.code).toBe(0);
    const ledger = await runCli(['ledger', '--json', '--repo', repo]);
    expect(JSON.parse(ledger.stdout)).toEqual([]);
  });
});
