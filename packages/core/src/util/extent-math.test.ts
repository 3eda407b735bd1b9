import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../errors/drkit-error.js';
import type { Extent } from '../spec/v2/index.js';
import {
  alignExtents,
  assertValidExtents,
  clipExtents,
  complementExtents,
  extentBytes,
  mergeExtents,
} from './extent-math.js';

const CAP = 10_000;
const extentArb = fc
  .tuple(fc.integer({ min: 0, max: CAP - 1 }), fc.integer({ min: 1, max: 3000 }))
  .map(([offset, length]) => ({ offset, length }));

/** Which bytes of [0, cap) a list of extents covers, as a bitmap. */
function coverage(extents: readonly Extent[], cap: number): Uint8Array {
  const bits = new Uint8Array(cap);
  for (const e of extents) bits.fill(1, Math.max(0, e.offset), Math.min(cap, e.offset + e.length));
  return bits;
}

/**
 * Asserts that two coverage bitmaps are equal, naming the first byte that differs. Compares with memcmp
 * (`Buffer.compare`): a deep equality of 13 000-element typed arrays, a hundred runs per property, took seconds on a
 * busy machine and timed the test out.
 */
function expectSameCoverage(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length);
  if (Buffer.compare(actual, expected) === 0) return;
  const at = actual.findIndex((bit, i) => bit !== expected[i]);
  expect(actual[at], `coverage of byte ${at}`).toBe(expected[at]);
}

describe('extent math', () => {
  it('merge keeps exactly the covered bytes and yields sorted, disjoint, non-touching extents', () => {
    fc.assert(
      fc.property(fc.array(extentArb, { maxLength: 30 }), (input) => {
        const merged = mergeExtents(input);
        const big = CAP + 3000;
        expectSameCoverage(coverage(merged, big), coverage(input, big));
        for (let i = 1; i < merged.length; i++) {
          expect(merged[i]!.offset).toBeGreaterThan(merged[i - 1]!.offset + merged[i - 1]!.length);
        }
      }),
    );
  });

  it('clip drops everything past capacity and nothing inside it', () => {
    fc.assert(
      fc.property(fc.array(extentArb, { maxLength: 30 }), (input) => {
        const clipped = clipExtents(mergeExtents(input), CAP);
        const inside = coverage(mergeExtents(input), CAP + 3000).fill(0, CAP);
        expectSameCoverage(coverage(clipped, CAP + 3000), inside);
        assertValidExtents(clipped, CAP);
      }),
    );
  });

  it('align covers every touched chunk, only whole chunks (a short last one at capacity), and is valid', () => {
    fc.assert(
      fc.property(
        fc.array(extentArb, { maxLength: 30 }),
        fc.constantFrom(512, 1000, 4096),
        (input, chunk) => {
          const aligned = alignExtents(input, chunk, CAP);
          assertValidExtents(aligned, CAP);
          const covered = coverage(clipExtents(mergeExtents(input), CAP), CAP);
          const result = coverage(aligned, CAP);
          expect(covered.every((b, i) => b === 0 || result[i] === 1)).toBe(true);
          for (const e of aligned) {
            expect(e.offset % chunk).toBe(0);
            expect((e.offset + e.length) % chunk === 0 || e.offset + e.length === CAP).toBe(true);
          }
          // No chunk is included that no input extent touches.
          for (let c = 0; c * chunk < CAP; c++) {
            const inResult = result[c * chunk] === 1;
            const touched = covered.subarray(c * chunk, Math.min(CAP, (c + 1) * chunk)).includes(1);
            expect(inResult).toBe(touched);
          }
        },
      ),
    );
  });

  it('complement and extents together cover the disk exactly once', () => {
    fc.assert(
      fc.property(fc.array(extentArb, { maxLength: 30 }), (input) => {
        const merged = clipExtents(mergeExtents(input), CAP);
        const holes = complementExtents(merged, CAP);
        expect(extentBytes(merged) + extentBytes(holes)).toBe(CAP);
        // Together they cover every byte; with the byte counts adding up to CAP, each byte exactly once.
        expectSameCoverage(coverage([...merged, ...holes], CAP), new Uint8Array(CAP).fill(1));
      }),
    );
  });

  it('assertValidExtents names the offending extent', () => {
    expect(() =>
      assertValidExtents(
        [
          { offset: 10, length: 5 },
          { offset: 12, length: 1 },
        ],
        100,
      ),
    ).toThrow(/extent #1 at 12 overlaps/);
    expect(() => assertValidExtents([{ offset: 95, length: 6 }], 100)).toThrow(/past capacity 100/);
    let error: unknown;
    try {
      assertValidExtents([{ offset: 0, length: 0 }], 100);
    } catch (e) {
      error = e;
    }
    expect(InvalidArgumentError.isInstance(error)).toBe(true);
  });

  it('alignExtents refuses a chunk size that is not a positive integer', () => {
    expect(() => alignExtents([], 0, 10)).toThrow(InvalidArgumentError);
  });
});
