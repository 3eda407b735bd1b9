// Back up EC2 instances through EBS snapshots and the EBS direct APIs into a repository on a local folder, print
// the recovery points, and restore the new ones to image files or to new EBS snapshots (the DR direction). The
// configuration comes from environment variables (the console's AWS table):
//
//   DRKIT_AWS_ACCESS_KEY_ID      the console's "Access Key ID" (the IAM policy is in the README of
//   DRKIT_AWS_SECRET_ACCESS_KEY  @drkit/provider-aws) and "Access Key Secret". This script reads them and hands
//                                them to drkit, which never reads credentials from the environment by itself
//   DRKIT_AWS_REGION             the instances' region, e.g. ap-southeast-1 (optional: unset, it is discovered,
//                                the one enabled region that has instances)
//   DRKIT_AWS_ENDPOINT           one endpoint for EC2, EBS and STS (optional: VPC interface endpoints of one
//                                region, or an emulator); unset, AWS's public endpoints of the region
//   DRKIT_PLATFORM_ID            a stable name you choose for this account and region, e.g. aws-prod: points are
//                                filed under it
//   DRKIT_REPOSITORY             the repository folder (created if missing)
//
//   node examples/aws-backup.mjs [--restore-to DIR] [--restore-to-ebs] INSTANCE...   (ids or Name tags; none: all)
//
// Each backup takes one CreateSnapshots of the instance's volumes (crash-consistent across them), reads the
// written blocks the first time and the changed blocks against the previous drkit snapshot afterwards, and keeps
// only the newest drkit snapshot of each volume as the next base.
//
// With --restore-to, every point this run made is restored to DIR/<point id>.img; with --restore-to-ebs, to a new
// EBS snapshot (StartSnapshot / PutSnapshotBlock / CompleteSnapshot, ready for CreateVolume or RegisterImage).
// Exits 0 when every volume was backed up (and restored), 1 when one failed.
import { join } from 'node:path';
import { createBackupEngine, createLocalFolderStore, openRepository } from '@drkit/core';
import { openAwsPlatform } from '@drkit/provider-aws';

const env = process.env;
function required(name) {
  const value = env[name];
  if (!value) {
    console.error(`set ${name} (see the top of examples/aws-backup.mjs)`);
    process.exit(2);
  }
  return value;
}

const args = process.argv.slice(2);
let restoreTo;
const at = args.indexOf('--restore-to');
if (at >= 0) {
  restoreTo = args[at + 1];
  if (!restoreTo) {
    console.error('--restore-to needs a folder');
    process.exit(2);
  }
  args.splice(at, 2);
}
const toEbs = args.indexOf('--restore-to-ebs');
if (toEbs >= 0) args.splice(toEbs, 1);

const endpoint = env.DRKIT_AWS_ENDPOINT;
const platform = await openAwsPlatform({
  id: required('DRKIT_PLATFORM_ID'),
  credentials: {
    accessKeyId: required('DRKIT_AWS_ACCESS_KEY_ID'),
    secretAccessKey: required('DRKIT_AWS_SECRET_ACCESS_KEY'),
  },
  ...(env.DRKIT_AWS_REGION ? { region: env.DRKIT_AWS_REGION } : {}),
  ...(endpoint ? { endpoints: { ec2: endpoint, ebs: endpoint, sts: endpoint } } : {}),
});

let failed = 0;
try {
  const status = await platform.verify();
  if (status.status !== 'normal') {
    console.error(`platform ${platform.id} is abnormal (${status.code}): ${status.reason}`);
    process.exit(1);
  }
  console.log(
    `platform ${platform.id} (${platform.name}): normal, region ${platform.region}, ${status.hostCount} instances`,
  );

  const hosts = [];
  const missing = new Set(args);
  for await (const host of platform.hosts()) {
    if (args.length > 0 && !args.includes(host.name) && !args.includes(host.id)) continue;
    missing.delete(host.name);
    missing.delete(host.id);
    for (const disk of host.skippedDisks ?? []) {
      console.log(`  not backed up: ${disk.name} of ${host.name} (${disk.reason}): ${disk.detail}`);
    }
    hosts.push(host.id);
  }
  if (missing.size > 0) {
    console.error(`no instance named ${[...missing].join(', ')}`);
    process.exit(1);
  }

  const repository = await openRepository({
    store: createLocalFolderStore({ path: required('DRKIT_REPOSITORY') }),
    create: true,
  });
  const engine = createBackupEngine({ repository, platforms: [platform] });
  try {
    const job = await engine.backup({ hosts });
    const made = [];
    for (const task of job.tasks) {
      if (task.status !== 'succeeded') {
        failed++;
        console.log(
          `FAILED instance ${task.hostId} volume ${task.diskId}: ${task.error?.message ?? task.detail ?? task.status}`,
        );
        continue;
      }
      const r = task.result;
      const validity = r.validity.kind === 'full' ? `full (${r.validity.reason})` : r.validity.kind;
      console.log(
        `backed up instance ${task.hostId} volume ${task.diskId}: point ${r.pointId}, ${validity}, ` +
          `${r.bytesRead} bytes read, ${r.bytesWritten} bytes stored, ${r.seconds.toFixed(1)} s`,
      );
      made.push(r.pointId);
    }
    for (const release of job.releaseFailures) {
      console.log(
        `snapshot ${release.snapshot} of ${release.hostId} not removed (kept for reconcile): ${release.error?.message ?? release.error}`,
      );
    }
    console.log('points:');
    for (const point of await repository.points()) {
      console.log(
        `  ${point.id}  ${point.hostName} ${point.diskName}  ${point.capacityBytes} bytes  ${point.createdAt}`,
      );
    }
    for (const pointId of made) {
      if (restoreTo) {
        const path = join(restoreTo, `${pointId}.img`);
        const { bytes } = await repository.restore(pointId, { path });
        console.log(`restored point ${pointId} to ${path} (${bytes} bytes)`);
      }
      if (toEbs >= 0) {
        const restored = await platform.restoreToEbs({ repository, pointId });
        console.log(
          `restored point ${pointId} to EBS snapshot ${restored.snapshotId} (${restored.volumeSizeGiB} GiB, ` +
            `${restored.blocksWritten} blocks written` +
            (restored.parentSnapshotId ? `, on ${restored.parentSnapshotId})` : ')'),
        );
      }
    }
  } finally {
    await engine.close();
    await repository.close();
  }
} finally {
  await platform.close();
}
process.exit(failed > 0 ? 1 : 0);
