// drkit S3 benchmark (not part of the tests): starts a throw-away Ceph RGW 16 (scripts/peers/rgw.sh), writes a disk
// image (text, random data, zeros, holes), backs it up with the engine into a repository on the S3 store and restores
// it, and in the same run puts and gets the same image as raw 4 MiB PutObject/GetObject at the same concurrency as the
// store's socket pool. Prints throughputs, drkit/raw ratios and the store requests per GiB of disk; stops the peer at
// the end (also on failure).
//
//   pnpm bench:s3 [-- --size-mib 1024 --sockets 16 --chunk-size-mib 1 --ask-first]
//
// `--ask-first` hides the store's `createOnlyProvesWhole`, so the backup asks (HeadObject) before each new chunk as
// it does over a store without it: the request counts of both ways, one run each.
//
// Needs the built packages (`pnpm -r build`) and radosgw (`sh scripts/peers/rgw.sh install`).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1024' },
    sockets: { type: 'string', default: '16' },
    'ask-first': { type: 'boolean', default: false },
    'chunk-size-mib': { type: 'string', default: '1' },
  },
});
const MiB = 1024 * 1024;
const OBJECT = 4 * MiB;
const size = Number(values['size-mib']) * MiB;
const sockets = Number(values.sockets);
if (!Number.isInteger(size / OBJECT) || size <= 0) throw new Error('--size-mib must be a multiple of 4');

const root = fileURLToPath(new URL('../..', import.meta.url));
const dist = (name) => join(root, 'packages', name, 'dist/index.js');
const { createBackupEngine, openRepository } = await import(dist('core'));
const { createLocalDiskPlatform } = await import(dist('provider-agent'));
const { writeDiskImage } = await import(dist('testkit'));
const { createS3Store } = await import(dist('store-s3'));
const { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } = await import(
  join(root, 'packages/store-s3/node_modules/@aws-sdk/client-s3/dist-cjs/index.js')
);

const work = await mkdtemp(join(tmpdir(), 'drkit-bench-s3-'));
const peerDir = join(work, 'peer');
const rgw = join(root, 'scripts/peers/rgw.sh');

async function sha256(path) {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: OBJECT })) hash.update(chunk);
  return hash.digest('hex');
}

/** Runs `count` tasks with `concurrency` in flight. */
async function pool(count, concurrency, task) {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < count; i = next++) await task(i);
    }),
  );
}

/** A Store that counts the calls it passes on (and, with `askFirst`, hides `createOnlyProvesWhole`). */
function counting(store, askFirst) {
  const counts = {};
  const bump = (name) => {
    counts[name] = (counts[name] ?? 0) + 1;
  };
  const wrapped = Object.create(store);
  if (askFirst) Object.defineProperty(wrapped, 'createOnlyProvesWhole', { value: undefined });
  for (const name of ['get', 'put', 'has', 'size', 'delete']) {
    wrapped[name] = (...args) => {
      bump(name);
      return store[name](...args);
    };
  }
  wrapped.list = (...args) => {
    bump('list');
    return store.list(...args);
  };
  return { store: wrapped, counts };
}

const rate = (bytes, ms) => `${(((bytes / MiB) * 1000) / ms).toFixed(0)} MiB/s`;
try {
  execFileSync('sh', [rgw, 'start', peerDir], { stdio: ['ignore', 'ignore', 'inherit'] });
  const peer = JSON.parse(await readFile(join(peerDir, 'rgw.json'), 'utf8'));
  const credentials = { accessKeyId: peer.accessKeyId, secretAccessKey: peer.secretAccessKey };
  const raw = new S3Client({
    region: peer.region,
    endpoint: peer.endpoint,
    forcePathStyle: true,
    credentials,
    maxAttempts: 1,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  await raw.send(new CreateBucketCommand({ Bucket: 'bench' }));
  const image = join(work, 'disk.img');
  await writeDiskImage(image, { size, seed: 1 });
  const sum = await sha256(image);

  // Raw: the image as 4 MiB objects, `sockets` requests in flight.
  const file = await open(image, 'r');
  const objects = size / OBJECT;
  let started = performance.now();
  await pool(objects, sockets, async (i) => {
    const body = Buffer.alloc(OBJECT);
    await file.read(body, 0, OBJECT, i * OBJECT);
    const md5 = createHash('md5').update(body).digest('base64');
    await raw.send(new PutObjectCommand({ Bucket: 'bench', Key: `raw/${i}`, Body: body, ContentMD5: md5 }));
  });
  const rawPutMs = performance.now() - started;
  await file.close();
  started = performance.now();
  await pool(objects, sockets, async (i) => {
    const reply = await raw.send(new GetObjectCommand({ Bucket: 'bench', Key: `raw/${i}` }));
    await reply.Body.transformToByteArray();
  });
  const rawGetMs = performance.now() - started;

  // drkit: backup and restore through the S3 store.
  const s3 = createS3Store({
    bucket: 'bench',
    prefix: 'repo',
    endpoint: peer.endpoint,
    region: peer.region,
    credentials,
    maxSockets: sockets,
  });
  const { store, counts } = counting(s3, values['ask-first']);
  const repository = await openRepository({ store, create: true });
  const platform = createLocalDiskPlatform({
    id: 'local',
    hostName: 'bench',
    disks: [{ path: image, name: 'disk.img' }],
  });
  const engine = createBackupEngine({
    repository,
    platforms: [platform],
    chunkSize: Number(values['chunk-size-mib']) * MiB,
  });
  started = performance.now();
  const job = await engine.backup();
  const backupMs = performance.now() - started;
  const task = job.tasks[0];
  if (task.status !== 'succeeded') throw task.error ?? new Error(`backup ${task.status}`);
  const backupCounts = { ...counts };
  for (const name of Object.keys(counts)) counts[name] = 0;
  const target = join(work, 'restore.img');
  started = performance.now();
  await repository.restore(task.result.pointId, { path: target });
  const restoreMs = performance.now() - started;
  const identical = (await sha256(target)) === sum;
  await engine.close();
  await repository.close();
  s3.destroy();

  const gib = size / (1024 * MiB);
  const perGib = (c) =>
    Object.entries(c)
      .filter(([, n]) => n > 0)
      .map(([name, n]) => `${name} ${(n / gib).toFixed(0)}`)
      .join(', ');
  console.log(
    `S3 bench: ${size / MiB} MiB image into Ceph RGW 16 (${peer.endpoint}), ${values['chunk-size-mib']} MiB chunks, ${sockets} sockets / in flight, ${values['ask-first'] ? 'asking before each new chunk (--ask-first)' : 'create-only put without asking'}`,
  );
  console.log(
    `  raw PutObject 4 MiB : ${rate(size, rawPutMs)}  (${(objects / gib).toFixed(0)} requests/GiB)`,
  );
  console.log(
    `  drkit backup (full) : ${rate(size, backupMs)}  ratio ${(rawPutMs / backupMs).toFixed(2)} of raw; store calls/GiB: ${perGib(backupCounts)}`,
  );
  console.log(
    `    wrote ${(task.result.bytesWritten / MiB).toFixed(0)} MiB compressed, ${(task.result.bytesZero / MiB).toFixed(0)} MiB zero`,
  );
  console.log(`  raw GetObject 4 MiB : ${rate(size, rawGetMs)}`);
  console.log(
    `  drkit restore       : ${rate(size, restoreMs)}  ratio ${(rawGetMs / restoreMs).toFixed(2)} of raw; store calls/GiB: ${perGib(counts)}`,
  );
  console.log(`  restore ${identical ? 'IDENTICAL' : 'DIFFERENT'} (sha256)`);
  process.exitCode = identical ? 0 : 1;
} finally {
  try {
    execFileSync('sh', [rgw, 'stop', peerDir], { stdio: ['ignore', 'ignore', 'inherit'] });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
