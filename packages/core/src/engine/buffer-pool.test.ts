import { describe, expect, it } from 'vitest';
import { BufferPool } from './buffer-pool.js';

describe('BufferPool', () => {
  it('reuses returned buffers up to its capacity and refuses views and other sizes', () => {
    const pool = new BufferPool(16, 2);
    const a = pool.take();
    const b = pool.take();
    const c = pool.take();
    expect(a.byteLength).toBe(16);
    pool.give(a);
    pool.give(b);
    pool.give(c); // over capacity: dropped
    pool.give(new Uint8Array(32).subarray(0, 16)); // a view: refused
    pool.give(new Uint8Array(8)); // another size: refused
    pool.give(undefined);
    const again = [pool.take(), pool.take(), pool.take()];
    expect(again[0]).toBe(b);
    expect(again[1]).toBe(a);
    expect(again[2]).not.toBe(c);
  });
});
