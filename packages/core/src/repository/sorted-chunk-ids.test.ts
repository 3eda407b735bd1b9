import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { ChunkIdSet } from './chunk-id-set.js';
import { randomish } from './repository-fixture.js';
import { ChunkIdSorter, compareIds, SortedIdCursor } from './sorted-chunk-ids.js';

async function sortAll(sorter: ChunkIdSorter, ids: readonly Uint8Array[]): Promise<string[]> {
  for (const id of ids) await sorter.add(id);
  const out: string[] = [];
  for await (const id of sorter.sorted()) out.push(Buffer.from(id).toString('hex'));
  return out;
}

/** Deterministic pseudo-random 32-byte ids (xorshift32 per word): cheap enough for millions. */
function fillId(target: Uint8Array, seed: number): void {
  let x = (seed * 2654435761 + 1) >>> 0 || 1;
  for (let i = 0; i < 32; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    target[i] = x >>> 24;
    target[i + 1] = (x >>> 16) & 0xff;
    target[i + 2] = (x >>> 8) & 0xff;
    target[i + 3] = x & 0xff;
  }
  // Make the id unique by seed whatever the generator does: the last 4 bytes are the seed.
  target[28] = seed >>> 24;
  target[29] = (seed >>> 16) & 0xff;
  target[30] = (seed >>> 8) & 0xff;
  target[31] = seed & 0xff;
}

describe('ChunkIdSorter (external sort of chunk ids)', { timeout: 60_000 }, () => {
  it('yields the distinct ids in ascending order, like a set sorted in memory, through many runs and passes', async () => {
    const ids = Array.from({ length: 2500 }, (_, i) => randomish(32, i % 1700)); // 800 repeats
    for (let i = 0; i < 60; i++) ids[i * 7]!.set([9, 9, 9, 9], 0); // equal first 4 bytes: the tie-break path
    const model = new ChunkIdSet(16);
    for (const id of ids) model.add(id);
    const expected = [...model.values()].map((id) => Buffer.from(id).toString('hex')).sort();

    for (const options of [{}, { bufferIds: 64, fanIn: 3, readBufferIds: 5 }, { bufferIds: 300, fanIn: 2 }]) {
      await using sorter = await ChunkIdSorter.create(options);
      expect(await sortAll(sorter, ids)).toEqual(expected);
      if (options.bufferIds === 64) {
        expect(sorter.stats.runsWritten).toBeGreaterThan(ids.length / 64);
        expect(sorter.stats.intermediateMerges).toBeGreaterThan(0);
        expect(sorter.stats.maxRunsMerged).toBeLessThanOrEqual(3);
      }
      expect(sorter.stats.idsYielded).toBe(expected.length);
    }
  });

  it('sorts nothing, one id, and removes its scratch folder on close', async () => {
    const before = (await readdir(tmpdir())).filter((name) => name.startsWith('drkit-sort-')).length;
    const empty = await ChunkIdSorter.create({ bufferIds: 2 });
    expect(await sortAll(empty, [])).toEqual([]);
    await empty.close();
    const one = await ChunkIdSorter.create({ bufferIds: 2 });
    expect(await sortAll(one, [randomish(32, 1), randomish(32, 1)])).toEqual([
      Buffer.from(randomish(32, 1)).toString('hex'),
    ]);
    await one.close();
    const after = (await readdir(tmpdir())).filter((name) => name.startsWith('drkit-sort-')).length;
    expect(after).toBe(before);
  });

  it('a cursor merge-joins a sorted stream against ascending probes', async () => {
    const ids = Array.from({ length: 300 }, (_, i) => randomish(32, i));
    await using sorter = await ChunkIdSorter.create({ bufferIds: 50 });
    for (const id of ids.filter((_, i) => i % 2 === 0)) await sorter.add(id);
    const cursor = new SortedIdCursor(sorter.sorted()[Symbol.asyncIterator]());
    const probes = [...ids].sort((a, b) => compareIds(a, 0, b, 0));
    const inStream = new Set(ids.filter((_, i) => i % 2 === 0).map((id) => Buffer.from(id).toString('hex')));
    for (const probe of probes) {
      expect(await cursor.seek(probe)).toBe(inStream.has(Buffer.from(probe).toString('hex')));
    }
    await cursor.close();
  });

  // 10 M ids (320 MB of ids, a repository of 2.4 TiB at 256 KiB chunks): far more than the in-memory buffer, so the
  // memory the sort uses is its buffers, a constant of the options, not of the number of ids.
  it('sorts 10 M ids in memory bounded by its buffers', { timeout: 600_000 }, async () => {
    const total = 10_000_000;
    const bufferIds = 1 << 20;
    const fanIn = 8;
    const readBufferIds = 2048;
    await using sorter = await ChunkIdSorter.create({ bufferIds, fanIn, readBufferIds });
    const id = new Uint8Array(32);
    const xor = new Uint8Array(32);
    let distinct = 0;
    for (let i = 0; i < total; i++) {
      // Every 16th id repeats one given earlier.
      const seed = i % 16 === 15 ? i - 15 : i;
      fillId(id, seed);
      if (seed === i) {
        distinct++;
        for (let b = 0; b < 32; b++) xor[b]! ^= id[b]!;
      }
      const pending = sorter.add(id);
      if (pending !== undefined) await pending;
    }
    const seen = new Uint8Array(32);
    const previous = new Uint8Array(32);
    let count = 0;
    let outOfOrder = 0;
    for await (const sortedId of sorter.sorted()) {
      if (count > 0 && compareIds(previous, 0, sortedId, 0) >= 0) outOfOrder++;
      previous.set(sortedId);
      for (let b = 0; b < 32; b++) seen[b]! ^= sortedId[b]!;
      count++;
    }
    expect(outOfOrder).toBe(0);
    expect(count).toBe(distinct);
    expect(Buffer.from(seen).toString('hex')).toBe(Buffer.from(xor).toString('hex'));
    const stats = sorter.stats;
    expect(stats.idsAdded).toBe(total);
    expect(stats.runsWritten).toBe(Math.ceil(total / bufferIds) + stats.intermediateMerges);
    expect(stats.maxRunsMerged).toBeLessThanOrEqual(fanIn);
    // The bound by construction: 40 MiB of sort buffer, 8 × 64 KiB of read buffers, 1 MiB write buffer.
    expect(stats.memoryBytes).toBe(bufferIds * 40 + fanIn * readBufferIds * 32 + (1 << 20));
    expect(stats.memoryBytes).toBeLessThan(48 * 1024 * 1024);
  });
});
