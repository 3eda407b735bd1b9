import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ByteCoverage } from './byte-coverage.js';

describe('ByteCoverage', () => {
  it('accepts exactly the ranges that overlap nothing covered, in any order', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(200), fc.integer({ min: 1, max: 40 })), { maxLength: 40 }),
        (ranges) => {
          const coverage = new ByteCoverage();
          const bytes = new Uint8Array(256);
          for (const [start, length] of ranges) {
            const end = start + length;
            const free = bytes.subarray(start, end).every((byte) => byte === 0);
            expect(coverage.add(start, end)).toBe(free);
            if (free) bytes.fill(1, start, end);
            expect(coverage.covered).toBe(bytes.reduce((sum, byte) => sum + byte, 0));
          }
        },
      ),
    );
  });
});
