import { InvalidArgumentError } from '../errors/drkit-error.js';
import type { Extent } from '../spec/v2/index.js';

/** Returns the extents sorted by offset (a new array; zero-length extents dropped). */
export function sortExtents(extents: Iterable<Extent>): Extent[] {
  return [...extents].filter((e) => e.length > 0).sort((a, b) => a.offset - b.offset);
}

/** Sorts and merges overlapping or touching extents into a minimal disjoint list. */
export function mergeExtents(extents: Iterable<Extent>): Extent[] {
  const out: { offset: number; length: number }[] = [];
  for (const e of sortExtents(extents)) {
    const last = out[out.length - 1];
    if (last && e.offset <= last.offset + last.length) {
      last.length = Math.max(last.length, e.offset + e.length - last.offset);
    } else {
      out.push({ offset: e.offset, length: e.length });
    }
  }
  return out;
}

/** Cuts the extents to `[0, capacity)`, dropping what lies entirely beyond. Input must be sorted. */
export function clipExtents(extents: Iterable<Extent>, capacity: number): Extent[] {
  const out: Extent[] = [];
  for (const e of extents) {
    const start = Math.max(0, e.offset);
    const end = Math.min(capacity, e.offset + e.length);
    if (end > start) out.push({ offset: start, length: end - start });
  }
  return out;
}

/**
 * Widens every extent to whole chunks of `chunkSize` (the last chunk may be short at `capacity`) and merges.
 * The result covers every chunk any input extent touches.
 */
export function alignExtents(extents: Iterable<Extent>, chunkSize: number, capacity: number): Extent[] {
  if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0) {
    throw new InvalidArgumentError(`chunk size must be a positive integer, got ${chunkSize}`);
  }
  const widened: Extent[] = [];
  for (const e of clipExtents(sortExtents(extents), capacity)) {
    const start = Math.floor(e.offset / chunkSize) * chunkSize;
    const end = Math.min(capacity, Math.ceil((e.offset + e.length) / chunkSize) * chunkSize);
    widened.push({ offset: start, length: end - start });
  }
  return mergeExtents(widened);
}

/** Total bytes of a list of extents. */
export function extentBytes(extents: Iterable<Extent>): number {
  let total = 0;
  for (const e of extents) total += e.length;
  return total;
}

/** The parts of `[0, capacity)` that no extent covers. Input must be sorted and disjoint. */
export function complementExtents(extents: Iterable<Extent>, capacity: number): Extent[] {
  const out: Extent[] = [];
  let cursor = 0;
  for (const e of extents) {
    if (e.offset > cursor) out.push({ offset: cursor, length: Math.min(e.offset, capacity) - cursor });
    cursor = Math.max(cursor, e.offset + e.length);
    if (cursor >= capacity) break;
  }
  if (cursor < capacity) out.push({ offset: cursor, length: capacity - cursor });
  return out.filter((e) => e.length > 0);
}

/**
 * Checks that extents are sorted, disjoint, of positive length and inside `[0, capacity)`; throws an
 * {@link InvalidArgumentError} naming the first offending extent.
 */
export function assertValidExtents(extents: Iterable<Extent>, capacity: number): void {
  let end = 0;
  let index = 0;
  for (const e of extents) {
    if (!Number.isSafeInteger(e.offset) || !Number.isSafeInteger(e.length) || e.length <= 0 || e.offset < 0) {
      throw new InvalidArgumentError(`extent #${index} is malformed: offset ${e.offset}, length ${e.length}`);
    }
    if (e.offset < end)
      throw new InvalidArgumentError(`extent #${index} at ${e.offset} overlaps or is unsorted`);
    if (e.offset + e.length > capacity) {
      throw new InvalidArgumentError(
        `extent #${index} ends at ${e.offset + e.length}, past capacity ${capacity}`,
      );
    }
    end = e.offset + e.length;
    index++;
  }
}
