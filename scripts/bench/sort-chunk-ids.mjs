// Measures the external sort that verify and prune use for chunk ids: N pseudo-random 32-byte ids (every 16th a
// repeat of an earlier one) through ChunkIdSorter with its default buffers, checked for order and count.
// Prints the time of each phase, the buffers' size and the peak RSS of the whole process.
// Usage (after pnpm build): node scripts/bench/sort-chunk-ids.mjs [ids, default 100000000] [scratch folder]
import { ChunkIdSorter } from '../../packages/core/dist/internal.js';

const total = Number(process.argv[2] ?? 100_000_000);
const sorter = await ChunkIdSorter.create({ directory: process.argv[3] });
const id = new Uint8Array(32);
function fill(seed) {
  let x = (Math.imul(seed, 2654435761) + 1) >>> 0 || 1;
  for (let i = 0; i < 28; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    id[i] = x >>> 24;
    id[i + 1] = (x >>> 16) & 255;
    id[i + 2] = (x >>> 8) & 255;
    id[i + 3] = x & 255;
  }
  id[28] = seed >>> 24;
  id[29] = (seed >>> 16) & 255;
  id[30] = (seed >>> 8) & 255;
  id[31] = seed & 255;
}
function before(a, b) {
  for (let i = 0; i < 32; i++) if (a[i] !== b[i]) return a[i] < b[i];
  return false;
}
let peak = 0;
const sample = () => {
  peak = Math.max(peak, process.memoryUsage().rss);
};
const timer = setInterval(sample, 200);
try {
  const t0 = performance.now();
  let distinct = 0;
  for (let i = 0; i < total; i++) {
    const seed = i % 16 === 15 ? i - 15 : i;
    if (seed === i) distinct++;
    fill(seed);
    const pending = sorter.add(id);
    if (pending !== undefined) {
      await pending;
      sample();
    }
  }
  const t1 = performance.now();
  const previous = new Uint8Array(32);
  let yielded = 0;
  let outOfOrder = 0;
  for await (const sorted of sorter.sorted()) {
    if (yielded > 0 && !before(previous, sorted)) outOfOrder++;
    previous.set(sorted);
    yielded++;
  }
  const t2 = performance.now();
  sample();
  const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  console.log(
    `${total} ids (${distinct} distinct): add + runs ${((t1 - t0) / 1000).toFixed(1)} s, merge ${((t2 - t1) / 1000).toFixed(1)} s; ` +
      `${sorter.stats.runsWritten} runs, ${sorter.stats.intermediateMerges} intermediate merge(s), at most ${sorter.stats.maxRunsMerged} merged at once; ` +
      `buffers ${mib(sorter.stats.memoryBytes)}, peak RSS ${mib(peak)}; ${yielded === distinct && outOfOrder === 0 ? 'sorted and complete' : `WRONG: ${yielded} yielded, ${outOfOrder} out of order`}`,
  );
  if (yielded !== distinct || outOfOrder !== 0) process.exitCode = 1;
} finally {
  clearInterval(timer);
  await sorter.close();
}
