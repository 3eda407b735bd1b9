// drkit Ceph RBD benchmark (not part of the tests): starts a throw-away Ceph cluster (scripts/peers/ceph.sh),
// fills a 1 GiB RBD volume, backs it up in full with the engine into a local-folder repository, then in each run
// rewrites 5 % of the volume's 4 MiB objects and times an incremental backup next to
// `rbd export-diff --from-snap BASE VOLUME@SNAP - > /dev/null` of the same change set, measured in the same run.
// Prints both throughputs and their ratio, and the ratio to the source-side cycle any incremental needs (snapshot
// create + export-diff + snapshot remove with the rbd CLI); stops the cluster at the end (also on failure or Ctrl-C).
//
//   pnpm bench:ceph [-- --size-mib 1024 --runs 3 --fraction 0.05 --mode exact]
//
// Needs the built packages (`pnpm -r build`) and the Ceph packages (`sh scripts/peers/ceph.sh install`).
// Throughput = bytes of changed data (the export-diff's data records) / wall seconds. The drkit figure is the
// whole `engine.backup()`: snapshot through the ledger, rbd info, export-diff, hashing and compression, writing
// chunks, committing the point and releasing the previous snapshot. The reader alone (open + drain) is shown too.
import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1024' },
    runs: { type: 'string', default: '3' },
    fraction: { type: 'string', default: '0.05' },
    mode: { type: 'string', default: 'exact' },
  },
});
const MiB = 1024 * 1024;
const OBJECT = 4 * MiB;
const size = Number(values['size-mib']) * MiB;
const runs = Number(values.runs);
const fraction = Number(values.fraction);
const mode = values.mode;
if (!Number.isInteger(size / OBJECT) || size <= 0) throw new Error('--size-mib must be a multiple of 4');
if (mode !== 'exact' && mode !== 'fast') throw new Error('--mode must be exact or fast');

const root = fileURLToPath(new URL('../..', import.meta.url));
const script = join(root, 'scripts/peers/ceph.sh');
const helper = join(root, 'packages/provider-openstack-ceph/test/integration/rbd-helper.py');
const providerDist = join(root, 'packages/provider-openstack-ceph/dist/index.js');
const coreDist = join(root, 'packages/core/dist/index.js');
for (const built of [providerDist, coreDist]) {
  if (!existsSync(built)) throw new Error(`${built} is missing: build the packages first (pnpm -r build)`);
}
const { createCephRbdPlatform } = await import(providerDist);
const { createBackupEngine, createLocalFolderStore, openRepository } = await import(coreDist);

const work = await mkdtemp(join(tmpdir(), 'drkit-bench-ceph-'));
const clusterDir = join(work, 'cluster');
let stopped = false;
function stopCluster() {
  if (stopped) return;
  stopped = true;
  try {
    execFileSync('sh', [script, 'stop', clusterDir], { stdio: 'inherit' });
  } catch (error) {
    console.error(`stopping the cluster failed: ${error}`);
  }
}
process.on('SIGINT', () => {
  stopCluster();
  process.exit(130);
});

function helperOps(conf, ops) {
  return new Promise((resolve, reject) => {
    const child = execFile(
      '/usr/bin/python3',
      [helper, conf],
      { maxBuffer: 1 << 24 },
      (error, stdout, stderr) =>
        error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(JSON.parse(stdout)),
    );
    child.stdin.end(JSON.stringify(ops));
  });
}

/**
 * Times `rbd export-diff ARGS - > /dev/null` as the backup user, three times; returns the median seconds and the
 * size of the stream (from one more run through `wc -c`).
 */
function timeExportDiff(cluster, keyring, args) {
  const quoted = args.map((arg) => `'${arg}'`).join(' ');
  const command = `rbd --conf '${cluster.conf}' --id backup --keyring '${keyring}' export-diff --no-progress ${quoted} -`;
  const times = [];
  for (let i = 0; i < 3; i++) {
    const started = performance.now();
    execFileSync('sh', ['-c', `${command} > /dev/null`]);
    times.push((performance.now() - started) / 1000);
  }
  const bytes = Number(execFileSync('sh', ['-c', `${command} | wc -c`], { encoding: 'utf8' }).trim());
  return { seconds: times.sort((x, y) => x - y)[1], bytes };
}

/**
 * Times the source-side work any incremental backup of one volume has to do, with the rbd CLI alone: take a
 * snapshot, stream the diff from the base to it into /dev/null, delete the snapshot. Median of three.
 */
function timeSourceCycle(cluster, keyring, pool, image, diffArgs) {
  const rbd = `rbd --conf '${cluster.conf}' --id backup --keyring '${keyring}'`;
  const snap = `'${pool}/${image}@bench-cycle'`;
  const quoted = diffArgs.map((arg) => `'${arg}'`).join(' ');
  const script =
    `${rbd} snap create --no-progress ${snap} && ` +
    `${rbd} export-diff --no-progress ${quoted} ${snap} - > /dev/null && ` +
    `${rbd} snap rm --no-progress ${snap}`;
  const times = [];
  for (let i = 0; i < 3; i++) {
    const started = performance.now();
    execFileSync('sh', ['-c', script]);
    times.push((performance.now() - started) / 1000);
  }
  return times.sort((x, y) => x - y)[1];
}

const rate = (bytes, seconds) => `${(bytes / MiB / seconds).toFixed(0).padStart(5)} MiB/s`;

try {
  const startedCluster = performance.now();
  execFileSync('sh', [script, 'start', clusterDir], { stdio: ['ignore', 'inherit', 'inherit'] });
  const startupSeconds = (performance.now() - startedCluster) / 1000;
  const cluster = JSON.parse(await readFile(join(clusterDir, 'cluster.json'), 'utf8'));
  const keyring = join(clusterDir, 'backup.keyring');
  await writeFile(keyring, `[client.backup]\n\tkey = ${cluster.backupKey}\n`, {
    mode: 0o600,
  });
  const image = 'bench-volume';
  const objects = size / OBJECT;
  console.log(
    `cluster started in ${startupSeconds.toFixed(1)} s; volume ${size / MiB} MiB (${objects} objects), ` +
      `mode ${mode}, ${runs} runs rewriting ${(fraction * 100).toFixed(1)} % of the objects each`,
  );
  const filled = performance.now();
  await helperOps(cluster.conf, [
    { op: 'create', pool: cluster.pool, image, size },
    { op: 'fill', pool: cluster.pool, image, offset: 0, length: size, seed: 1 },
  ]);
  console.log(
    `filled the volume in ${((performance.now() - filled) / 1000).toFixed(1)} s (librbd from Python)`,
  );

  const platform = createCephRbdPlatform({
    id: 'bench',
    clusters: [
      {
        name: 'bench',
        monitors: cluster.monitors,
        cephx: { user: 'backup', keyring: cluster.backupKey },
        pool: cluster.pool,
        incrementalMode: mode,
      },
    ],
    hosts: [{ id: 'bench-host', name: 'bench-host', images: [`${cluster.pool}/${image}`] }],
  });
  const repository = await openRepository({
    store: createLocalFolderStore({ path: join(work, 'repo') }),
    create: true,
  });
  const engine = createBackupEngine({ repository, platforms: [platform] });
  const backup = async () => {
    const started = performance.now();
    const job = await engine.backup();
    const seconds = (performance.now() - started) / 1000;
    const task = job.tasks[0];
    if (task?.status !== 'succeeded') throw task?.error ?? new Error('no task');
    return { seconds, result: task.result };
  };
  try {
    const full = await backup();
    console.log(
      `full backup        ${full.seconds.toFixed(2).padStart(6)} s  ${rate(full.result.bytesRead, full.seconds)}  ` +
        `(${(full.result.bytesRead / MiB).toFixed(0)} MiB read, ${full.result.validity.kind})`,
    );
    const fullDiff = timeExportDiff(cluster, keyring, [
      `${cluster.pool}/${image}@${(await repository.points()).at(-1).checkpoint.snapshotName}`,
    ]);
    console.log(
      `full export-diff   ${fullDiff.seconds.toFixed(2).padStart(6)} s  ${rate(full.result.bytesRead, fullDiff.seconds)}  ` +
        '(rbd export-diff VOLUME@SNAP - > /dev/null, median of 3)',
    );

    const ratios = [];
    const readerRatios = [];
    const cycleRatios = [];
    let seed = 100;
    for (let run = 1; run <= runs; run++) {
      // Rewrite a random fraction of the objects, whole.
      const count = Math.max(1, Math.round(objects * fraction));
      const chosen = new Set();
      while (chosen.size < count) chosen.add(Math.floor(Math.random() * objects));
      await helperOps(
        cluster.conf,
        [...chosen].map((index) => ({
          op: 'fill',
          pool: cluster.pool,
          image,
          offset: index * OBJECT,
          length: OBJECT,
          seed: seed++,
        })),
      );
      // The same change set for rbd alone: from drkit's base snapshot to a snapshot taken now.
      const base = (await repository.points()).at(-1).checkpoint.snapshotName;
      execFileSync('rbd', [
        '--conf',
        cluster.conf,
        'snap',
        'create',
        '--no-progress',
        `${cluster.pool}/${image}@bench-ref`,
      ]);
      const diffArgs = ['--from-snap', base, ...(mode === 'fast' ? ['--whole-object'] : [])];
      const reference = timeExportDiff(cluster, keyring, [...diffArgs, `${cluster.pool}/${image}@bench-ref`]);
      const cycleSeconds = timeSourceCycle(cluster, keyring, cluster.pool, image, diffArgs);

      // drkit's reader alone on the same change set (open + drain), then the whole incremental backup.
      let host;
      for await (const listed of platform.hosts()) host = listed;
      const readerStarted = performance.now();
      let readerBytes = 0;
      const session = await platform.changedBlockReader.open({
        disk: host.disks[0],
        snapshot: { hostId: host.id, name: 'bench-ref' },
        base: (await repository.points()).at(-1).checkpoint,
        chunkSize: 1024 * 1024,
      });
      try {
        for await (const change of session.changes())
          if (change.kind === 'data') readerBytes += change.data.length;
      } finally {
        await session.close();
      }
      const readerSeconds = (performance.now() - readerStarted) / 1000;
      execFileSync('rbd', [
        '--conf',
        cluster.conf,
        'snap',
        'rm',
        '--no-progress',
        `${cluster.pool}/${image}@bench-ref`,
      ]);

      const incremental = await backup();
      const bytes = incremental.result.bytesRead;
      // Same change set, same bytes of data: the throughput ratio is the ratio of the times.
      const ratio = reference.seconds / incremental.seconds;
      const readerRatio = reference.seconds / readerSeconds;
      ratios.push(ratio);
      readerRatios.push(readerRatio);
      cycleRatios.push(cycleSeconds / incremental.seconds);
      console.log(`run ${run}: ${count} objects rewritten (${((count * OBJECT) / MiB).toFixed(0)} MiB)`);
      console.log(
        `  rbd export-diff  ${reference.seconds.toFixed(2).padStart(6)} s  ${rate(bytes, reference.seconds)}  ` +
          `(> /dev/null, median of 3; ${(reference.bytes / MiB).toFixed(1)} MiB of stream)`,
      );
      console.log(
        `  rbd cycle        ${cycleSeconds.toFixed(2).padStart(6)} s  ${rate(bytes, cycleSeconds)}  ` +
          '(snap create + export-diff > /dev/null + snap rm: the source work of any incremental)',
      );
      console.log(
        `  drkit reader     ${readerSeconds.toFixed(2).padStart(6)} s  ${rate(readerBytes, readerSeconds)}  ` +
          `(open + export-diff + parse, no engine)  ratio ${readerRatio.toFixed(2)}`,
      );
      console.log(
        `  drkit backup     ${incremental.seconds.toFixed(2).padStart(6)} s  ${rate(bytes, incremental.seconds)}  ` +
          `(${(bytes / MiB).toFixed(1)} MiB read, ${incremental.result.validity.kind}, ` +
          `${(incremental.result.bytesWritten / MiB).toFixed(1)} MiB stored)  ratio ${ratio.toFixed(2)}`,
      );
    }
    const median = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];
    console.log(
      `incremental backup / rbd export-diff throughput: median ${median(ratios).toFixed(2)} ` +
        `(runs: ${ratios.map((r) => r.toFixed(2)).join(', ')}; goal >= 0.80)`,
    );
    console.log(
      `incremental backup / rbd snapshot cycle throughput: median ${median(cycleRatios).toFixed(2)} ` +
        `(runs: ${cycleRatios.map((r) => r.toFixed(2)).join(', ')})`,
    );
    console.log(
      `drkit reader alone / rbd export-diff throughput: median ${median(readerRatios).toFixed(2)} ` +
        `(runs: ${readerRatios.map((r) => r.toFixed(2)).join(', ')})`,
    );
  } finally {
    await engine.close();
    await repository.close();
  }
} finally {
  stopCluster();
  await rm(work, { recursive: true, force: true });
}
