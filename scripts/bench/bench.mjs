// drkit benchmark (not part of the tests): full backup, incremental after a 1 % change, and restore of a
// disk-like image, each next to a plain copy measured in the same run, with peak RSS; and the same work done by
// restic and borg on the same image. Then the sparse case: an 8 TiB sparse image holding 64 MiB of data (a
// sparse file costs no disk), its full backup, an incremental after 16 writes of 64 KiB, and its restore, each
// with peak RSS, the repository's growth and the fsync-like calls counted by strace when it is installed.
//
//   pnpm bench [-- --size-gib 2 --dir <work folder> --no-others --sparse-tib 8 --no-sparse --only-sparse
//                 --sync-level file --profile <folder> --no-encryption --runs 3]
//
// --runs N repeats the image case N times (fresh repositories, the copy measured again each time) and the summary
// gives, per tool and step, the median of the seconds and of the ratios with their range: on a shared machine
// one run's ratio is not a measurement.
//
// drkit runs twice on the image: into a plain repository and into an encrypted one (`drkit+enc`, the passphrase
// from DRKIT_PASSPHRASE); --no-encryption skips the second.
//
// --sync-level is handed to drkit (default: its own, file). --profile writes a CPU profile of each drkit step
// (`node --cpu-prof`, one file per thread) under <folder>/<step> and prints where the time went
// (scripts/bench/profile-summary.mjs); profiling slows the steps down, so ratios of a profiled run are not the goals'.
//
// Page cache: every tool reads the image hot from the page cache (it was just written), like the plain copy.
// Peak RSS and CPU (user + system seconds of the step's processes, which does not depend on the disk) are measured
// with GNU time (`/usr/bin/time -f '%M %U %S'`) around each process.
//
// The plain copy (`cat image > copy; sync`) is measured again right before every step of the image case, and the
// step's ratio is to that copy: this machine's disk has taken 2.5 s and 9.4 s for the same 2 GiB copy an hour
// apart, and a copy measured once per run drifts from steps timed minutes after it. The summary prints those copies'
// median and range next to each step.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { mutateDiskImage, writeDiskImage } from '@drkit/testkit';

const { values } = parseArgs({
  options: {
    'size-gib': { type: 'string', default: '2' },
    dir: { type: 'string' },
    'no-others': { type: 'boolean' },
    'sync-level': { type: 'string' },
    profile: { type: 'string' },
    'sparse-tib': { type: 'string', default: '8' },
    'no-sparse': { type: 'boolean' },
    'only-sparse': { type: 'boolean' },
    'no-encryption': { type: 'boolean' },
    runs: { type: 'string', default: '1' },
  },
});
const GiB = 1024 ** 3;
const size = Math.round(Number(values['size-gib']) * GiB);
const cliPath = fileURLToPath(new URL('../../packages/cli/dist/bin.js', import.meta.url));
const level = values['sync-level'] === undefined ? '' : ` --sync-level ${values['sync-level']}`;
/** The CLI invocation of one drkit step, profiled into <profile>/<step> with --profile. */
const drkit = (step) =>
  values.profile === undefined
    ? `node '${cliPath}'`
    : `node --cpu-prof --cpu-prof-dir '${join(values.profile, step)}' '${cliPath}'`;
const work = values.dir ?? (await mkdtemp(join(tmpdir(), 'drkit-bench-')));
await mkdir(work, { recursive: true });

function ensureTools() {
  const need = [];
  if (!existsSync('/usr/bin/time')) need.push('time');
  if (!values['no-others']) {
    if (spawnSync('restic', ['version']).status !== 0) need.push('restic');
    if (spawnSync('borg', ['--version']).status !== 0) need.push('borgbackup');
  }
  if (need.length === 0) return;
  console.log(`installing ${need.join(', ')} (Debian packages)`);
  execFileSync(
    'apt-get',
    ['-o', 'DPkg::Lock::Timeout=600', 'install', '-y', '--no-install-recommends', ...need],
    {
      stdio: 'inherit',
    },
  );
}

/** Runs a shell command under GNU time; returns wall seconds and peak RSS in MiB. */
function measure(label, command, env = {}) {
  const started = performance.now();
  const result = spawnSync('/usr/bin/time', ['-f', '%M %U %S', 'sh', '-c', command], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  const seconds = (performance.now() - started) / 1000;
  if (result.status !== 0) {
    throw new Error(`${label} failed (${result.status}): ${result.stderr.slice(-2000)}`);
  }
  const lines = result.stderr.trim().split('\n');
  const [peakKiB, user, system] = lines[lines.length - 1].split(' ').map(Number);
  return { label, seconds, peakMiB: peakKiB / 1024, cpuSeconds: user + system };
}

const strace = spawnSync('strace', ['-V']).status === 0;
const SYNC_CALLS = 'fsync,fdatasync,syncfs,sync_file_range,sync';

/** A command run under strace counting its fsync-like calls (when strace is installed), and that count. */
function traced(command) {
  if (!strace) return { command, calls: () => undefined };
  const out = join(work, `strace-${Math.random().toString(16).slice(2)}.txt`);
  return {
    command: `strace -f --seccomp-bpf -c -e trace=${SYNC_CALLS} -o '${out}' ${command}`,
    calls: async () => {
      const text = await readFile(out, 'utf8');
      let calls = 0;
      for (const line of text.split('\n')) {
        const tokens = line.trim().split(/\s+/);
        if (tokens.length >= 5 && SYNC_CALLS.split(',').includes(tokens.at(-1))) calls += Number(tokens[3]);
      }
      await rm(out, { force: true });
      return calls;
    },
  };
}

/** Apparent bytes of the files under a folder. */
function folderBytes(folder) {
  if (!existsSync(folder)) return 0;
  return Number(
    execFileSync('du', ['-s', '-B1', '--apparent-size', folder], { encoding: 'utf8' }).split('\t')[0],
  );
}

const MiB = 1024 ** 2;
/** The sparse case's steps are named after its size: `8T full` for the default 8 TiB. */
const SPARSE_LABEL = `${Number(values['sparse-tib'])}T`;

/** The 8 TiB sparse image: 64 MiB of data in 64 runs of 1 MiB spread over the disk (half random, half text). */
async function sparseCase() {
  const capacity = Math.round(Number(values['sparse-tib']) * 1024 ** 4);
  const image = join(work, 'sparse.img');
  const handle = await open(image, 'w');
  await handle.truncate(capacity);
  const stride = Math.floor(capacity / 64 / MiB) * MiB;
  const regions = [];
  for (let r = 0; r < 64; r++) {
    const run = Buffer.alloc(MiB, `sector ${r} of a sparse disk image; `);
    randomBytes(MiB / 2).copy(run);
    await handle.write(run, 0, MiB, r * stride + MiB);
    regions.push({ offset: r * stride + MiB, length: MiB });
  }
  await handle.close();
  console.log(`\nsparse case: ${(capacity / 1024 ** 4).toFixed(1)} TiB sparse image, 64 MiB of data`);
  if (!strace) console.log('strace is not installed: fsync-like calls are not counted');
  const copy = (what) =>
    measure(
      `copy ${what}`,
      `cp --sparse=always '${image}' '${work}/sparse-copy.img' && sync && rm -f '${work}/sparse-copy.img'`,
    );
  const repo = join(work, 'drkit-sparse-repo');
  const step = async (operation, command, copied) => {
    const before = folderBytes(repo);
    const run = traced(command);
    const m = measure(`drkit sparse ${operation}`, `${run.command} && sync`);
    const calls = await run.calls();
    const growth = folderBytes(repo) - before;
    rows.push({
      tool: 'drkit',
      operation: `${SPARSE_LABEL} ${operation}`,
      seconds: m.seconds,
      ratio: m.seconds / copied.seconds,
      peakMiB: m.peakMiB,
      cpuSeconds: m.cpuSeconds,
      copySeconds: copied.seconds,
    });
    console.log(
      `drkit   ${SPARSE_LABEL} ${operation.padEnd(9)} ${m.seconds.toFixed(2).padStart(7)} s  (copy ${copied.seconds.toFixed(2)} s)  peak RSS ${m.peakMiB.toFixed(0)} MiB  repository +${(growth / MiB).toFixed(2)} MiB  fsync-like calls ${calls ?? 'not counted'}`,
    );
  };
  const backup = `node '${cliPath}' backup '${image}' --repo '${repo}'${level} --json > /dev/null`;
  await step('full', backup, copy('full'));
  // 16 writes of 64 KiB at spread, 64 KiB-aligned offsets (some into data, most into holes).
  const writes = await open(image, 'r+');
  let seed = 7;
  for (let w = 0; w < 16; w++) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const offset = Math.floor((seed / 2 ** 31) * (capacity / (64 * 1024) - 1)) * 64 * 1024;
    await writes.write(randomBytes(64 * 1024), 0, 64 * 1024, w === 0 ? MiB : offset);
    regions.push({ offset: w === 0 ? MiB : offset, length: 64 * 1024 });
  }
  await writes.close();
  await step('incr', backup, copy('incremental'));
  const points = JSON.parse(
    execFileSync('node', [cliPath, 'points', '--json', '--repo', repo], { encoding: 'utf8' }),
  );
  const out = join(work, 'sparse-restored.img');
  await step(
    'restore',
    `node '${cliPath}' restore ${points.at(-1).id} '${out}' --repo '${repo}' > /dev/null`,
    copy('restore'),
  );
  // The whole file is 8 TiB of mostly holes: compare its size and every written region, not every byte.
  const a = await open(image, 'r');
  const b = await open(out, 'r');
  let same = (await b.stat()).size === capacity;
  for (const { offset, length } of regions) {
    const x = Buffer.alloc(length);
    const y = Buffer.alloc(length);
    await a.read(x, 0, length, offset);
    await b.read(y, 0, length, offset);
    if (!x.equals(y)) same = false;
  }
  await a.close();
  await b.close();
  console.log(`restored sparse image: same size and same bytes in every written region: ${same}`);
  await rm(out, { force: true });
  await rm(image, { force: true });
  await rm(repo, { recursive: true, force: true });
}

function dropCachesNote() {
  return 'all reads hot from the page cache';
}

const rows = [];
/**
 * One step of the image case: the plain copy measured right before it (this machine's disk has been seen to take
 * 2.5 s and 9.4 s for the same copy an hour apart, and a copy measured once per run drifts from the steps timed
 * minutes later), then the step; its ratio is to that copy. CPU is user + system seconds of the step's processes.
 */
function timed(tool, operation, label, command, copy, env = {}) {
  const before = copy();
  const m = measure(label, command, env);
  const ratio = m.seconds / before.seconds;
  rows.push({
    tool,
    operation,
    seconds: m.seconds,
    ratio,
    peakMiB: m.peakMiB,
    cpuSeconds: m.cpuSeconds,
    copySeconds: before.seconds,
  });
  console.log(
    `${tool.padEnd(9)} ${operation.padEnd(12)} ${m.seconds.toFixed(2).padStart(7)} s  ${ratio.toFixed(2)}x copy (${before.seconds.toFixed(2)} s)  CPU ${m.cpuSeconds.toFixed(2)} s  peak RSS ${m.peakMiB.toFixed(0)} MiB`,
  );
}

ensureTools();
/** One run of the image case: drkit (plain and encrypted), restic and borg on the same image, with its copies. */
async function imageCase(run) {
  for (const name of [
    'drkit-repo',
    'drkit-sealed-repo',
    'restic-repo',
    'restic-cache',
    'borg-repo',
    'borg-base',
    'borg-out',
  ]) {
    await rm(join(work, name), { recursive: true, force: true });
  }
  if (runs > 1) console.log(`\nrun ${run + 1} of ${runs}`);
  const image = join(work, 'disk.img');
  console.log(`work folder ${work}; image ${(size / GiB).toFixed(2)} GiB; ${dropCachesNote()}`);
  await writeDiskImage(image, { size, seed: 42 });

  const copy = () =>
    measure('copy', `cat '${image}' > '${work}/copy.img' && sync && rm -f '${work}/copy.img'`);

  // drkit, without and with encryption (restic always encrypts; borg runs with `-e none`)
  const image0 = join(work, 'disk-v1.img');
  execFileSync('cp', ['--sparse=always', image, image0]);
  for (const sealed of values['no-encryption'] ? [false] : [false, true]) {
    const tool = sealed ? 'drkit+enc' : 'drkit';
    const env = sealed ? { DRKIT_PASSPHRASE: 'bench passphrase' } : {};
    const repo = join(work, sealed ? 'drkit-sealed-repo' : 'drkit-repo');
    if (sealed) execFileSync('cp', ['--sparse=always', image0, image]);
    timed(
      tool,
      'full',
      `${tool} full`,
      `${drkit(`${tool}-full`)} backup '${image}' --repo '${repo}'${level} --json > /dev/null && sync`,
      copy,
      env,
    );
    await mutateDiskImage(image, { fraction: 0.01, seed: 43 });
    timed(
      tool,
      'incremental',
      `${tool} incr`,
      `${drkit(`${tool}-incremental`)} backup '${image}' --repo '${repo}'${level} --json > /dev/null && sync`,
      copy,
      env,
    );
    const points = JSON.parse(
      execFileSync('node', [cliPath, 'points', '--json', '--repo', repo], {
        encoding: 'utf8',
        env: { ...process.env, ...env },
      }),
    );
    timed(
      tool,
      'restore',
      `${tool} restore`,
      `${drkit(`${tool}-restore`)} restore ${points.at(-1).id} '${work}/restored.img' --repo '${repo}' > /dev/null && sync`,
      copy,
      env,
    );
    const same = execFileSync('cmp', [image, join(work, 'restored.img')]).length === 0;
    console.log(`${tool}: restored image identical to the source: ${same}`);
    await rm(join(work, 'restored.img'), { force: true });
  }

  if (!values['no-others']) {
    // restic (content-defined chunking, deduplication, compression auto on repository v2)
    const resticEnv = {
      RESTIC_PASSWORD: 'bench',
      RESTIC_REPOSITORY: join(work, 'restic-repo'),
      RESTIC_CACHE_DIR: join(work, 'restic-cache'),
    };
    execFileSync('cp', ['--sparse=always', image0, join(work, 'r.img')]);
    spawnSync('restic', ['init'], { env: { ...process.env, ...resticEnv } });
    timed('restic', 'full', 'restic full', `cd '${work}' && restic backup -q r.img && sync`, copy, resticEnv);
    execFileSync('cp', ['--sparse=always', image, join(work, 'r.img')]);
    timed(
      'restic',
      'incremental',
      'restic incr',
      `cd '${work}' && restic backup -q r.img && sync`,
      copy,
      resticEnv,
    );
    timed(
      'restic',
      'restore',
      'restic restore',
      `restic restore -q latest --target '${work}/restic-out' && sync`,
      copy,
      resticEnv,
    );
    await rm(join(work, 'restic-out'), { recursive: true, force: true });
    // borg (buzhash chunking, lz4 by default)
    const borgEnv = {
      BORG_REPO: join(work, 'borg-repo'),
      BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes',
      BORG_BASE_DIR: join(work, 'borg-base'),
    };
    spawnSync('borg', ['init', '-e', 'none'], { env: { ...process.env, ...borgEnv } });
    execFileSync('cp', ['--sparse=always', image0, join(work, 'r.img')]);
    timed('borg', 'full', 'borg full', `cd '${work}' && borg create ::a r.img && sync`, copy, borgEnv);
    execFileSync('cp', ['--sparse=always', image, join(work, 'r.img')]);
    timed('borg', 'incremental', 'borg incr', `cd '${work}' && borg create ::b r.img && sync`, copy, borgEnv);
    await mkdir(join(work, 'borg-out'), { recursive: true });
    timed(
      'borg',
      'restore',
      'borg restore',
      `cd '${work}/borg-out' && borg extract ::b && sync`,
      copy,
      borgEnv,
    );
  }
}

const runs = Number(values.runs);
if (!Number.isSafeInteger(runs) || runs < 1)
  throw new Error(`--runs must be a positive integer, got ${values.runs}`);
if (!values['only-sparse']) for (let run = 0; run < runs; run++) await imageCase(run);
if (!values['no-sparse']) await sparseCase();

const median = (numbers) => {
  const sorted = [...numbers].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};
/** Rows of one tool and step across runs: median seconds and ratio, the ratio's range, the highest peak RSS. */
const steps = [];
for (const r of rows) {
  let step = steps.find((s) => s.tool === r.tool && s.operation === r.operation);
  if (!step) {
    step = { tool: r.tool, operation: r.operation, seconds: [], ratios: [], cpu: [], copies: [], peakMiB: 0 };
    steps.push(step);
  }
  step.seconds.push(r.seconds);
  step.ratios.push(r.ratio);
  if (r.cpuSeconds !== undefined) step.cpu.push(r.cpuSeconds);
  if (r.copySeconds !== undefined) step.copies.push(r.copySeconds);
  step.peakMiB = Math.max(step.peakMiB, r.peakMiB);
}
console.log(
  `\nsummary of ${runs} run${runs === 1 ? '' : 's'} (ratio = seconds / the plain copy measured right before the step, ` +
    'median and range; copy s = those copies, median and range; CPU s = user + system seconds, median; ' +
    'vs restic, vs borg = median seconds / theirs)',
);
console.log(
  'tool      operation    seconds  ratio  (range)      copy s (range)       CPU s  peak RSS  vs restic  vs borg',
);
for (const step of steps) {
  const seconds = median(step.seconds);
  const versus = (tool) => {
    const them = step.tool.startsWith('drkit')
      ? steps.find((s) => s.tool === tool && s.operation === step.operation)
      : undefined;
    return (them ? (seconds / median(them.seconds)).toFixed(2) : '').padStart(9);
  };
  const range = `(${Math.min(...step.ratios).toFixed(2)}-${Math.max(...step.ratios).toFixed(2)})`;
  const copies =
    step.copies.length === 0
      ? ''
      : `${median(step.copies).toFixed(2)} (${Math.min(...step.copies).toFixed(2)}-${Math.max(...step.copies).toFixed(2)})`;
  const cpu = step.cpu.length === 0 ? '' : median(step.cpu).toFixed(2);
  console.log(
    `${step.tool.padEnd(9)} ${step.operation.padEnd(12)} ${seconds.toFixed(2).padStart(7)} ${median(step.ratios).toFixed(2).padStart(6)}  ${range.padEnd(11)}  ${copies.padEnd(18)} ${cpu.padStart(6)} ${step.peakMiB.toFixed(0).padStart(5)} MiB ${versus('restic')}  ${versus('borg')}`,
  );
}
if (values.profile !== undefined) {
  const summary = fileURLToPath(new URL('./profile-summary.mjs', import.meta.url));
  for (const step of steps
    .filter((row) => row.tool.startsWith('drkit') && !row.operation.startsWith(SPARSE_LABEL))
    .map((row) => `${row.tool}-${row.operation}`)) {
    console.log(`\nCPU profile of ${step} (${join(values.profile, step)})`);
    console.log(execFileSync('node', [summary, join(values.profile, step)], { encoding: 'utf8' }));
  }
}
if (!values.dir) await rm(work, { recursive: true, force: true });
