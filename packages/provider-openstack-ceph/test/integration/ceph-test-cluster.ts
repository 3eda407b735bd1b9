// Helpers of the integration tests: the cluster the global setup started, changes to images behind drkit's
// back (python3-rbd through rbd-helper.py, and the admin's rbd command), and what the images hold.
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inject } from 'vitest';
import type { CephClusterOptions } from '../../src/index.js';
import type { CephClusterDescription } from './ceph-cluster-description.js';

const HELPER = fileURLToPath(new URL('./rbd-helper.py', import.meta.url));

/**
 * The cluster of the global setup. Throws the reason it did not start, so that every integration test fails
 * with it rather than being skipped.
 */
export function cephCluster(): CephClusterDescription {
  const provided = inject('cephCluster');
  if (!provided.ok) throw new Error(provided.reason);
  return provided.cluster;
}

/** How long the global setup took to start the cluster. */
export function cephStartupMs(): number {
  const provided = inject('cephCluster');
  return provided.ok ? provided.startupMs : Number.NaN;
}

/** A fresh image name, unique across test files running at once. */
export function uniqueImageName(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}

/** The cluster option for drkit as the least-privilege `client.backup` user. */
export function backupClusterOptions(
  cluster: CephClusterDescription,
  overrides: Partial<CephClusterOptions> = {},
): CephClusterOptions {
  return {
    name: 'test',
    monitors: cluster.monitors,
    cephx: cluster.auth === 'none' ? false : { user: cluster.backupUser, keyring: cluster.backupKey },
    pool: cluster.pool,
    incrementalMode: 'exact',
    timeoutSeconds: 10,
    ...overrides,
  };
}

/** One operation of rbd-helper.py (see its docstring). */
export type HelperOp =
  | { op: 'create'; image: string; size: number; features?: string[]; order?: number }
  | { op: 'write'; image: string; offset: number; data: Uint8Array }
  | { op: 'fill'; image: string; offset: number; length: number; seed: number }
  | { op: 'discard'; image: string; offset: number; length: number }
  | { op: 'resize'; image: string; size: number }
  | { op: 'snap-create' | 'snap-remove'; image: string; snap: string }
  | { op: 'remove'; image: string }
  | { op: 'invalidate-object-map'; image: string };

/** Runs operations on images of the cluster's pool through librbd, as client.admin, on one connection. */
export async function rbdHelper(
  cluster: CephClusterDescription,
  ops: readonly HelperOp[],
): Promise<unknown[]> {
  const input = JSON.stringify(
    ops.map((op) => ({
      pool: cluster.pool,
      ...op,
      ...('data' in op ? { data: Buffer.from(op.data).toString('base64') } : {}),
    })),
  );
  const output = await new Promise<string>((resolve, reject) => {
    const child = execFile(
      '/usr/bin/python3',
      [HELPER, cluster.conf],
      { maxBuffer: 16 * 1024 * 1024, timeout: 120_000 },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`rbd-helper.py failed: ${error.message}\n${stderr}`));
        else resolve(stdout);
      },
    );
    child.stdin?.end(input);
  });
  return JSON.parse(output) as unknown[];
}

/** Runs the admin's `rbd --conf CONF ARGS` (or `ceph` with `command: 'ceph'`) and returns stdout. */
export function adminCommand(
  cluster: CephClusterDescription,
  args: readonly string[],
  command: 'rbd' | 'ceph' = 'rbd',
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      command,
      ['--conf', cluster.conf, ...args],
      { maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`${command} ${args.join(' ')} failed: ${error.message}\n${stderr}`));
        else resolve(stdout);
      },
    );
  });
}

/** SHA-256 (hex) and length of `rbd export SPEC -` (an image or a snapshot), as the admin reads it. */
export function exportSha256(
  cluster: CephClusterDescription,
  spec: string,
): Promise<{ sha256: string; size: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      'rbd',
      ['--conf', cluster.conf, 'export', '--no-progress', `${cluster.pool}/${spec}`, '-'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const hash = createHash('sha256');
    let size = 0;
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      size += chunk.length;
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve({ sha256: hash.digest('hex'), size });
      else reject(new Error(`rbd export ${spec} exited ${code}: ${stderr}`));
    });
  });
}

/** The bytes of `rbd export SPEC -` (small images only). */
export function exportBytes(cluster: CephClusterDescription, spec: string): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      'rbd',
      ['--conf', cluster.conf, 'export', '--no-progress', `${cluster.pool}/${spec}`, '-'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const chunks: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => chunks.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(new Uint8Array(Buffer.concat(chunks)));
      else reject(new Error(`rbd export ${spec} exited ${code}: ${stderr}`));
    });
  });
}

/** Names of the snapshots of an image (user namespace). */
export async function snapshotNames(cluster: CephClusterDescription, image: string): Promise<string[]> {
  const list = JSON.parse(
    await adminCommand(cluster, ['snap', 'ls', '--format', 'json', `${cluster.pool}/${image}`]),
  ) as { name: string }[];
  return list.map((snap) => snap.name);
}

/**
 * What the rbd command calls of this process hold right now: temp folders `drkit-rbd-*` in the temp dir and
 * running `rbd` child processes. Zero when every call cleaned up.
 */
export function openRbdResources(): number {
  const folders = readdirSync(tmpdir()).filter((name) => name.startsWith('drkit-rbd-')).length;
  let children = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(join('/proc', entry, 'stat'), 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      if (Number(fields[1]) === process.pid && comm === 'rbd' && fields[0] !== 'Z') children++;
    } catch {
      // the process ended meanwhile
    }
  }
  return folders + children;
}
