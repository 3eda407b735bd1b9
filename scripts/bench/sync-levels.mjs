#!/usr/bin/env node
// What a backup's durability costs on this disk: stores `--chunks` chunk-sized blobs (random, as compressed chunks
// are) under chunks/<h2>/<id> as a backup does (4 puts at once), makes them durable, then writes two metadata blobs
// (index, point) durably; for each way of doing it, the wall time and the fsync-like calls it made.
//
//   node scripts/bench/sync-levels.mjs [--chunks 1024] [--chunk-kib 256] [--rounds 2] [--dir /var/tmp]
//
// Ways: the local folder store at each sync level (`file`, `filesystem`, `none`), the store with every put durable
// (about what drkit did before sync levels: fsync of each blob and of its folder), and, with raw file calls, the
// alternative commit step the issue asked to measure against syncfs: no sync while writing, then one fsync per
// file written and one per folder.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { link, mkdir, mkdtemp, open, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createLocalFolderStore } from '../../packages/core/dist/index.js';

const { values } = parseArgs({
  options: {
    chunks: { type: 'string', default: '1024' },
    'chunk-kib': { type: 'string', default: '256' },
    rounds: { type: 'string', default: '2' },
    dir: { type: 'string', default: '/var/tmp' },
    only: { type: 'string' },
  },
});
const chunks = Number(values.chunks);
const chunkBytes = Number(values['chunk-kib']) * 1024;
const rounds = Number(values.rounds);
const WINDOW = 4;

const blobs = Array.from({ length: chunks }, () => randomBytes(chunkBytes));
const ids = blobs.map((blob) => createHash('sha256').update(blob).digest('hex'));
const chunkKeyOf = (id) => `chunks/${id.slice(0, 2)}/${id}`;
const metadata = randomBytes(64 * 1024);

async function windowed(count, body) {
  let next = 0;
  await Promise.all(
    Array.from({ length: WINDOW }, async () => {
      while (next < count) await body(next++);
    }),
  );
}

async function viaStore(root, level, chunkPutsDurable) {
  const store = createLocalFolderStore({ path: root, syncLevel: level });
  await windowed(chunks, (i) =>
    store.put(chunkKeyOf(ids[i]), blobs[i], { ifAbsent: true, durable: chunkPutsDurable }),
  );
  await store.sync?.(ids.map(chunkKeyOf));
  await store.put('indexes/p1', metadata, { ifAbsent: true });
  await store.put('points/p1.json', metadata, { ifAbsent: true });
}

async function fsyncPath(path) {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** No sync while writing; then one fsync per file and one per folder (deepest first), then durable metadata. */
async function batchedFsync(root) {
  const folders = new Set();
  await windowed(chunks, async (i) => {
    const folder = join(root, 'chunks', ids[i].slice(0, 2));
    folders.add(folder);
    await mkdir(folder, { recursive: true });
    const temp = join(folder, `.drkit-tmp-${randomBytes(8).toString('hex')}`);
    const handle = await open(temp, 'wx');
    await handle.write(blobs[i], 0, blobs[i].byteLength, 0);
    await handle.close();
    await link(temp, join(folder, ids[i]));
    await unlink(temp);
  });
  await windowed(chunks, (i) => fsyncPath(join(root, 'chunks', ids[i].slice(0, 2), ids[i])));
  for (const folder of folders) await fsyncPath(folder);
  await fsyncPath(join(root, 'chunks'));
  await fsyncPath(root);
  const store = createLocalFolderStore({ path: root, syncLevel: 'file' });
  await store.put('indexes/p1', metadata, { ifAbsent: true });
  await store.put('points/p1.json', metadata, { ifAbsent: true });
}

const ways = [
  ['every put durable', (root) => viaStore(root, 'file', true)],
  ['level file', (root) => viaStore(root, 'file', false)],
  ['batched fsync at commit', batchedFsync],
  ['level filesystem (syncfs)', (root) => viaStore(root, 'filesystem', false)],
  ['level none', (root) => viaStore(root, 'none', false)],
];

/** fsync, fdatasync and syncfs calls of a child run, counted with strace when it is installed. */
function countSyncCalls(way) {
  const run = spawnSync(
    'strace',
    [
      '-f',
      '-c',
      '-e',
      'trace=fsync,fdatasync,syncfs',
      process.execPath,
      new URL(import.meta.url).pathname,
      '--chunks',
      String(chunks),
      '--chunk-kib',
      String(chunkBytes / 1024),
      '--dir',
      values.dir,
      '--only',
      way,
    ],
    { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] },
  );
  if (run.error !== undefined) return undefined; // no strace here
  const total = run.stderr.split('\n').find((line) => /\btotal$/.test(line.trim()));
  return total?.trim().split(/\s+/).at(-2) ?? '0';
}

const { only } = values;
if (only !== undefined) {
  const [, run] = ways.find(([name]) => name === only);
  const root = await mkdtemp(join(values.dir, 'drkit-sync-'));
  try {
    await run(root);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
} else {
  console.log(
    `${chunks} chunks of ${chunkBytes / 1024} KiB (${((chunks * chunkBytes) / 2 ** 20).toFixed(0)} MiB) in ${values.dir}, ${rounds} rounds`,
  );
  for (const [name, run] of ways) {
    const times = [];
    for (let round = 0; round < rounds; round++) {
      execFileSync('sync');
      const root = await mkdtemp(join(values.dir, 'drkit-sync-'));
      const start = process.hrtime.bigint();
      await run(root);
      times.push(Number(process.hrtime.bigint() - start) / 1e9);
      await rm(root, { recursive: true, force: true });
    }
    const calls = countSyncCalls(name);
    console.log(
      `${name.padEnd(28)} ${times.map((t) => t.toFixed(2)).join(' / ')} s` +
        (calls === undefined ? '' : `   fsync/fdatasync/syncfs calls: ${calls}`),
    );
  }
}
