// drkit NBD client benchmark (not part of the tests): read throughput of the NBD client of
// @drkit/provider-vmware (packages/provider-vmware/src/nbd) against libnbd's `nbdcopy ... null:` on the same export,
// measured in the same run, printed as a ratio. The export is nbdkit's file plugin (read-only, Unix socket) on a
// file of random data in the page cache, so both clients measure the protocol and the copy into memory, not a
// disk. Both use the same connections, requests in flight per connection and request size. Median of the runs.
//
//   node scripts/bench/nbd.mjs [--size-mib 1024 --runs 3 --connections 4 --requests 16 --request-kib 1024]
//
// Needs @drkit/core built (`pnpm -r build`) and the NBD servers (`sh scripts/peers/nbd.sh install`). The client's
// TypeScript is transpiled with the repository's `typescript` into
// packages/provider-vmware/node_modules/.cache/drkit-bench-nbd/ (where @drkit/core resolves).
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import ts from 'typescript';

const { values } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1024' },
    runs: { type: 'string', default: '3' },
    connections: { type: 'string', default: '4' },
    requests: { type: 'string', default: '16' },
    'request-kib': { type: 'string', default: '1024' },
  },
});
const MiB = 1024 * 1024;
const size = Number(values['size-mib']) * MiB;
const runs = Number(values.runs);
const connections = Number(values.connections);
const requests = Number(values.requests);
const requestBytes = Number(values['request-kib']) * 1024;
if (!Number.isInteger(size / requestBytes) || size <= 0)
  throw new Error('--size-mib must be a multiple of the request size');

const root = fileURLToPath(new URL('../..', import.meta.url));
if (!existsSync(join(root, 'packages/core/dist/index.js'))) {
  throw new Error('packages/core/dist is missing: build the packages first (pnpm -r build)');
}

/** Transpiles src/nbd (not its tests) to plain ESM next to the package, where @drkit/core resolves. */
async function buildClient() {
  const source = join(root, 'packages/provider-vmware/src/nbd');
  const out = join(root, 'packages/provider-vmware/node_modules/.cache/drkit-bench-nbd');
  await rm(out, { recursive: true, force: true });
  await mkdir(out, { recursive: true });
  for (const name of await readdir(source)) {
    if (!name.endsWith('.ts') || name.endsWith('.test.ts')) continue;
    const { outputText } = ts.transpileModule(await readFile(join(source, name), 'utf8'), {
      compilerOptions: {
        module: ts.ModuleKind.ESNext,
        target: ts.ScriptTarget.ES2022,
        isolatedModules: true,
      },
      fileName: name,
    });
    await writeFile(join(out, name.replace(/\.ts$/, '.js')), outputText);
  }
  return import(pathToFileURL(join(out, 'index.js')).href);
}

const { connectNbdExport } = await buildClient();
const work = await mkdtemp(join(tmpdir(), 'drkit-bench-nbd-'));
let server;

async function stop() {
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    await new Promise((resolve) => server.once('exit', resolve));
  }
  await rm(work, { recursive: true, force: true });
}
process.on('SIGINT', () => {
  void stop().finally(() => process.exit(130));
});

try {
  const image = join(work, 'disk.raw');
  const handle = await open(image, 'w');
  for (let at = 0; at < size; at += 4 * MiB) await handle.write(randomBytes(4 * MiB), 0, 4 * MiB, at);
  await handle.close();
  const socket = join(work, 'nbd.sock');
  const pidFile = join(work, 'nbdkit.pid');
  server = spawn('nbdkit', ['-f', '--exit-with-parent', '-r', '-U', socket, '-P', pidFile, 'file', image], {
    stdio: 'inherit',
  });
  for (let i = 0; i < 2000 && !existsSync(pidFile); i++) await sleep(5);
  if (!existsSync(pidFile)) throw new Error('nbdkit did not start');
  const uri = `nbd+unix:///?socket=${socket}`;
  const version = execFileSync('nbdcopy', ['--version'], { encoding: 'utf8' }).split('\n')[0];

  const nbdcopy = () => {
    const started = performance.now();
    execFileSync('nbdcopy', [
      `--connections=${connections}`,
      `--requests=${requests}`,
      `--request-size=${requestBytes}`,
      '--no-extents',
      uri,
      'null:',
    ]);
    return (performance.now() - started) / 1000;
  };

  // The client reads the whole export in requests of requestBytes, connections × requests in flight, into
  // buffers it is given back (as the engine's buffer pool would), so the figure is the protocol, not the GC.
  const drkit = async () => {
    const started = performance.now();
    const disk = await connectNbdExport({
      socketPath: socket,
      connections,
      maxRequestsInFlight: requests,
      maxRequestBytes: requestBytes,
    });
    const window = connections * requests;
    const free = Array.from({ length: window }, () => Buffer.allocUnsafe(requestBytes));
    let next = 0;
    const worker = async () => {
      for (;;) {
        const offset = next;
        if (offset >= size) return;
        next += requestBytes;
        const buffer = free.pop();
        await disk.read({ offset, length: requestBytes }, { allocate: () => buffer });
        free.push(buffer);
      }
    };
    await Promise.all(Array.from({ length: window }, worker));
    await disk.close();
    return (performance.now() - started) / 1000;
  };

  // Warm the page cache and both clients once, then alternate.
  nbdcopy();
  await drkit();
  const times = { nbdcopy: [], drkit: [] };
  for (let run = 0; run < runs; run++) {
    times.nbdcopy.push(nbdcopy());
    times.drkit.push(await drkit());
  }
  const median = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];
  const rate = (seconds) => size / MiB / seconds;
  const ours = rate(median(times.drkit));
  const theirs = rate(median(times.nbdcopy));
  console.log(
    `${size / MiB} MiB from nbdkit file (Unix socket), ${connections} connections × ${requests} requests of ` +
      `${requestBytes / 1024} KiB, median of ${runs}`,
  );
  console.log(`  ${version.padEnd(16)} ${theirs.toFixed(0).padStart(6)} MiB/s`);
  console.log(`  drkit NBD client ${ours.toFixed(0).padStart(6)} MiB/s`);
  console.log(`  ratio drkit / nbdcopy: ${(ours / theirs).toFixed(2)}`);
} finally {
  await stop();
}
