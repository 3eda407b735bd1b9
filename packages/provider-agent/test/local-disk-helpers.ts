import { execFile, spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { promisify } from 'node:util';
import type { Change, ChangedExtent, ExtentReadSession } from '@drkit/core';

const run = promisify(execFile);

/** Open file descriptors of this process (Linux), or undefined where /proc is missing. */
export function openFileDescriptorCount(): number | undefined {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return undefined;
  }
}

/** Whether `fallocate --punch-hole` (util-linux) is there to make holes in existing files. */
export const canPunchHoles =
  process.platform === 'linux' && spawnSync('fallocate', ['--version'], { stdio: 'ignore' }).status === 0;

/** Deallocates `[offset, offset + length)` of a file: it becomes a hole reading as zeros. */
export async function punchHole(path: string, offset: number, length: number): Promise<void> {
  await run('fallocate', [
    '--punch-hole',
    '--keep-size',
    '--offset',
    String(offset),
    '--length',
    String(length),
    path,
  ]);
}

/** Creates a sparse file of `size` bytes with `data` written at the given offsets; the rest are holes. */
export async function writeSparseFile(
  path: string,
  size: number,
  writes: readonly { offset: number; data: Uint8Array }[],
): Promise<void> {
  const handle = await open(path, 'w');
  try {
    for (const { offset, data } of writes) await writeFully(handle, data, offset);
    await handle.truncate(size);
  } finally {
    await handle.close();
  }
}

async function writeFully(handle: FileHandle, data: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < data.length; ) {
    done += (await handle.write(data, done, data.length - done, position + done)).bytesWritten;
  }
}

/** Deterministic non-zero bytes. */
export function pattern(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let state = seed * 2654435761 + 1;
  for (let i = 0; i < length; i++) {
    state = (state * 1103515245 + 12345) >>> 0;
    bytes[i] = (state >>> 24) | 1;
  }
  return bytes;
}

/** Lists every extent of a session. */
export async function listExtents(
  session: ExtentReadSession,
  signal?: AbortSignal,
): Promise<ChangedExtent[]> {
  const extents: ChangedExtent[] = [];
  for await (const extent of session.extents(signal ? { signal } : {})) extents.push(extent);
  return extents;
}

/**
 * Reads a session's whole change set, one listed extent after another (each `data` extent in one read, which the
 * local-disk reader allows since it lists at most its read size): `zero` extents as zero changes.
 */
export async function collect(session: ExtentReadSession, signal?: AbortSignal): Promise<Change[]> {
  const changes: Change[] = [];
  const options = signal ? { signal } : {};
  for await (const extent of session.extents(options)) {
    if (extent.kind === 'zero') changes.push({ kind: 'zero', offset: extent.offset, length: extent.length });
    else
      changes.push({ kind: 'data', offset: extent.offset, data: (await session.read(extent, options)).data });
  }
  return changes;
}

/** The changes or extents as `kind offset length` lines, to compare layouts at a glance. */
export function layoutOf(items: readonly (Change | ChangedExtent)[]): string[] {
  return items.map((item) =>
    'data' in item ? `data ${item.offset} ${item.data.length}` : `${item.kind} ${item.offset} ${item.length}`,
  );
}

/** Applies changes over `base` (resized to `capacity` with zeros), as the engine does. */
export function applyChanges(base: Uint8Array, capacity: number, changes: readonly Change[]): Uint8Array {
  const out = new Uint8Array(capacity);
  out.set(base.subarray(0, Math.min(capacity, base.length)));
  for (const change of changes) {
    if (change.kind === 'data') out.set(change.data, change.offset);
    else out.fill(0, change.offset, change.offset + change.length);
  }
  return out;
}

/** Asserts that changes are sorted, disjoint and cover `[0, capacity)` exactly; returns an error text or ''. */
export function coverageProblem(changes: readonly Change[], capacity: number): string {
  let cursor = 0;
  for (const [index, change] of changes.entries()) {
    const length = change.kind === 'data' ? change.data.length : change.length;
    if (change.offset !== cursor) return `change #${index} starts at ${change.offset}, expected ${cursor}`;
    if (length <= 0) return `change #${index} is empty`;
    cursor += length;
  }
  return cursor === capacity ? '' : `changes end at ${cursor}, capacity is ${capacity}`;
}

/** Attaches `image` to a free loop device; undefined (with why) when this machine does not allow it. */
export async function attachLoopDevice(image: string): Promise<{ device?: string; why?: string }> {
  if (process.platform !== 'linux') return { why: 'loop devices are Linux only' };
  if (process.getuid?.() !== 0) return { why: 'attaching a loop device needs root' };
  try {
    const { stdout } = await run('losetup', ['--find', '--show', image]);
    const device = stdout.trim();
    return device.startsWith('/dev/') ? { device } : { why: `losetup printed ${JSON.stringify(stdout)}` };
  } catch (error) {
    return { why: `losetup is not permitted here: ${(error as Error).message.split('\n')[0]}` };
  }
}

export async function detachLoopDevice(device: string): Promise<void> {
  await run('losetup', ['--detach', device]);
}

/** '' when both hold the same bytes, else where they first differ (fast on MiBs, unlike a deep toEqual). */
export function byteDifference(actual: Uint8Array, expected: Uint8Array): string {
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.length);
  const b = Buffer.from(expected.buffer, expected.byteOffset, expected.length);
  if (a.equals(b)) return '';
  if (a.length !== b.length) return `length ${a.length}, expected ${b.length}`;
  let at = 0;
  while (a[at] === b[at]) at++;
  return `byte ${at} is ${a[at]}, expected ${b[at]}`;
}
