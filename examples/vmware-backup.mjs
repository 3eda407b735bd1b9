// Back up VMware VMs (vCenter or one ESXi host, Changed Block Tracking) into a repository on a local folder over
// HTTPS datastore ranges, print the recovery points, and restore the new ones to image files. The configuration
// comes from environment variables (the console's VMware table):
//
//   VSPHERE_URL            the vCenter or ESXi host, https://vcenter.example.com (port 443, /sdk implied)
//   VSPHERE_USERNAME       e.g. backup@vsphere.local (the role in the README of @drkit/provider-vmware)
//   VSPHERE_PASSWORD
//   VSPHERE_CA             path of a PEM CA bundle or certificate, for a self-signed vCenter/ESXi (optional)
//   VSPHERE_THUMBPRINT     or the server certificate's SHA-256 thumbprint, AB:CD:... (optional)
//   DRKIT_QUIESCE          none, preferred (default: VMware Tools quiescing, else crash-consistent) or required
//   DRKIT_PLATFORM_ID      a stable name you choose for this vCenter, e.g. vcenter-prod: points are filed under
//                          it, so keep it when an address changes
//   DRKIT_REPOSITORY       the repository folder (created if missing)
//
//   node examples/vmware-backup.mjs [--restore-to DIR] VM...   (names or instance UUIDs; none: every VM)
//
// HTTPS datastore ranges read `-flat.vmdk` files through vCenter/ESXi: on a real vSphere that works for disks no
// running VM locks; for running VMs use the NBD transport (nbdkit with VMware's VDDK plugin, located by
// `nbd.locate`; see the README), which this script does not configure. Change tracking is turned on for every VM
// that has it off (its first backup then reads the allocated areas in full, and says why).
//
// With --restore-to, every point this run made is restored to DIR/<point id>.img. Exits 0 when every disk was
// backed up (and restored), 1 when one failed, 3 when none failed but one was skipped (a disk the platform cannot
// protect, e.g. an RDM or an independent disk: it says which and why).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createBackupEngine, createLocalFolderStore, openRepository } from '@drkit/core';
import { createVmwarePlatform } from '@drkit/provider-vmware';

const env = process.env;
function required(name) {
  const value = env[name];
  if (!value) {
    console.error(`set ${name} (see the top of examples/vmware-backup.mjs)`);
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

const platform = createVmwarePlatform({
  id: required('DRKIT_PLATFORM_ID'),
  url: required('VSPHERE_URL'),
  username: required('VSPHERE_USERNAME'),
  password: required('VSPHERE_PASSWORD'),
  tls: {
    ...(env.VSPHERE_CA ? { ca: await readFile(env.VSPHERE_CA, 'utf8') } : {}),
    ...(env.VSPHERE_THUMBPRINT ? { thumbprint: env.VSPHERE_THUMBPRINT } : {}),
  },
  transport: 'https',
});

let failed = 0;
let skipped = 0;
try {
  const status = await platform.verify();
  if (status.status !== 'normal') {
    console.error(`platform ${platform.id} is abnormal (${status.code}): ${status.reason}`);
    process.exit(1);
  }
  console.log(
    `platform ${platform.id}: normal, ${status.endpoint} ${status.product}, ${status.hostCount} VMs on ` +
      `${status.esxiHostCount} ESXi hosts`,
  );

  // The VMs to back up, with change tracking on.
  const hosts = [];
  const missing = new Set(args);
  for await (const host of platform.hosts()) {
    if (args.length > 0 && !args.includes(host.name) && !args.includes(host.id)) continue;
    missing.delete(host.name);
    missing.delete(host.id);
    for (const disk of host.skippedDisks ?? []) {
      console.log(`  not backed up: ${disk.name} of ${host.name} (${disk.reason}): ${disk.detail}`);
    }
    if ((await platform.enableChangeTracking(host.id)).changed) {
      console.log(`turned change tracking on for ${host.name}`);
    }
    hosts.push(host.id);
  }
  if (missing.size > 0) {
    console.error(`no VM named ${[...missing].join(', ')}`);
    process.exit(1);
  }

  const repository = await openRepository({
    store: createLocalFolderStore({ path: required('DRKIT_REPOSITORY') }),
    create: true,
  });
  const engine = createBackupEngine({ repository, platforms: [platform] });
  try {
    const job = await engine.backup({ hosts, quiesce: env.DRKIT_QUIESCE || 'preferred' });
    const made = [];
    for (const task of job.tasks) {
      if (task.status === 'skipped') {
        skipped++;
        console.log(`SKIPPED VM ${task.hostId} disk ${task.diskId} (${task.reason}): ${task.detail}`);
        continue;
      }
      if (task.status !== 'succeeded') {
        failed++;
        console.log(`FAILED VM ${task.hostId} disk ${task.diskId}: ${task.error?.message ?? task.error}`);
        continue;
      }
      const r = task.result;
      const validity = r.validity.kind === 'full' ? `full (${r.validity.reason})` : r.validity.kind;
      console.log(
        `backed up VM ${task.hostId} disk ${task.diskId}: point ${r.pointId}, ${validity}, ` +
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
    if (restoreTo) {
      for (const pointId of made) {
        const path = join(restoreTo, `${pointId}.img`);
        const { bytes } = await repository.restore(pointId, { path });
        console.log(`restored point ${pointId} to ${path} (${bytes} bytes)`);
      }
    }
  } finally {
    await engine.close();
    await repository.close();
  }
} finally {
  await platform.close();
}
process.exit(failed > 0 ? 1 : skipped > 0 ? 3 : 0);
