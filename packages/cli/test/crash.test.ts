import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STORE_TEMP_PREFIX } from '@drkit/core';
import { mutateDiskImage, writeDiskImage } from '@drkit/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, runCli, sha256File } from './run-cli.js';

const MiB = 1024 * 1024;
/** Preloaded into the killed backups: stops the process after a given number of stored chunks. */
const GATE = new URL('./crash-gate.mjs', import.meta.url).href;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drkit-crash-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Stored chunks (the temporary files of writes that were cut short are not chunks). */
async function countChunks(repo: string): Promise<number> {
  let n = 0;
  try {
    for (const sub of await readdir(join(repo, 'chunks')))
      n += (await readdir(join(repo, 'chunks', sub))).filter(
        (name) => !name.startsWith(STORE_TEMP_PREFIX),
      ).length;
  } catch {
    return 0;
  }
  return n;
}

/**
 * Starts a backup that stops itself (SIGSTOP, see crash-gate.mjs) right after it has stored `chunks` more chunks,
 * waits for the line it writes on stderr then, and SIGKILLs it: always mid-way, never after it committed, with
 * nothing timed.
 */
async function killMidBackup(image: string, repo: string, chunks: number): Promise<{ chunksAtKill: number }> {
  const before = await countChunks(repo);
  const child = spawn(process.execPath, ['--import', GATE, CLI, 'backup', image, '--repo', repo], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: {
      ...process.env,
      DRKIT_CRASH_GATE_CHUNKS: join(repo, 'chunks'),
      DRKIT_CRASH_GATE_AFTER: String(chunks),
    },
  });
  const exited = new Promise<NodeJS.Signals | null>((resolve) =>
    child.on('exit', (_code, signal) => resolve(signal)),
  );
  let stderr = '';
  const stopped = await new Promise<boolean>((resolve) => {
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text: string) => {
      stderr += text;
      if (stderr.includes('drkit-crash-gate: stopped')) resolve(true);
    });
    void exited.then(() => resolve(false));
  });
  if (!stopped) {
    throw new Error(`the backup ended before it had stored ${chunks} chunks (use a bigger image): ${stderr}`);
  }
  child.kill('SIGKILL');
  expect(await exited).toBe('SIGKILL');
  // Counted once the process is gone: what it stored, and no half-written chunk among them.
  const chunksAtKill = await countChunks(repo);
  expect(chunksAtKill - before).toBeGreaterThanOrEqual(chunks);
  return { chunksAtKill };
}

describe('a backup killed with SIGKILL', () => {
  it('leaves no half point, resumes on the next run, and every point restores identically', async () => {
    const image = join(dir, 'disk.img');
    const repo = join(dir, 'repo');
    // Enough 1 MiB chunks to stop after 20; the gate, not the image's size, makes the kill land mid-way.
    await writeDiskImage(image, { size: 64 * MiB, seed: 11 });
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
    await killMidBackup(image, repo, 3);
    // The killed incremental committed nothing; the next run does.
    const points = JSON.parse((await runCli(['points', '--json', '--repo', repo])).stdout);
    expect(points).toHaveLength(1);
    const again = await runCli(['backup', image, '--repo', repo]);
    expect(again.code, again.stderr).toBe(0);
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
