// drkit VMware benchmark (not part of the tests): changed-area read throughput of the changed-block reader of
// @drkit/provider-vmware, measured in the same run against standard tools reading the same bytes:
//
//   - HTTPS datastore ranges against vcsim (the project's launcher, scripts/peers/vcsim/): the reader's session
//     driven by the engine's own read loop (`orderedExtentReads` of @drkit/core/internal, as a disk task drives it:
//     pieces of at most one chunk, `--reads` in flight, answers completed out of order within the engine's budget
//     of two chunks per read in flight, consumed in order of offset; no hashing or storing) next to `curl --parallel` of the same ranges of the
//     same `-flat.vmdk` URL, with the same requests in flight;
//   - NBD against nbdkit's file plugin on the same disk file (the stand-in for nbdkit's VDDK plugin the tests use),
//     over a Unix socket on both sides: the reader's session over `transport: 'nbd'` next to `nbdcopy ... null:`
//     reading the same areas (its nbdkit runs the extentlist filter with the listed areas, so block status shows
//     only them as data and nbdcopy reads exactly those bytes), with the same connections (`--reads`), request size
//     (`--request-kib`, default the transport's 256 KiB) and requests in flight (a CHUNK's worth per connection).
//
// Two figures per transport, each the median of the runs' own ratios (drkit's time and the tool's, measured one
// after the other) with the lowest and highest:
//   - session: drkit's open + listing + reads + close (for NBD `locate` starts nbdkit and close stops it) against
//     the tool doing the same (nbdkit started and stopped for nbdcopy's run; curl needs no setup);
//   - reads: drkit's reads of the areas listed before (from memory; the session already open) against the tool
//     alone (nbdkit already running). This is the transport's like-for-like figure; the difference between the
//     two is the session's fixed costs, mostly vcsim's QueryChangedDiskAreas pages (also printed alone), which
//     nbdcopy and curl do not pay. At 128 MiB those fixed costs are a large part of a session: measure a larger
//     disk too (`--size-mib 2048`).
//
// Earlier versions of this bench had nbdcopy read the whole export sequentially with nbdkit already running,
// while drkit's figure included starting nbdkit and vcsim's listing: that compared unlike work (4x the bytes,
// sequential, fixed costs on one side only).
//
// The disk is filled with random data, a base snapshot taken (change id), then `--fraction` of it rewritten in runs
// of `--area-kib` spread over the disk, and a second snapshot taken: the reader lists exactly those areas (the
// launcher's CBT extension, 64 KiB blocks; each QueryChangedDiskAreas answer covers at most `--cbt-page-mib` of the
// disk, the launcher's default 4). The reads start while the areas are listed, as the engine drives a session.
// Throughput = changed bytes / wall seconds. The read buffers are made once per transport and reused by every
// session (as a disk task's pool serves all of its reads), so no session's timed reads pay for collecting another
// session's buffers. `--budget-chunks N` sets the read loop's budget (the engine's: 2 × `--reads`, at most 64;
// `--budget-chunks <reads>` holds no answer beyond the reads in flight, as the engine did before reads completed
// out of order).
//
//   pnpm bench:vmware [-- --size-mib 512 --fraction 0.25 --area-kib 1024 --runs 3 --reads 4 --cbt-page-mib 4
//                        --request-kib 256]
//
// Needs the built packages (`pnpm -r build`), the vcsim launcher (`sh scripts/peers/vcsim.sh install`), nbdkit and
// nbdcopy (`sh scripts/peers/nbd.sh install`) and curl. Everything listens on 127.0.0.1 or a Unix socket in a temp
// dir and is stopped by its PID at the end (also on failure or Ctrl-C).
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';

const { values } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '512' },
    fraction: { type: 'string', default: '0.25' },
    'area-kib': { type: 'string', default: '1024' },
    runs: { type: 'string', default: '3' },
    reads: { type: 'string', default: '4' },
    'cbt-page-mib': { type: 'string', default: '4' },
    'budget-chunks': { type: 'string' },
    'request-kib': { type: 'string', default: '256' },
  },
});
const KiB = 1024;
const MiB = 1024 * KiB;
const size = Number(values['size-mib']) * MiB;
const fraction = Number(values.fraction);
const areaBytes = Number(values['area-kib']) * KiB;
const runs = Number(values.runs);
const reads = Number(values.reads);
const cbtPageBytes = Number(values['cbt-page-mib']) * MiB;
const CHUNK = MiB; // the engine's default chunk size: the reader is read in pieces of at most this
// The NBD request size: the transport's default unless `--request-kib` says otherwise (then `locate` asks for it);
// nbdcopy uses the same, with as many requests in flight per connection as a CHUNK read makes.
const NBD_REQUEST = Number(values['request-kib']) * KiB;
if (!Number.isInteger(CHUNK / NBD_REQUEST)) throw new Error('--request-kib must divide 1024');
if (!Number.isInteger(size / areaBytes) || areaBytes % (64 * KiB) !== 0)
  throw new Error('--size-mib must be a multiple of --area-kib, itself a multiple of 64');
if (!(fraction > 0 && fraction <= 1)) throw new Error('--fraction must be in (0, 1]');
if (!Number.isInteger(reads) || reads < 1 || reads > 16) throw new Error('--reads must be 1 to 16');

const root = fileURLToPath(new URL('../..', import.meta.url));
const providerDist = join(root, 'packages/provider-vmware/dist/index.js');
const coreDist = join(root, 'packages/core/dist/index.js');
const coreInternalDist = join(root, 'packages/core/dist/internal.js');
for (const built of [providerDist, coreDist, coreInternalDist]) {
  if (!existsSync(built)) throw new Error(`${built} is missing: build the packages first (pnpm -r build)`);
}
for (const tool of ['curl', 'nbdkit', 'nbdcopy']) {
  try {
    execFileSync(tool, ['--version'], { stdio: 'ignore' });
  } catch {
    throw new Error(`${tool} is not installed (nbdkit, nbdcopy: sh scripts/peers/nbd.sh install)`);
  }
}
const { createVmwarePlatform } = await import(providerDist);
const { orderedExtentReads, READ_BUFFER_CHUNKS_PER_READ } = await import(coreInternalDist);
const budgetChunks = Number(values['budget-chunks'] ?? Math.min(64, READ_BUFFER_CHUNKS_PER_READ * reads));
if (!Number.isInteger(budgetChunks) || budgetChunks < 1)
  throw new Error('--budget-chunks must be at least 1');
const binary = execFileSync('sh', [join(root, 'scripts/peers/vcsim.sh'), 'build'], {
  encoding: 'utf8',
  stdio: ['ignore', 'pipe', 'inherit'],
}).trim();

const work = await mkdtemp(join(tmpdir(), 'drkit-bench-vmware-'));
const children = new Set();
async function stopAll() {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
  }
  children.clear();
  await rm(work, { recursive: true, force: true });
}
process.on('SIGINT', () => {
  void stopAll().finally(() => process.exit(130));
});

function track(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

async function startVcsim() {
  const password = `pw-${randomBytes(8).toString('hex')}`;
  const dir = join(work, 'vcsim');
  await mkdir(dir);
  const child = track(
    spawn(
      binary,
      [
        '-mode',
        'vpx',
        '-vms',
        '1',
        '-disk-mib',
        String(size / MiB),
        '-password',
        password,
        '-cbt-page-bytes',
        String(cbtPageBytes),
      ],
      {
        env: { ...process.env, TMPDIR: dir },
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    ),
  );
  const line = await new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`vcsim exited with ${code}`)));
  });
  return { ...JSON.parse(line), password, dir };
}

async function startNbdkit(file, extentList) {
  const socket = join(work, `nbd-${randomBytes(4).toString('hex')}.sock`);
  const pidFile = `${socket}.pid`;
  // With `extentList` (a file of `offset length` lines), nbdkit's extentlist filter reports only those ranges
  // as data and the rest as holes that read as zeros: nbdcopy then reads exactly those ranges.
  const filter = extentList ? ['--filter=extentlist'] : [];
  const parameter = extentList ? [`extentlist=${extentList}`] : [];
  const child = track(
    spawn(
      'nbdkit',
      ['-f', '--exit-with-parent', '-r', '-U', socket, '-P', pidFile, ...filter, 'file', file, ...parameter],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    ),
  );
  for (let i = 0; i < 2000 && !existsSync(pidFile); i++) await sleep(1);
  if (!existsSync(pidFile)) throw new Error('nbdkit did not start');
  return {
    socket,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}

/** The local path of the launcher's datastore file (its datastores are folders under its TMPDIR). */
async function localFile(dir, datastorePath) {
  const wanted = datastorePath.replace(/^\[[^\]]+\]\s*/, '').replace(/\.vmdk$/, '-flat.vmdk');
  for (const entry of await readdir(dir, { recursive: true })) {
    const path = join(dir, entry);
    if (relative(dir, path).endsWith(wanted)) return path;
  }
  throw new Error(`no ${wanted} under ${dir}`);
}

const median = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];
const rate = (bytes, seconds) => bytes / MiB / seconds;

try {
  const vcsim = await startVcsim();
  const ca = join(work, 'vcsim.pem');
  await writeFile(ca, vcsim.certificate);
  const common = {
    url: vcsim.url,
    username: vcsim.username,
    password: vcsim.password,
    tls: { ca: vcsim.certificate },
    maxConcurrentReads: reads,
  };
  const https = createVmwarePlatform({ ...common, id: 'bench-https', transport: 'https' });
  let host;
  for await (const h of https.hosts()) {
    if (h.disks.length > 0) {
      host = h;
      break;
    }
  }
  if (!host) throw new Error('vcsim listed no VM with a disk');
  await https.enableChangeTracking(host.id);
  host = await https.host(host.id);
  const disk = host.disks[0];
  const fileName = disk.attributes['vmware.fileName'];
  const flat = await localFile(vcsim.dir, fileName);

  // Random content, a base change id, then `fraction` of the disk rewritten in areas spread evenly.
  const handle = await open(flat, 'r+');
  for (let at = 0; at < size; at += 4 * MiB) {
    const piece = Math.min(4 * MiB, size - at);
    await handle.write(randomBytes(piece), 0, piece, at);
  }
  const reader = https.changedBlockReader;
  const base = await https.createSnapshot({ host, name: 'drkit-bench-base', quiesce: 'none' });
  const first = await reader.open({ disk, snapshot: base, diskSnapshot: base.disks[0], chunkSize: CHUNK });
  const checkpoint = first.checkpoint();
  await first.close();
  await https.releaseSnapshot({ hostId: host.id, name: 'drkit-bench-base' });
  const areas = size / areaBytes;
  const changed = Math.max(1, Math.round(areas * fraction));
  const stride = areas / changed;
  for (let i = 0; i < changed; i++) {
    const at = Math.floor(i * stride) * areaBytes;
    await handle.write(randomBytes(areaBytes), 0, areaBytes, at);
  }
  await handle.close();
  const snapshot = await https.createSnapshot({ host, name: 'drkit-bench', quiesce: 'none' });
  const openOptions = {
    disk,
    snapshot,
    diskSnapshot: snapshot.disks[0],
    base: checkpoint,
    chunkSize: CHUNK,
  };

  // The read buffers, made once per transport and reused by every session, as a disk task's pool serves all of
  // its reads. A pool made anew for each session left the previous session's 8 MiB of buffers to the garbage
  // collector, whose mark-compact then ran inside the next session's timed reads (about one per session).
  const pools = new Map();
  const bufferPool = (platform) => {
    if (!pools.has(platform))
      pools.set(
        platform,
        Array.from({ length: budgetChunks }, () => new Uint8Array(CHUNK)),
      );
    return pools.get(platform);
  };

  /**
   * The reader's whole session, driven by the engine's read loop: open, list the areas, read them in pieces of
   * CHUNK, `reads` in flight, completed out of order within the budget, consumed in order (each buffer back to the
   * pool at once, as the engine's chunk pipeline takes a whole-chunk buffer without a copy).
   */
  async function drkitSession(platform, prelisted) {
    const free = bufferPool(platform);
    const started = performance.now();
    const opened = await platform.changedBlockReader.open({
      ...openOptions,
      allocate: (length) =>
        length === CHUNK ? (free.pop() ?? new Uint8Array(CHUNK)) : new Uint8Array(length),
    });
    if (opened.validity.kind !== 'exact') throw new Error(`not exact: ${JSON.stringify(opened.validity)}`);
    // With `prelisted`, the areas come from memory (listed before, in another session): only the reads are timed.
    const session = prelisted
      ? Object.assign(Object.create(opened), {
          async *extents() {
            yield* prelisted;
          },
        })
      : opened;
    const openedAt = performance.now();
    let readEnded = openedAt;
    let bytes = 0;
    try {
      for await (const change of orderedExtentReads(session.capacityBytes, {
        session,
        diskId: disk.id,
        chunkSize: CHUNK,
        blockSize: platform.changedBlockReader.blockSize,
        concurrency: reads,
        bufferBytes: budgetChunks * CHUNK,
        signal: new AbortController().signal,
      })) {
        if (change.kind !== 'data') continue;
        bytes += change.data.byteLength;
        free.push(change.data);
      }
      readEnded = performance.now();
    } finally {
      await opened.close();
    }
    const ended = performance.now();
    // `readSeconds`: from the end of open to the last byte read (without close, which stops nbdkit).
    return { seconds: (ended - started) / 1000, readSeconds: (readEnded - openedAt) / 1000, bytes };
  }

  // The areas the reader lists (for curl and nbdcopy), and how long listing them alone takes (vcsim's
  // QueryChangedDiskAreas pages: a fixed cost of the session that nbdcopy and curl do not pay).
  async function listAreas() {
    const started = performance.now();
    const session = await reader.open(openOptions);
    const extents = [];
    try {
      for await (const extent of session.extents()) extents.push(extent);
    } finally {
      await session.close();
    }
    return { extents, seconds: (performance.now() - started) / 1000 };
  }
  const { extents: listedExtents } = await listAreas();
  const listed = [];
  for (const extent of listedExtents) {
    for (let at = extent.offset; at < extent.offset + extent.length; at += CHUNK) {
      listed.push({ offset: at, length: Math.min(CHUNK, extent.offset + extent.length - at) });
    }
  }
  const changedBytes = listed.reduce((sum, p) => sum + p.length, 0);
  if (changedBytes !== changed * areaBytes)
    throw new Error(`the reader listed ${changedBytes} bytes, ${changed * areaBytes} were changed`);

  const origin = new URL(vcsim.url).origin;
  const [, datastore, descriptor] = /^\[([^\]]+)\]\s*(.+)\.vmdk$/.exec(fileName);
  const fileUrl = `${origin}/folder/${descriptor}-flat.vmdk?dcPath=DC0&dsName=${encodeURIComponent(datastore)}`;
  const curlConfig = join(work, 'curl.conf');
  await writeFile(
    curlConfig,
    listed
      // Options given before `next` hold for one transfer only: each one repeats them.
      .map(
        (p) =>
          `url = "${fileUrl}"\nrange = "${p.offset}-${p.offset + p.length - 1}"\noutput = "/dev/null"\n` +
          `cacert = "${ca}"\nfail\nsilent\nshow-error\n`,
      )
      .join('next\n'),
  );
  const curlVersion = execFileSync('curl', ['--version'], { encoding: 'utf8' })
    .split(' ')
    .slice(0, 2)
    .join(' ');
  const run = promisify(execFile);
  async function curl() {
    const started = performance.now();
    await run('curl', ['--parallel', '--parallel-max', String(reads), '--config', curlConfig]);
    return (performance.now() - started) / 1000;
  }

  // NBD: nbdkit's file plugin on the same file, one per session (as `locate` does for VDDK), `reads` connections.
  const nbd = createVmwarePlatform({
    ...common,
    id: 'bench-nbd',
    transport: 'nbd',
    nbd: {
      async locate() {
        const server = await startNbdkit(flat);
        return {
          socketPath: server.socket,
          connections: reads,
          multiConn: 'always',
          maxRequestBytes: NBD_REQUEST,
          release: server.stop,
        };
      },
    },
  });
  // nbdcopy reads the same ranges: its nbdkit reports the listed areas as data and the rest as zero holes
  // (extentlist filter), and nbdcopy reads only data extents (it asks for block status, as drkit asks vcsim).
  const extentList = join(work, 'extents.txt');
  await writeFile(extentList, listedExtents.map((e) => `${e.offset} ${e.length}\n`).join(''));
  const copyServer = await startNbdkit(flat, extentList);
  const nbdcopyVersion = execFileSync('nbdcopy', ['--version'], { encoding: 'utf8' }).split('\n')[0];
  const nbdcopyRun = promisify(execFile);
  async function nbdcopy(server) {
    await nbdcopyRun('nbdcopy', [
      `--connections=${reads}`,
      `--requests=${CHUNK / NBD_REQUEST}`,
      `--request-size=${NBD_REQUEST}`,
      `nbd+unix:///?socket=${server.socket}`,
      'null:',
    ]);
  }
  /** nbdcopy against the nbdkit already running: the transport alone. */
  async function nbdcopyRead() {
    const started = performance.now();
    await nbdcopy(copyServer);
    return (performance.now() - started) / 1000;
  }
  /** nbdkit started for this run, then nbdcopy: what drkit's session pays for its `locate` too. */
  async function nbdcopySession() {
    const started = performance.now();
    const server = await startNbdkit(flat, extentList);
    try {
      await nbdcopy(server);
    } finally {
      await server.stop();
    }
    return (performance.now() - started) / 1000;
  }

  // Warm everything once, then alternate: each run measures every figure once, drkit then the tool.
  await drkitSession(https);
  await curl();
  await drkitSession(nbd);
  await nbdcopySession();
  const times = {
    list: [],
    https: [],
    httpsPrelisted: [],
    curl: [],
    nbd: [],
    nbdPrelisted: [],
    nbdcopySession: [],
    nbdcopy: [],
  };
  const check = (what, result) => {
    if (result.bytes !== changedBytes)
      throw new Error(`${what} read ${result.bytes} bytes, expected ${changedBytes}`);
    return result;
  };
  for (let i = 0; i < runs; i++) {
    times.list.push((await listAreas()).seconds);
    times.https.push(check('HTTPS', await drkitSession(https)).seconds);
    times.httpsPrelisted.push(check('HTTPS', await drkitSession(https, listedExtents)).readSeconds);
    times.curl.push(await curl());
    times.nbd.push(check('NBD', await drkitSession(nbd)).seconds);
    times.nbdcopySession.push(await nbdcopySession());
    times.nbdPrelisted.push(check('NBD', await drkitSession(nbd, listedExtents)).readSeconds);
    times.nbdcopy.push(await nbdcopyRead());
  }
  await https.releaseSnapshot({ hostId: host.id, name: 'drkit-bench' });
  await https.close();
  await nbd.close();
  await copyServer.stop();

  const mibs = (list) => rate(changedBytes, median(list)).toFixed(0).padStart(6);
  // On a shared machine the load moves between runs: the median of the runs' own ratios (drkit's time and the
  // tool's, measured one after the other) is the steadier figure; the spread is the lowest and highest ratio.
  const ratios = (ours, theirs) => {
    const each = ours.map((t, i) => theirs[i] / t).sort((a, b) => a - b);
    return `${median(each).toFixed(2)} (runs ${each[0].toFixed(2)}–${each.at(-1).toFixed(2)})`;
  };
  const spread = (list) => {
    const sorted = [...list].sort((a, b) => a - b);
    return `${(median(sorted) * 1000).toFixed(0)} ms (${(sorted[0] * 1000).toFixed(0)}–${(sorted.at(-1) * 1000).toFixed(0)})`;
  };
  console.log(
    `${changedBytes / MiB} MiB changed of a ${size / MiB} MiB vcsim disk in ${listedExtents.length} areas ` +
      `(${listed.length} reads of at most ${CHUNK / KiB} KiB, ${reads} in flight, a budget of ${budgetChunks} ` +
      `chunks), ${runs} runs`,
  );
  console.log(`Listing the changed areas alone (vcsim QueryChangedDiskAreas): ${spread(times.list)}`);
  console.log('HTTPS datastore ranges (vcsim):');
  console.log(`  drkit session       ${mibs(times.https)} MiB/s (open + list + read)`);
  console.log(`  drkit reads         ${mibs(times.httpsPrelisted)} MiB/s (areas listed before)`);
  console.log(`  ${curlVersion.padEnd(19)} ${mibs(times.curl)} MiB/s (same ranges, --parallel)`);
  console.log(`  drkit / curl, session: ${ratios(times.https, times.curl)}`);
  console.log(`  drkit / curl, reads:   ${ratios(times.httpsPrelisted, times.curl)}`);
  console.log('NBD (nbdkit file plugin, Unix socket):');
  console.log(`  drkit session       ${mibs(times.nbd)} MiB/s (locate starts nbdkit + list + read + close)`);
  console.log(
    `  ${nbdcopyVersion.padEnd(19)} ${mibs(times.nbdcopySession)} MiB/s (start nbdkit + block status + read + stop)`,
  );
  console.log(
    `  drkit reads         ${mibs(times.nbdPrelisted)} MiB/s (areas listed before, nbdkit running)`,
  );
  console.log(`  ${nbdcopyVersion.padEnd(19)} ${mibs(times.nbdcopy)} MiB/s (same areas, nbdkit running)`);
  console.log(`  drkit / nbdcopy, session: ${ratios(times.nbd, times.nbdcopySession)}`);
  console.log(`  drkit / nbdcopy, reads:   ${ratios(times.nbdPrelisted, times.nbdcopy)}`);
} finally {
  await stopAll();
}
