#!/usr/bin/env node
// Where a drkit run spends its CPU: reads the `.cpuprofile` files `node --cpu-prof --cpu-prof-dir <dir>` wrote (one
// per thread: the main thread and each chunk worker) and prints, per thread and in all, the self time by category
// (hashing, compression, fs and other I/O, worker messaging, garbage collection, idle) and the top functions.
//
//   node --cpu-prof --cpu-prof-dir /tmp/prof packages/cli/dist/bin.js backup disk.img --repo repo
//   node scripts/bench/profile-summary.mjs /tmp/prof [--top 15]
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '15' } },
});
const dir = positionals[0];
if (dir === undefined) throw new Error('usage: profile-summary.mjs <folder of .cpuprofile files>');

/** Category of a profile node, by its function name and script. */
function categoryOf(node) {
  const { functionName: name, url } = node.callFrame;
  if (name === '(idle)') return 'idle';
  if (name === '(garbage collector)') return 'gc';
  if (name === '(program)') return 'program (native, unattributed)';
  if (/zstd|compress|Zstd|deflate|inflate/i.test(name) || /zstd/.test(url)) return 'compression';
  if (/hash|digest|Hash|update/.test(name) && /crypto|hash/i.test(`${url} ${name}`)) return 'hashing';
  if (/isAllZero|allZero|zero/i.test(name)) return 'zero detection';
  if (/postMessage|onmessage|MessagePort|structuredClone|receiveMessage|emitMessage/.test(name))
    return 'worker messaging';
  if (
    /node:fs|fs\/promises|internal\/fs|FileHandle|read|write|open|close|fsync|link|rename|unlink|stat/.test(
      `${url} ${name}`,
    )
  )
    return 'fs / I/O';
  if (url.startsWith('node:') || url === '') return 'node internals';
  return 'drkit code';
}

const files = (await readdir(dir)).filter((name) => name.endsWith('.cpuprofile')).sort();
const totals = new Map();
const functions = new Map();
for (const file of files) {
  const profile = JSON.parse(await readFile(join(dir, file), 'utf8'));
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const self = new Map();
  const deltas = profile.timeDeltas;
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i];
    self.set(id, (self.get(id) ?? 0) + (deltas[i] ?? 0));
  }
  const perCategory = new Map();
  let threadTotal = 0;
  for (const [id, micros] of self) {
    const node = byId.get(id);
    const category = categoryOf(node);
    perCategory.set(category, (perCategory.get(category) ?? 0) + micros);
    totals.set(category, (totals.get(category) ?? 0) + micros);
    threadTotal += micros;
    const { functionName, url, lineNumber } = node.callFrame;
    const key = `${functionName || '(anonymous)'} ${url.split('/').slice(-2).join('/')}:${lineNumber + 1}`;
    functions.set(key, (functions.get(key) ?? 0) + micros);
  }
  console.log(`\n${file}: ${(threadTotal / 1e6).toFixed(2)} s sampled`);
  for (const [category, micros] of [...perCategory].sort((a, b) => b[1] - a[1])) {
    console.log(
      `  ${category.padEnd(32)} ${(micros / 1e6).toFixed(2).padStart(7)} s  ${((100 * micros) / threadTotal).toFixed(1).padStart(5)} %`,
    );
  }
}
const all = [...totals.values()].reduce((a, b) => a + b, 0);
const busy = all - (totals.get('idle') ?? 0);
console.log(`\nall threads: ${(all / 1e6).toFixed(2)} s sampled, ${(busy / 1e6).toFixed(2)} s not idle`);
for (const [category, micros] of [...totals].sort((a, b) => b[1] - a[1])) {
  if (category === 'idle') continue;
  console.log(
    `  ${category.padEnd(32)} ${(micros / 1e6).toFixed(2).padStart(7)} s  ${((100 * micros) / busy).toFixed(1).padStart(5)} % of busy`,
  );
}
console.log(`\ntop functions (self time, all threads, idle excluded):`);
for (const [name, micros] of [...functions]
  .filter(([name]) => !name.startsWith('(idle)'))
  .sort((a, b) => b[1] - a[1])
  .slice(0, Number(values.top))) {
  console.log(`  ${(micros / 1e6).toFixed(2).padStart(7)} s  ${name}`);
}
