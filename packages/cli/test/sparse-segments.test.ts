import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, sha256File } from './run-cli.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const CHUNK = 256 * 1024;
let dir: string;

async function write(path: string, offset: number, bytes: Uint8Array): Promise<void> {
  const handle = await open(path, 'r+');
  await handle.write(bytes, 0, bytes.byteLength, offset);
  await handle.close();
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drkit-cli-sparse-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

// A sparse image of 2 GiB in 256 KiB chunks: 8192 positions, 8 index segments, holes between the data. Holes
// reach the engine as zero ranges; the index is written segment by segment as the backup passes them.
describe('drkit backup of a sparse image spanning several index segments', { timeout: 120_000 }, () => {
  it('writes only the segments that changed, and restores byte for byte', async () => {
    const image = join(dir, 'sparse.img');
    const handle = await open(image, 'w');
    await handle.truncate(2 * GiB);
    await handle.close();
    for (const at of [0, 300 * MiB, 900 * MiB, 2 * GiB - MiB]) await write(image, at, randomBytes(MiB));
    const repo = join(dir, 'repo');
    const backup = async () => {
      const run = await runCli(['backup', image, '--repo', repo, '--chunk-size', String(CHUNK), '--json']);
      expect(run.code, run.stderr).toBe(0);
    };
    await backup();
    // One write into data, one into a hole of another segment.
    await write(image, 300 * MiB + 64 * 1024, randomBytes(64 * 1024));
    await write(image, 1500 * MiB, randomBytes(64 * 1024));
    await backup();
    const points = JSON.parse((await runCli(['points', '--json', '--repo', repo])).stdout);
    expect(points).toHaveLength(2);
    const [full, incr] = points;
    expect(full.stats.segmentsWritten).toBe(4); // segments 0, 1, 3 and 7 hold data
    expect(incr.stats.segmentsWritten).toBe(2);
    for (const point of points) {
      const { bytesWritten, bytesDeduplicated, bytesSkippedUnchanged, bytesZero } = point.stats;
      expect(bytesWritten + bytesDeduplicated + bytesSkippedUnchanged + bytesZero).toBe(2 * GiB);
    }
    const restored = join(dir, 'restored.img');
    const run = await runCli(['restore', incr.id, restored, '--repo', repo]);
    expect(run.code, run.stderr).toBe(0);
    expect(await sha256File(restored)).toBe(await sha256File(image));
  });
});
