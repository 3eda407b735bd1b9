// Starts real NBD servers from Debian for the NBD client's integration tests: nbdkit (memory, file and other
// plugins, with filters) and qemu-nbd, on a Unix socket in a temp dir or on 127.0.0.1. Each server is stopped by
// its PID (and only that PID); nbdkit also runs with --exit-with-parent, so it cannot outlive the test process.
// Install them with `sh scripts/peers/nbd.sh install`.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, unlink } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { inject } from 'vitest';
import type { NbdConnectOptions } from '../../../src/nbd/index.js';

/** What the global setup found (nbd-global-setup.ts). */
export interface ProvidedNbdPeers {
  readonly ok: boolean;
  readonly reason?: string;
  readonly versions?: Readonly<Record<string, string>>;
}

declare module 'vitest' {
  export interface ProvidedContext {
    nbdPeers: ProvidedNbdPeers;
  }
}

/** Throws the global setup's reason when nbdkit or qemu-nbd is missing: the tests fail, they never skip. */
export function requireNbdPeers(): Readonly<Record<string, string>> {
  const peers = inject('nbdPeers');
  if (!peers.ok) throw new Error(peers.reason);
  return peers.versions ?? {};
}

/** Where a server listens; spreads into {@link NbdConnectOptions}. */
export type NbdAddress = { readonly socketPath: string } | { readonly host: string; readonly port: number };

/** A server this test process started. */
export interface StartedNbdServer {
  readonly pid: number;
  readonly address: NbdAddress;
  /** A temp dir of this server (its socket, pid file, logs); removed by `stop()`. */
  readonly dir: string;
  /** The NBD URI for libnbd's tools (`nbdinfo`, `nbdcopy`). */
  readonly uri: string;
  /** SIGKILL, at once: the server vanishes mid-whatever. Resolves when the process is gone. */
  kill(): Promise<void>;
  /** SIGTERM, then waits for the process; removes the dir unless `keepDir`. */
  stop(options?: { keepDir?: boolean }): Promise<void>;
}

export interface NbdkitOptions {
  /** Plugin and its parameters, e.g. `['memory', 'size=8M']`. */
  readonly plugin: readonly string[];
  /** Filters in order, e.g. `['delay']`; their parameters go into `plugin` (nbdkit takes them all as key=value). */
  readonly filters?: readonly string[];
  /** Other nbdkit flags (`--no-sr`, `-r`, `--mask-handshake=0`, `--tls=require` ...). */
  readonly flags?: readonly string[];
  /** `unix` (default) or `tcp` on 127.0.0.1. */
  readonly transport?: 'unix' | 'tcp';
  /** Reuse an address (to restart a server where a killed one was). */
  readonly address?: NbdAddress;
  /** Directory for the socket and pid file (default: a new temp dir). */
  readonly dir?: string;
}

/** Starts nbdkit in the foreground and waits for its pid file, which nbdkit writes once it accepts connections. */
export async function startNbdkit(options: NbdkitOptions): Promise<StartedNbdServer> {
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'drkit-nbdkit-')));
  const pidFile = join(dir, `nbdkit-${Date.now()}-${Math.random().toString(16).slice(2)}.pid`);
  for (let attempt = 1; ; attempt++) {
    const address = options.address ?? (await newAddress(options.transport ?? 'unix', dir));
    if ('socketPath' in address) await unlink(address.socketPath).catch(() => undefined);
    const listen =
      'socketPath' in address ? ['-U', address.socketPath] : ['-i', address.host, '-p', String(address.port)];
    const args = [
      '-f',
      '--exit-with-parent',
      '-P',
      pidFile,
      ...listen,
      ...(options.flags ?? []),
      ...(options.filters ?? []).map((filter) => `--filter=${filter}`),
      ...options.plugin,
    ];
    const child = spawn('nbdkit', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    try {
      await waitForPidFile(child, pidFile, `nbdkit ${args.join(' ')}`);
      return started(child.pid!, address, dir, child);
    } catch (error) {
      // A TCP port picked free can be taken by the time nbdkit binds it: try another (bounded).
      if (attempt < 3 && 'port' in address && !options.address) continue;
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }
}

export interface QemuNbdOptions {
  /** The raw image file. */
  readonly file: string;
  readonly exportName?: string;
  readonly readOnly?: boolean;
  /** How many clients at once (`-e`). Default 8. */
  readonly shared?: number;
  /** `--allocation-depth`. */
  readonly allocationDepth?: boolean;
  readonly transport?: 'unix' | 'tcp';
  readonly extraArgs?: readonly string[];
}

/**
 * Starts qemu-nbd with `--fork` (its parent exits once the server is running) and `-t` (it does not exit after
 * the last client), and reads the server's PID from its pid file.
 */
export async function startQemuNbd(options: QemuNbdOptions): Promise<StartedNbdServer> {
  const dir = await mkdtemp(join(tmpdir(), 'drkit-qemu-nbd-'));
  const pidFile = join(dir, 'qemu-nbd.pid');
  for (let attempt = 1; ; attempt++) {
    const address = await newAddress(options.transport ?? 'unix', dir);
    const listen =
      'socketPath' in address ? ['-k', address.socketPath] : ['-b', address.host, '-p', String(address.port)];
    const args = [
      '--fork',
      '--pid-file',
      pidFile,
      '-t',
      '-e',
      String(options.shared ?? 8),
      '-f',
      'raw',
      ...(options.exportName !== undefined ? ['-x', options.exportName] : []),
      ...(options.readOnly ? ['-r'] : []),
      ...(options.allocationDepth ? ['--allocation-depth'] : []),
      ...listen,
      ...(options.extraArgs ?? []),
      options.file,
    ];
    try {
      await run('qemu-nbd', args);
      const pid = Number((await readFile(pidFile, 'utf8')).trim());
      if (!Number.isInteger(pid) || pid <= 0) throw new Error(`qemu-nbd wrote no PID to ${pidFile}`);
      return started(pid, address, dir, undefined);
    } catch (error) {
      if (attempt < 3 && 'port' in address) continue;
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }
}

function started(
  pid: number,
  address: NbdAddress,
  dir: string,
  child: ChildProcess | undefined,
): StartedNbdServer {
  const exited = child
    ? new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) resolve();
        else child.once('exit', () => resolve());
      })
    : undefined;
  const gone = async () => {
    if (exited) return exited;
    // Not our child (qemu-nbd forked): poll its PID, bounded.
    for (let i = 0; i < 1000 && alive(pid); i++) await sleep(10);
  };
  const uri =
    'socketPath' in address
      ? `nbd+unix:///?socket=${address.socketPath}`
      : `nbd://${address.host}:${address.port}/`;
  let stopped = false;
  return {
    pid,
    address,
    dir,
    uri,
    kill: async () => {
      if (alive(pid)) process.kill(pid, 'SIGKILL');
      await gone();
    },
    stop: async (options) => {
      if (!stopped) {
        stopped = true;
        if (alive(pid)) process.kill(pid, 'SIGTERM');
        await gone();
      }
      if (!options?.keepDir) await rm(dir, { recursive: true, force: true });
    },
  };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function newAddress(transport: 'unix' | 'tcp', dir: string): Promise<NbdAddress> {
  if (transport === 'unix')
    return { socketPath: join(dir, `nbd-${Math.random().toString(16).slice(2)}.sock`) };
  return { host: '127.0.0.1', port: await freePort() };
}

/** A TCP port nothing listens on right now, on 127.0.0.1. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

async function waitForPidFile(child: ChildProcess, pidFile: string, what: string): Promise<void> {
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (text: string) => {
    stderr = (stderr + text).slice(-4000);
  });
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  // Bounded by attempts, not by a clock: 2000 polls of 5 ms.
  for (let i = 0; i < 2000; i++) {
    const text = await readFile(pidFile, 'utf8').catch(() => '');
    if (text.trim() !== '') return;
    if (exited) break;
    await sleep(5);
  }
  if (!exited) child.kill('SIGKILL');
  throw new Error(`${what} did not start:\n${stderr}`);
}

/** Runs a command; resolves with stdout. */
export function run(command: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { maxBuffer: 1 << 26 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${command} ${args.join(' ')} failed: ${error.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Spreads a server's address into connect options. */
export function connectOptions(server: StartedNbdServer, more: NbdConnectOptions = {}): NbdConnectOptions {
  return { ...server.address, ...more };
}
