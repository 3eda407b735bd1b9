// The drkit demo: back up a disk image, change 2 % of it, back up again, restore both recovery points and prove
// that each restore is byte-identical to the disk as it was backed up.
//
//   node examples/demo.mjs [--size-mib 512] [--dir <work folder>] [--keep]
//
// It embeds drkit the way a DR console would: a repository on a local folder, the local-disk source, the engine.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createBackupEngine, createLocalFolderStore, openRepository } from '@drkit/core';
import { createLocalDiskPlatform } from '@drkit/provider-agent';
import { mutateDiskImage, writeDiskImage } from '@drkit/testkit';

const { values } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '512' },
    dir: { type: 'string' },
    keep: { type: 'boolean' },
  },
});
const MiB = 1024 * 1024;
const size = Number(values['size-mib']) * MiB;
const work = values.dir ?? (await mkdtemp(join(tmpdir(), 'drkit-demo-')));
const image = join(work, 'disk.img');
const repoPath = join(work, 'repository');

const mib = (bytes) => `${(bytes / MiB).toFixed(1)} MiB`;
const rate = (bytes, seconds) => `${(bytes / MiB / seconds).toFixed(0)} MiB/s`;

async function sha256(path) {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB })) hash.update(chunk);
  return hash.digest('hex');
}

function step(text) {
  console.log(`\n== ${text}`);
}

let failed = false;
try {
  step(`making a ${mib(size)} disk image with text, random data, zeros and holes: ${image}`);
  await writeDiskImage(image, { size, seed: 1 });
  const allocated = (await stat(image)).blocks * 512;
  console.log(`   ${mib(size)} capacity, ${mib(allocated)} allocated on the file system`);
  const sums = [await sha256(image)];

  const repository = await openRepository({
    store: createLocalFolderStore({ path: repoPath }),
    create: true,
  });
  const platform = createLocalDiskPlatform({
    id: 'local',
    hostName: 'demo-host',
    disks: [{ path: image, name: 'disk.img' }],
  });
  const engine = createBackupEngine({ repository, platforms: [platform] });
  try {
    const backup = async (label) => {
      step(label);
      const started = performance.now();
      const job = await engine.backup();
      const seconds = (performance.now() - started) / 1000;
      const task = job.tasks[0];
      if (task.status !== 'succeeded') throw task.error;
      const r = task.result;
      const validity =
        r.validity.kind === 'full' ? `full read (${r.validity.reason})` : `${r.validity.kind} change set`;
      console.log(`   point ${r.pointId}: ${validity}`);
      console.log(
        `   read ${mib(r.bytesRead)}, wrote ${mib(r.bytesWritten)} (compressed), unchanged ${mib(r.bytesSkippedUnchanged)},` +
          ` deduplicated ${mib(r.bytesDeduplicated)}, zero ${mib(r.bytesZero)}`,
      );
      console.log(`   ${seconds.toFixed(2)} s, ${rate(size, seconds)} of disk covered`);
      return r.pointId;
    };

    const first = await backup('backup 1 (first: the whole disk)');
    step('changing 2 % of the disk (random writes, a zeroed range, the last byte)');
    const mutation = await mutateDiskImage(image, { fraction: 0.02, seed: 2, zeroRanges: 4, lastByte: true });
    const changedBytes = mutation.changed.reduce((sum, e) => sum + e.length, 0);
    console.log(
      `   ${mutation.writes.length} writes, ${mutation.zeroed.length} zeroed ranges: ${mib(changedBytes)} changed`,
    );
    sums.push(await sha256(image));
    const second = await backup('backup 2 (incremental: only chunks whose hash changed are stored)');

    for (const [i, pointId] of [first, second].entries()) {
      step(`restoring point ${i + 1} (${pointId})`);
      const target = join(work, `restore-${i + 1}.img`);
      const started = performance.now();
      const { bytes } = await repository.restore(pointId, { path: target });
      const seconds = (performance.now() - started) / 1000;
      const sum = await sha256(target);
      const same = sum === sums[i];
      failed ||= !same;
      console.log(`   ${mib(bytes)} in ${seconds.toFixed(2)} s (${rate(bytes, seconds)})`);
      console.log(`   sha256 ${sum}`);
      console.log(`   ${same ? 'IDENTICAL to the disk as backed up' : `DIFFERENT: expected ${sums[i]}`}`);
    }

    step('verifying every chunk of the repository');
    const report = await repository.verify();
    console.log(
      `   ${report.chunksChecked} chunks, ${mib(report.bytesChecked)}: ${report.ok ? 'all good' : 'DAMAGED'}`,
    );
    failed ||= !report.ok;
  } finally {
    await engine.close();
    await repository.close();
  }
  step(failed ? 'FAILED' : 'done: both recovery points restore byte for byte');
} finally {
  if (!values.keep && !values.dir) await rm(work, { recursive: true, force: true });
}
process.exitCode = failed ? 1 : 0;
