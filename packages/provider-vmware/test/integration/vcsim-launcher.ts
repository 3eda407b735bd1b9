// Starts and stops one vcsim launcher (scripts/peers/vcsim/) for a test file: 127.0.0.1, a free port, its own
// TMPDIR (the simulator's datastores live there), stopped by its PID. Its certificate is made fresh at every start
// and handed to the platform through `tls.ca` (or its thumbprint): verification stays on.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { inject } from 'vitest';
import './vcsim-description.js';

/** The first line the launcher prints. */
export interface VcsimReady {
  /** `https://127.0.0.1:PORT/sdk`. */
  readonly url: string;
  readonly mode: 'vpx' | 'esx';
  /** The PEM of the server's certificate. */
  readonly certificate: string;
  /** Its SHA-256 thumbprint, `AB:CD:...`. */
  readonly sha256: string;
  readonly pid: number;
  readonly username: string;
}

export interface StartVcsimOptions {
  readonly mode?: 'vpx' | 'esx';
  readonly username?: string;
  readonly password?: string;
  /** A second user whose sessions get NoPermission on changes (the launcher's extension). */
  readonly readonly?: { readonly username: string; readonly password: string };
  /** VMs per host. */
  readonly vms?: number;
  /** Capacity of every VM's disk, MiB. */
  readonly diskMiB?: number;
  /** Bytes one QueryChangedDiskAreas answer covers at most. */
  readonly cbtPageBytes?: number;
  /** Give the last VM (by name) a physical-mode RDM disk (vcsim cannot add one through the API). */
  readonly rdm?: boolean;
  /** The first N RemoveSnapshot_Task calls answer the TaskInProgress fault (the launcher's extension). */
  readonly failRemoveSnapshot?: number;
}

export interface RunningVcsim extends VcsimReady {
  readonly password: string;
  /** The launcher's TMPDIR (its datastores are folders in it). */
  readonly dir: string;
  /** Milliseconds from spawn to the ready line. */
  readonly startupMs: number;
  /** Stops the launcher (SIGTERM to its PID, then SIGKILL after 10 s) and removes its TMPDIR. */
  stop(): Promise<void>;
}

/** The launcher binary of the global setup; throws why there is none, so that tests fail rather than skip. */
export function vcsimBinary(): string {
  const provided = inject('vcsim');
  if (!provided.ok) throw new Error(provided.reason);
  return provided.binary;
}

export async function startVcsim(options: StartVcsimOptions = {}): Promise<RunningVcsim> {
  const binary = vcsimBinary();
  const dir = await mkdtemp(join(tmpdir(), 'drkit-vcsim-'));
  const password = options.password ?? `pw-${Math.random().toString(36).slice(2)}`;
  const args = [
    '-mode',
    options.mode ?? 'vpx',
    '-username',
    options.username ?? 'drkit',
    '-password',
    password,
    '-vms',
    String(options.vms ?? 2),
  ];
  if (options.readonly) {
    args.push(
      '-readonly-username',
      options.readonly.username,
      '-readonly-password',
      options.readonly.password,
    );
  }
  if (options.diskMiB !== undefined) args.push('-disk-mib', String(options.diskMiB));
  if (options.cbtPageBytes !== undefined) args.push('-cbt-page-bytes', String(options.cbtPageBytes));
  if (options.rdm) args.push('-rdm');
  if (options.failRemoveSnapshot) args.push('-fail-remove-snapshot', String(options.failRemoveSnapshot));
  const started = performance.now();
  const child = spawn(binary, args, {
    env: { ...process.env, TMPDIR: dir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-8000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ready = await new Promise<VcsimReady>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    const timer = setTimeout(() => reject(new Error(`vcsim did not start within 60 s: ${stderr}`)), 60_000);
    lines.once('line', (line) => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(line) as VcsimReady);
      } catch {
        reject(new Error(`vcsim's first line is not JSON: ${line}\n${stderr}`));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`vcsim exited with ${code} before it was ready: ${stderr}`));
    });
  }).catch(async (error: unknown) => {
    if (child.exitCode === null) child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
    throw error;
  });
  const startupMs = Math.round(performance.now() - started);
  let stopped: Promise<void> | undefined;
  return {
    ...ready,
    password,
    dir,
    startupMs,
    stop() {
      stopped ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          process.kill(ready.pid, 'SIGTERM');
          const timer = setTimeout(() => {
            if (child.exitCode === null) process.kill(ready.pid, 'SIGKILL');
          }, 10_000);
          await exited;
          clearTimeout(timer);
        }
        await rm(dir, { recursive: true, force: true });
      })();
      return stopped;
    },
  };
}
