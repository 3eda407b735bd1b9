import { describe, expect, it } from 'vitest';
import { ChunkIdSet } from './chunk-id-set.js';
import { randomish } from './repository-fixture.js';

describe('ChunkIdSet', () => {
  it('behaves like a set of hex strings through growth and deletions', () => {
    const set = new ChunkIdSet(4);
    const model = new Set<string>();
    const ids = Array.from({ length: 3000 }, (_, i) => randomish(32, i));
    // Force collisions on the probe start: same first 4 bytes, different rest.
    for (let i = 0; i < 50; i++) ids[i]!.set([1, 2, 3, 4], 0);
    for (const id of ids) {
      expect(set.add(id)).toBe(!model.has(Buffer.from(id).toString('hex')));
      model.add(Buffer.from(id).toString('hex'));
    }
    expect(set.add(ids[10]!)).toBe(false);
    for (let i = 0; i < ids.length; i += 3) {
      expect(set.delete(ids[i]!)).toBe(true);
      model.delete(Buffer.from(ids[i]!).toString('hex'));
    }
    expect(set.delete(ids[0]!)).toBe(false);
    expect(set.size).toBe(model.size);
    for (const id of ids) expect(set.has(id)).toBe(model.has(Buffer.from(id).toString('hex')));
    const listed = new Set<string>();
    set.forEach((id) => {
      listed.add(Buffer.from(id).toString('hex'));
    });
    expect(listed).toEqual(model);
  });

  it('reads ids at an offset without copying', () => {
    const set = new ChunkIdSet();
    const bytes = new Uint8Array(96);
    bytes.set(randomish(32, 1), 32);
    set.add(bytes, 32);
    expect(set.has(randomish(32, 1))).toBe(true);
    expect(set.has(bytes, 0)).toBe(false);
  });
});
