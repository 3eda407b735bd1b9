// A child process that stops itself with SIGSTOP at a phase it announces on standard error (the test hooks
// DRKIT_TEST_PRUNE_STOP_AT / DRKIT_TEST_BACKUP_STOP_AT), and the store helpers the paused-process tests share.
import { type ChildProcess, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import type { Store } from '../src/repository/store.js';

export interface StoppingChild {
  readonly child: ChildProcess;
  /** Resolves when the child announced its stop and the kernel shows it stopped. */
  readonly stopped: Promise<void>;
  /** The child's last standard-output line (JSON) and exit code. */
  readonly done: Promise<{ line: Record<string, unknown>; code: number | null }>;
}

/**
 * Runs `node script ...args` with `env` added, waiting for the line `announcement` on its standard error; `what`
 * names the child in errors ("the pruner").
 */
export function startStoppingChild(options: {
  readonly script: string;
  readonly args: readonly string[];
  readonly env: Record<string, string>;
  readonly announcement: string;
  readonly what: string;
}): StoppingChild {
  const { what } = options;
  const child = spawn(process.execPath, [options.script, ...options.args], {
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  const announced = new Promise<void>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes(`${options.announcement}\n`)) resolve();
    });
    child.on('exit', (code) =>
      reject(new Error(`${what} exited (${code}) before it stopped: ${stderr}${stdout}`)),
    );
  });
  const stopped = announced.then(async () => {
    // The announcement comes right before SIGSTOP: wait until the kernel says the process is stopped ("T").
    for (;;) {
      const stat = await readFile(`/proc/${child.pid}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('T')) return;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  });
  const done = new Promise<{ line: Record<string, unknown>; code: number | null }>((resolve, reject) => {
    child.on('close', (code) => {
      try {
        resolve({
          line: JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as Record<string, unknown>,
          code,
        });
      } catch {
        reject(new Error(`${what} printed no result (exit ${code}): ${stderr}${stdout}`));
      }
    });
  });
  return { child, stopped, done };
}

/** The keys under `prefix`, in listing order. */
export async function keys(store: Store, prefix: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of store.list(prefix)) found.push(entry.key);
  return found;
}

/** Moves the pending prune mark back a day: its grace period has passed. */
export async function backdateMark(store: Store): Promise<void> {
  const mark = JSON.parse(new TextDecoder().decode(await store.get('prune/mark.json')));
  mark.markedAt = new Date(Date.now() - 24 * 60 * 60 * 1000).toISOString();
  await store.delete('prune/mark.json');
  await store.put('prune/mark.json', new TextEncoder().encode(JSON.stringify(mark)));
}
