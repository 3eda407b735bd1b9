// Sparse raw images for the NBD integration tests: random data written at known ranges of a file made with
// ftruncate, so the file system (ext4, xfs, tmpfs: 4 KiB blocks) keeps everything else as holes.
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { NbdExtent } from '../../../src/nbd/index.js';

export interface SparseImage {
  readonly path: string;
  readonly size: number;
  /** The ranges written (sorted, disjoint, 64 KiB aligned): everything else is a hole. */
  readonly written: readonly { offset: number; length: number }[];
  /** The whole content, as a reader must see it. */
  readonly content: Buffer;
}

/**
 * Writes `size` bytes of sparse image: random data in `written` (offset, length pairs), holes elsewhere; plus,
 * when `zeroed` is given, explicit zeros written there (allocated, reading as zeros).
 */
export async function makeSparseImage(
  path: string,
  size: number,
  written: readonly [offset: number, length: number][],
  zeroed: readonly [offset: number, length: number][] = [],
): Promise<SparseImage> {
  const content = Buffer.alloc(size);
  const handle = await open(path, 'w');
  try {
    await handle.truncate(size);
    for (const [offset, length] of written) {
      const data = randomBytes(length);
      data.copy(content, offset);
      await handle.write(data, 0, length, offset);
    }
    for (const [offset, length] of zeroed) await handle.write(Buffer.alloc(length), 0, length, offset);
    await handle.sync();
  } finally {
    await handle.close();
  }
  const all = [...written, ...zeroed]
    .map(([offset, length]) => ({ offset, length }))
    .sort((a, b) => a.offset - b.offset);
  return { path, size, written: all, content };
}

/** The extents a server should report for the image: allocated where written, hole+zero elsewhere. */
export function expectedExtents(image: SparseImage): NbdExtent[] {
  const extents: NbdExtent[] = [];
  const push = (offset: number, length: number, hole: boolean) => {
    const last = extents.at(-1);
    if (last && last.hole === hole && last.offset + last.length === offset) {
      extents[extents.length - 1] = { ...last, length: last.length + length };
    } else {
      extents.push({ offset, length, hole, zero: hole });
    }
  };
  let at = 0;
  for (const range of image.written) {
    if (range.offset > at) push(at, range.offset - at, true);
    push(range.offset, range.length, false);
    at = range.offset + range.length;
  }
  if (at < image.size) push(at, image.size - at, true);
  return extents;
}
