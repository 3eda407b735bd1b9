import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashDiskImage, mutateDiskImage, writeDiskImage } from './disk-image.js';

const MiB = 1024 * 1024;
let directory: string;

beforeAll(async () => {
  directory = await mkdtemp(join(tmpdir(), 'drkit-disk-image-'));
});
afterAll(async () => {
  await rm(directory, { recursive: true, force: true });
});

const ZEROS = new Uint8Array(MiB);

/** Whether every byte is zero; memcmp against zeros, not a JavaScript loop over tens of megabytes. */
function isZero(bytes: Uint8Array): boolean {
  for (let at = 0; at < bytes.length; at += ZEROS.length) {
    const piece = bytes.subarray(at, at + ZEROS.length);
    if (Buffer.compare(piece, ZEROS.subarray(0, piece.length)) !== 0) return false;
  }
  return true;
}

// These write, read and hash images of 12 to 64 MiB (one of 512 MiB, with its own timeout below): half a second
// each alone, several times that with 2 busy cores and a busy disk. Hence 60 s rather than vitest's 5 s.
describe('writeDiskImage', { timeout: 60_000 }, () => {
  it('is deterministic for a seed and differs between seeds', async () => {
    const a = join(directory, 'a.img');
    const b = join(directory, 'b.img');
    const c = join(directory, 'c.img');
    // Runs of at most 1 MiB: dozens of runs of every kind in 12 MiB, without writing and hashing 3 × 48 MiB.
    const options = { size: 12 * MiB + 123, maxRunBytes: MiB };
    const layoutA = await writeDiskImage(a, { ...options, seed: 'same' });
    const layoutB = await writeDiskImage(b, { ...options, seed: 'same' });
    const layoutC = await writeDiskImage(c, { ...options, seed: 'other' });
    expect(layoutA.runs.length).toBeGreaterThan(20);
    expect(layoutB).toEqual(layoutA);
    expect(layoutC).not.toEqual(layoutA);
    expect(await hashDiskImage(b)).toBe(await hashDiskImage(a));
    expect(await hashDiskImage(c)).not.toBe(await hashDiskImage(a));
    expect((await stat(a)).size).toBe(12 * MiB + 123);
  });

  it('lays out text, random, zero and hole runs that match the bytes, with real holes', async () => {
    const path = join(directory, 'layout.img');
    const size = 64 * MiB + 4096 + 17;
    const layout = await writeDiskImage(path, { size, seed: 11 });
    expect(layout.sizeBytes).toBe(size);
    let cursor = 0;
    for (const run of layout.runs) {
      expect(run.offset).toBe(cursor);
      expect(run.length).toBeGreaterThan(0);
      cursor += run.length;
    }
    expect(cursor).toBe(size);
    for (const kind of ['text', 'random', 'zero', 'hole'] as const) {
      const total = layout.runs.filter((run) => run.kind === kind).reduce((sum, run) => sum + run.length, 0);
      expect(layout.bytesByKind[kind]).toBe(total);
      expect(total, kind).toBeGreaterThan(0);
    }
    const bytes = await readFile(path);
    for (const run of layout.runs) {
      const slice = bytes.subarray(run.offset, run.offset + run.length);
      if (run.kind === 'zero' || run.kind === 'hole')
        expect(isZero(slice), `${run.kind} at ${run.offset}`).toBe(true);
      else expect(isZero(slice.subarray(0, 4096)), `${run.kind} at ${run.offset}`).toBe(false);
    }
    // Holes are not allocated: the file takes about (size - holes) on disk.
    const allocated = (await stat(path)).blocks * 512;
    expect(allocated).toBeLessThan(size - layout.bytesByKind.hole + MiB);
    expect(allocated).toBeGreaterThan(size - layout.bytesByKind.hole - MiB);
    // Text compresses, random does not.
    const text = layout.runs.find((run) => run.kind === 'text' && run.length >= 64 * 1024)!;
    const random = layout.runs.find((run) => run.kind === 'random' && run.length >= 64 * 1024)!;
    const textSlice = bytes.subarray(text.offset, text.offset + 64 * 1024);
    const randomSlice = bytes.subarray(random.offset, random.offset + 64 * 1024);
    expect(deflateRawSync(textSlice, { level: 1 }).length).toBeLessThan(textSlice.length / 2);
    expect(deflateRawSync(randomSlice, { level: 1 }).length).toBeGreaterThan(randomSlice.length * 0.99);
  });

  it('writes a size of zero and sizes that are not multiples of 4096', async () => {
    const empty = join(directory, 'empty.img');
    expect((await writeDiskImage(empty, { size: 0, seed: 1 })).runs).toEqual([]);
    expect((await stat(empty)).size).toBe(0);
    const odd = join(directory, 'odd.img');
    await writeDiskImage(odd, { size: 4097, seed: 1, mix: { hole: 0, zero: 0 } });
    const bytes = await readFile(odd);
    expect(bytes.length).toBe(4097);
    expect(isZero(bytes)).toBe(false);
  });

  // Writes 512 MiB: about 1 s alone, several times that on 2 busy cores, hence the explicit timeout. How fast it
  // writes is not something a test on a shared machine can judge, so nothing here is timed.
  it('streams large images in bounded memory', { timeout: 120_000 }, async () => {
    const path = join(directory, 'large.img');
    const before = process.memoryUsage().rss;
    const layout = await writeDiskImage(path, { size: 512 * MiB, seed: 'large' });
    const growth = process.memoryUsage().rss - before;
    expect(layout.sizeBytes).toBe(512 * MiB);
    expect((await stat(path)).size).toBe(512 * MiB);
    // Two 4 MiB buffers and a 1 MiB text pool; far from a 512 MiB whole-image buffer.
    expect(growth).toBeLessThan(96 * MiB);
    await rm(path);
  });

  it('rejects bad options', async () => {
    await expect(writeDiskImage(join(directory, 'x'), { size: -1, seed: 1 })).rejects.toThrow(RangeError);
    await expect(
      writeDiskImage(join(directory, 'x'), { size: 1, seed: 1, minRunBytes: 1000 }),
    ).rejects.toThrow(RangeError);
    await expect(
      writeDiskImage(join(directory, 'x'), {
        size: 1,
        seed: 1,
        mix: { text: 0, random: 0, zero: 0, hole: 0 },
      }),
    ).rejects.toThrow(RangeError);
  });

  it('rejects with the signal reason when aborted', async () => {
    const reason = new Error('stop');
    await expect(
      writeDiskImage(join(directory, 'aborted.img'), {
        size: MiB,
        seed: 1,
        signal: AbortSignal.abort(reason),
      }),
    ).rejects.toBe(reason);
  });
});

describe('mutateDiskImage', { timeout: 60_000 }, () => {
  it('changes about the fraction asked, only where it says, deterministically', async () => {
    const path = join(directory, 'mutate.img');
    const size = 32 * MiB;
    await writeDiskImage(path, { size, seed: 5 });
    const before = await readFile(path);
    const mutation = await mutateDiskImage(path, { fraction: 0.05, seed: 9, zeroRanges: 3, lastByte: true });
    const after = await readFile(path);
    expect(mutation.previousSizeBytes).toBe(size);
    expect(mutation.sizeBytes).toBe(size);
    const written = mutation.writes.reduce((sum, write) => sum + write.length, 0);
    expect(written).toBeGreaterThanOrEqual(0.05 * size);
    expect(written).toBeLessThan(0.05 * size + 256 * 1024);
    for (const write of mutation.writes) {
      expect(write.offset % 4096).toBe(0);
      expect(write.length).toBeGreaterThanOrEqual(4096);
      expect(write.length).toBeLessThanOrEqual(256 * 1024);
    }
    expect(mutation.zeroed).toHaveLength(3);
    for (const range of mutation.zeroed) {
      expect(isZero(after.subarray(range.offset, range.offset + range.length))).toBe(true);
    }
    expect(after[size - 1]).not.toBe(before[size - 1]);
    // Outside `changed`, every byte is as before; inside, most bytes differ.
    let cursor = 0;
    let changedBytes = 0;
    let differing = 0;
    for (const range of mutation.changed) {
      expect(range.offset).toBeGreaterThanOrEqual(cursor);
      expect(after.subarray(cursor, range.offset).equals(before.subarray(cursor, range.offset))).toBe(true);
      for (let i = range.offset; i < range.offset + range.length; i++)
        if (after[i] !== before[i]) differing++;
      changedBytes += range.length;
      cursor = range.offset + range.length;
    }
    expect(after.subarray(cursor).equals(before.subarray(cursor))).toBe(true);
    expect(differing).toBeGreaterThan(changedBytes / 2);

    const again = join(directory, 'mutate-again.img');
    await writeDiskImage(again, { size, seed: 5 });
    expect(await mutateDiskImage(again, { fraction: 0.05, seed: 9, zeroRanges: 3, lastByte: true })).toEqual(
      mutation,
    );
    expect(await hashDiskImage(again)).toBe(await hashDiskImage(path));
  });

  it('grows and shrinks', async () => {
    const path = join(directory, 'resize.img');
    await writeDiskImage(path, { size: 8 * MiB, seed: 6 });
    const before = await readFile(path);
    const grown = await mutateDiskImage(path, { fraction: 0, seed: 1, grow: MiB + 5 });
    expect(grown).toMatchObject({ previousSizeBytes: 8 * MiB, sizeBytes: 9 * MiB + 5, changed: [] });
    const afterGrow = await readFile(path);
    expect(afterGrow.subarray(0, 8 * MiB).equals(before)).toBe(true);
    expect(isZero(afterGrow.subarray(8 * MiB))).toBe(true);
    const shrunk = await mutateDiskImage(path, { fraction: 0.01, seed: 2, shrink: 2 * MiB, lastByte: true });
    expect(shrunk.sizeBytes).toBe(7 * MiB + 5);
    expect((await stat(path)).size).toBe(7 * MiB + 5);
    for (const range of shrunk.changed) expect(range.offset + range.length).toBeLessThanOrEqual(7 * MiB + 5);
    const last = shrunk.changed.at(-1)!;
    expect(last.offset + last.length).toBe(7 * MiB + 5);
  });

  it('zeroes explicit ranges, clipped to the image', async () => {
    const path = join(directory, 'zero.img');
    await writeDiskImage(path, { size: MiB, seed: 8, mix: { hole: 0, zero: 0 } });
    const mutation = await mutateDiskImage(path, {
      fraction: 0,
      seed: 1,
      zeroRanges: [
        { offset: 1000, length: 5000 },
        { offset: MiB - 10, length: 100 },
      ],
    });
    expect(mutation.zeroed).toEqual([
      { offset: 1000, length: 5000 },
      { offset: MiB - 10, length: 10 },
    ]);
    const bytes = await readFile(path);
    expect(isZero(bytes.subarray(1000, 6000))).toBe(true);
    expect(isZero(bytes.subarray(MiB - 10))).toBe(true);
    expect(bytes.length).toBe(MiB);
  });
});
