// drkit AWS benchmark (not part of the tests): backups of an EC2 volume through the engine and
// @drkit/provider-aws against the project's AWS emulator (@drkit/testkit, EBS direct APIs over HTTP on 127.0.0.1),
// measured in the same run against a plain read of the same blocks: the same SDK client configuration
// (@aws-sdk/client-ebs, one attempt, the same sockets) and the same reads in flight, a GetSnapshotBlock loop
// that reads each body and checks its SHA-256 (what any correct reader does), with no engine behind it.
//
// Per run: a volume of `--size-gib` with `--written` of its 512 KiB blocks written (random bytes at random
// blocks), a first backup (ListSnapshotBlocks + GetSnapshotBlock of every written block), then `--changed` of the
// volume's blocks rewritten (half of them blocks written before, half new) and an incremental backup
// (ListChangedBlocks + GetSnapshotBlock of the changed blocks). Throughput = bytes read / wall seconds of the
// backup; the plain loop reads the same snapshot's same blocks right after. Median of `--runs`.
//
// It prints the requests per backup as the emulator counted them next to what the paging rules predict
// (ListSnapshotBlocks: ceil(written / MaxResults) pages; ListChangedBlocks: a page is a window of MaxResults
// indexes written in either snapshot, so ceil(|written in either| / MaxResults) pages; GetSnapshotBlock: one per
// block listed with data), and the cost of the EBS direct API requests of a backup of a 1 TiB volume with 1 %
// changed, from AWS's published prices per 1,000 requests.
//
//   pnpm bench:aws [-- --size-gib 8 --written 0.03 --changed 0.01 --runs 3 --reads 32 --page-size 100 --quotas on]
//
// `--quotas on` (default) keeps the emulator's documented quotas (GetSnapshotBlock 1000/s per snapshot and per
// account, list calls 50/s, on the real clock); `--quotas off` turns throttling off. Needs the built packages
// (`pnpm -r --filter './packages/**' build`).
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    'size-gib': { type: 'string', default: '8' },
    written: { type: 'string', default: '0.03' },
    changed: { type: 'string', default: '0.01' },
    runs: { type: 'string', default: '3' },
    reads: { type: 'string', default: '32' },
    'page-size': { type: 'string', default: '100' },
    quotas: { type: 'string', default: 'on' },
  },
});
const BLOCK = 524_288;
const GIB = 1024 ** 3;
const MiB = 1024 * 1024;
const sizeGiB = Number(values['size-gib']);
const writtenFraction = Number(values.written);
const changedFraction = Number(values.changed);
const runs = Number(values.runs);
const reads = Number(values.reads);
const pageSize = Number(values['page-size']);
const quotasOn = values.quotas !== 'off';
if (!Number.isInteger(sizeGiB) || sizeGiB < 1) throw new Error('--size-gib must be a positive integer');
if (!(writtenFraction > 0 && writtenFraction <= 1)) throw new Error('--written must be in (0, 1]');
if (!(changedFraction > 0 && changedFraction <= 1)) throw new Error('--changed must be in (0, 1]');
if (!Number.isInteger(reads) || reads < 1 || reads > 64) throw new Error('--reads must be 1 to 64');
if (!Number.isInteger(pageSize) || pageSize < 100 || pageSize > 10_000)
  throw new Error('--page-size must be 100 to 10000 (the EBS MaxResults range)');

const root = fileURLToPath(new URL('../..', import.meta.url));
const dists = {
  core: join(root, 'packages/core/dist/index.js'),
  aws: join(root, 'packages/provider-aws/dist/index.js'),
  testkit: join(root, 'packages/testkit/dist/index.js'),
};
for (const built of Object.values(dists)) {
  if (!existsSync(built)) throw new Error(`${built} is missing: build the packages first (pnpm -r build)`);
}
const { createBackupEngine, createLocalFolderStore, openRepository } = await import(
  pathToFileURL(dists.core).href
);
const { createAwsPlatform } = await import(pathToFileURL(dists.aws).href);
const { startAwsEmulator, systemClock } = await import(pathToFileURL(dists.testkit).href);
// The provider's own copy of the SDK, so the plain loop runs the very same client code.
const requireFromAws = createRequire(join(root, 'packages/provider-aws/package.json'));
const { EBSClient, GetSnapshotBlockCommand, ListSnapshotBlocksCommand, ListChangedBlocksCommand } =
  await import(pathToFileURL(requireFromAws.resolve('@aws-sdk/client-ebs')).href);
const { EC2Client, CreateSnapshotsCommand } = await import(
  pathToFileURL(requireFromAws.resolve('@aws-sdk/client-ec2')).href
);

const median = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];
const mibps = (bytes, ms) => bytes / MiB / (ms / 1000);

/** Distinct random block indexes of a volume of `total` blocks. */
function pickBlocks(total, count, avoid = new Set()) {
  const picked = new Set();
  while (picked.size < count) {
    const index = randomInt(total);
    if (!avoid.has(index)) picked.add(index);
  }
  return [...picked];
}

/** The plain read: list the blocks with data, then GetSnapshotBlock them `reads` at a time, checking SHA-256. */
async function plainRead(emulator, secondId, firstId) {
  const client = new EBSClient({
    region: emulator.region,
    endpoint: emulator.endpoint,
    credentials: emulator.credentials,
    maxAttempts: 1,
    requestHandler: { httpAgent: { keepAlive: true, maxSockets: reads + 8 }, connectionTimeout: 10_000 },
  });
  const throttledSleep = () => sleep(5);
  const call = async (command) => {
    for (;;) {
      try {
        return await client.send(command);
      } catch (error) {
        if (error?.name === 'RequestThrottledException' || error?.name === 'ThrottlingException') {
          await throttledSleep();
          continue;
        }
        throw error;
      }
    }
  };
  try {
    const start = performance.now();
    const blocks = [];
    let token;
    do {
      const page = firstId
        ? await call(
            new ListChangedBlocksCommand({
              FirstSnapshotId: firstId,
              SecondSnapshotId: secondId,
              MaxResults: pageSize,
              NextToken: token,
            }),
          )
        : await call(
            new ListSnapshotBlocksCommand({ SnapshotId: secondId, MaxResults: pageSize, NextToken: token }),
          );
      for (const b of page.Blocks ?? []) blocks.push({ index: b.BlockIndex, token: b.BlockToken });
      for (const b of page.ChangedBlocks ?? [])
        if (b.SecondBlockToken) blocks.push({ index: b.BlockIndex, token: b.SecondBlockToken });
      token = page.NextToken;
    } while (token);
    let next = 0;
    let bytes = 0;
    const worker = async () => {
      while (next < blocks.length) {
        const { index, token: blockToken } = blocks[next++];
        const out = await call(
          new GetSnapshotBlockCommand({ SnapshotId: secondId, BlockIndex: index, BlockToken: blockToken }),
        );
        const data = await out.BlockData.transformToByteArray();
        if (createHash('sha256').update(data).digest('base64') !== out.Checksum)
          throw new Error(`block ${index}: checksum mismatch`);
        bytes += data.length;
      }
    };
    await Promise.all(Array.from({ length: reads }, worker));
    return { bytes, ms: performance.now() - start, blocks: blocks.length };
  } finally {
    client.destroy();
  }
}

const counted = (stats, operation) => (stats.calls[operation] ?? 0) - (stats.throttled[operation] ?? 0);

async function oneRun() {
  const emulator = await startAwsEmulator({
    clock: systemClock,
    snapshotCompletionPolls: 1,
    ...(quotasOn ? {} : { quotas: false }),
  });
  const dir = await mkdtemp(join(tmpdir(), 'drkit-bench-aws-'));
  const repository = await openRepository({ store: createLocalFolderStore({ path: dir }), create: true });
  const platform = createAwsPlatform({
    id: 'bench-aws',
    region: emulator.region,
    credentials: emulator.credentials,
    endpoints: { ec2: emulator.endpoint, ebs: emulator.endpoint, sts: emulator.endpoint },
    maxConcurrentReads: reads,
    listPageSize: pageSize,
    snapshotWait: { timeoutMs: 60_000, minDelayMs: 10, maxDelayMs: 50 },
  });
  const engine = createBackupEngine({ repository, platforms: [platform] });
  try {
    const total = (sizeGiB * GIB) / BLOCK;
    const volumeId = emulator.createVolume({ sizeGiB });
    const written = pickBlocks(total, Math.max(1, Math.round(total * writtenFraction)));
    for (const index of written) emulator.writeVolume(volumeId, index * BLOCK, randomBytes(BLOCK));
    const instance = emulator.createInstance({ name: 'bench-1', volumes: [{ volumeId }] });

    const backup = async () => {
      emulator.resetStats();
      const start = performance.now();
      const result = await engine.backup();
      const ms = performance.now() - start;
      const task = result.tasks[0];
      if (task?.status !== 'succeeded') throw new Error(`backup ${task?.status}: ${String(task?.error)}`);
      const stats = emulator.stats();
      return {
        ms,
        bytes: task.result.bytesRead,
        calls: {
          ListSnapshotBlocks: counted(stats, 'ListSnapshotBlocks'),
          ListChangedBlocks: counted(stats, 'ListChangedBlocks'),
          GetSnapshotBlock: counted(stats, 'GetSnapshotBlock'),
        },
        throttled: Object.values(stats.throttled).reduce((a, b) => a + b, 0),
        snapshotId: emulator
          .snapshots()
          .filter((s) => s.volumeId === volumeId && s.tags.some((t) => t.Key === 'drkit:platform'))
          .at(-1)?.id,
      };
    };
    const full = await backup();
    const fullPlain = await plainRead(emulator, full.snapshotId);
    // A snapshot of the same volume state as the engine's first one, not drkit's: the engine deletes its own
    // base after the incremental backup, and the plain incremental read lists the changes against this one.
    const ec2 = new EC2Client({
      region: emulator.region,
      endpoint: emulator.endpoint,
      credentials: emulator.credentials,
    });
    const own = await ec2.send(
      new CreateSnapshotsCommand({ InstanceSpecification: { InstanceId: instance } }),
    );
    ec2.destroy();
    const baseId = own.Snapshots[0].SnapshotId;
    emulator.completeSnapshots();

    const writtenSet = new Set(written);
    const changeCount = Math.max(1, Math.round(total * changedFraction));
    const rewrites = pickBlocks(written.length, Math.min(written.length, Math.floor(changeCount / 2))).map(
      (i) => written[i],
    );
    const fresh = pickBlocks(total, changeCount - rewrites.length, writtenSet);
    for (const index of [...rewrites, ...fresh])
      emulator.writeVolume(volumeId, index * BLOCK, randomBytes(BLOCK));
    const incremental = await backup();
    const incrementalPlain = await plainRead(emulator, incremental.snapshotId, baseId);
    const predicted = {
      full: {
        ListSnapshotBlocks: Math.max(1, Math.ceil(written.length / pageSize)),
        ListChangedBlocks: 0,
        GetSnapshotBlock: written.length,
      },
      incremental: {
        ListSnapshotBlocks: 0,
        ListChangedBlocks: Math.max(1, Math.ceil((written.length + fresh.length) / pageSize)),
        GetSnapshotBlock: rewrites.length + fresh.length,
      },
    };
    return { full, fullPlain, incremental, incrementalPlain, predicted };
  } finally {
    await engine.close();
    await repository.close();
    await platform.close();
    await emulator.close();
    await rm(dir, { recursive: true, force: true });
  }
}

const results = [];
for (let i = 0; i < runs; i++) results.push(await oneRun());

console.log(
  `AWS bench: ${sizeGiB} GiB volume, ${(writtenFraction * 100).toFixed(1)} % of its blocks written, ` +
    `${(changedFraction * 100).toFixed(1)} % changed; ${reads} reads in flight; MaxResults ${pageSize}; ` +
    `emulator quotas ${quotasOn ? 'on (1000/s per snapshot and account, 50 list/s)' : 'off'}; median of ${runs}`,
);
for (const kind of ['full', 'incremental']) {
  const engineRates = results.map((r) => mibps(r[kind].bytes, r[kind].ms));
  const plainRates = results.map((r) => mibps(r[`${kind}Plain`].bytes, r[`${kind}Plain`].ms));
  const ratios = engineRates.map((rate, i) => rate / plainRates[i]);
  const r = results[0];
  console.log(
    `  ${kind.padEnd(11)} engine ${median(engineRates).toFixed(0)} MiB/s, plain GetSnapshotBlock loop ` +
      `${median(plainRates).toFixed(0)} MiB/s, ratio ${median(ratios).toFixed(2)} (runs: ${ratios
        .map((x) => x.toFixed(2))
        .join(', ')}); ${(r[kind].bytes / MiB).toFixed(0)} MiB read; throttled answers ${results
        .map((x) => x[kind].throttled)
        .join(', ')}`,
  );
  for (const op of ['ListSnapshotBlocks', 'ListChangedBlocks', 'GetSnapshotBlock']) {
    const seen = results.map((x) => x[kind].calls[op]);
    const want = results.map((x) => x.predicted[kind][op]);
    const match = seen.every((v, i) => v === want[i]) ? 'as predicted' : `predicted ${want.join(', ')}`;
    console.log(`      ${op.padEnd(19)} ${seen.join(', ')} (${match})`);
  }
}

// The cost of the EBS direct API requests of a backup of 1 TiB, every block written, 1 % changed, with the
// provider's default MaxResults 10000. Prices per 1,000 as the EBS user guide's pricing page states them
// (https://docs.aws.amazon.com/ebs/latest/userguide/ebsapi-pricing.html); regional prices on
// https://aws.amazon.com/ebs/pricing/.
const PRICE_GET_PER_1000 = 0.003;
const PRICE_LIST_PER_1000 = 0.0006;
const blocks1TiB = 1024 ** 4 / BLOCK;
const pages1TiB = Math.ceil(blocks1TiB / 10_000);
const changed1TiB = Math.ceil(blocks1TiB * 0.01);
const cost = (gets, lists) => (gets * PRICE_GET_PER_1000 + lists * PRICE_LIST_PER_1000) / 1000;
console.log('  1 TiB volume, every block written, 1 % changed, MaxResults 10000:');
console.log(
  `      first backup:       ${blocks1TiB} GetSnapshotBlock + ${pages1TiB} ListSnapshotBlocks = $${cost(blocks1TiB, pages1TiB).toFixed(4)}`,
);
console.log(
  `      incremental backup: ${changed1TiB} GetSnapshotBlock + ${pages1TiB} ListChangedBlocks = $${cost(changed1TiB, pages1TiB).toFixed(4)}`,
);
