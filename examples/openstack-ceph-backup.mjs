// Back up OpenStack servers whose Cinder volumes live in Ceph RBD, into a repository on a local folder, and print
// the recovery points. The configuration comes from environment variables (the console's two tables):
//
//   OS_AUTH_URL            Keystone v3, http://192.168.10.201:5000/v3
//   OS_USER_DOMAIN_ID      default "default"
//   OS_USERNAME            e.g. admin (needs the admin role, or a policy to list all projects' servers and volumes)
//   OS_PASSWORD
//   OS_PROJECT_DOMAIN_ID   default "default"
//   OS_PROJECT_NAME        e.g. admin
//   OS_REGION_NAME         default "RegionOne"
//   OS_INTERFACE           public (default), internal or admin
//   OS_CACERT              path of a PEM CA bundle, for endpoints signed by a private CA (optional)
//   CEPH_MONITORS          10.0.0.201,10.0.0.202,10.0.0.203
//   CEPH_USER, CEPH_KEY    CephX user and key (`ceph auth get-key client.USER`); leave CEPH_USER empty for no CephX
//   CEPH_POOL              default "volumes"
//   CEPH_VOLUME_TYPES      Cinder volume types in this cluster, comma separated (empty: every type)
//   CEPH_INCREMENTAL_MODE  exact (rbd diff, default) or fast (whole objects)
//   DRKIT_PLATFORM_ID      a stable name you choose for this cloud, e.g. openstack-prod: points are filed under
//                          it, so keep it when an address changes
//   DRKIT_REPOSITORY       the repository folder (created if missing)
//
//   node examples/openstack-ceph-backup.mjs SERVER...   (names or ids; none: every server)
//
// Exits 0 when every disk was backed up, 1 when one failed, 3 when none failed but one was skipped (a disk the
// platform cannot protect, e.g. a volume of a backend that is not Ceph: it says which and why).
import { readFile } from 'node:fs/promises';
import { createBackupEngine, createLocalFolderStore, openRepository } from '@drkit/core';
import { createOpenStackCephPlatform } from '@drkit/provider-openstack-ceph';

const env = process.env;
function required(name) {
  const value = env[name];
  if (!value) {
    console.error(`set ${name} (see the top of examples/openstack-ceph-backup.mjs)`);
    process.exit(2);
  }
  return value;
}

const platform = createOpenStackCephPlatform({
  id: required('DRKIT_PLATFORM_ID'),
  openstack: {
    authUrl: required('OS_AUTH_URL'),
    userDomainId: env.OS_USER_DOMAIN_ID || 'default',
    username: required('OS_USERNAME'),
    password: required('OS_PASSWORD'),
    projectDomainId: env.OS_PROJECT_DOMAIN_ID || 'default',
    projectName: required('OS_PROJECT_NAME'),
    regionName: env.OS_REGION_NAME || 'RegionOne',
    interface: env.OS_INTERFACE || 'public',
    ...(env.OS_CACERT ? { caCertificates: await readFile(env.OS_CACERT, 'utf8') } : {}),
  },
  ceph: [
    {
      name: 'ceph',
      monitors: required('CEPH_MONITORS'),
      cephx: env.CEPH_USER ? { user: env.CEPH_USER, keyring: required('CEPH_KEY') } : false,
      pool: env.CEPH_POOL || 'volumes',
      incrementalMode: env.CEPH_INCREMENTAL_MODE || 'exact',
      ...(env.CEPH_VOLUME_TYPES
        ? { volumeTypes: env.CEPH_VOLUME_TYPES.split(',').map((t) => t.trim()) }
        : {}),
    },
  ],
});

const status = await platform.verify();
if (status.status !== 'normal') {
  console.error(`platform ${platform.id} is abnormal (${status.code}): ${status.reason}`);
  process.exit(1);
}
console.log(`platform ${platform.id}: normal, ${status.hostCount} servers`);
for (const skipped of status.skippedDisks) {
  const what = skipped.volumeId ? `volume ${skipped.volumeId}` : skipped.name;
  console.log(`  not backed up: ${what} of ${skipped.serverName} (${skipped.reason}): ${skipped.detail}`);
}

const wanted = process.argv.slice(2);
const repository = await openRepository({
  store: createLocalFolderStore({ path: required('DRKIT_REPOSITORY') }),
  create: true,
});
const engine = createBackupEngine({ repository, platforms: [platform] });
let failed = 0;
let skipped = 0;
try {
  const job = await engine.backup(wanted.length > 0 ? { hosts: wanted } : {});
  for (const task of job.tasks) {
    if (task.status === 'skipped') {
      skipped++;
      console.log(`SKIPPED server ${task.hostId} disk ${task.diskId} (${task.reason}): ${task.detail}`);
      continue;
    }
    if (task.status !== 'succeeded') {
      failed++;
      console.log(`FAILED server ${task.hostId} volume ${task.diskId}: ${task.error?.message ?? task.error}`);
      continue;
    }
    const r = task.result;
    const validity = r.validity.kind === 'full' ? `full (${r.validity.reason})` : r.validity.kind;
    console.log(
      `backed up server ${task.hostId} volume ${task.diskId}: point ${r.pointId}, ${validity}, ` +
        `${r.bytesRead} bytes read, ${r.bytesWritten} bytes stored, ${r.seconds.toFixed(1)} s`,
    );
  }
  console.log('points:');
  for (const point of await repository.points()) {
    console.log(
      `  ${point.id}  ${point.hostName} ${point.diskName} (volume ${point.diskId})  ${point.capacityBytes} bytes  ` +
        `${point.createdAt}`,
    );
  }
} finally {
  await engine.close();
  await repository.close();
}
process.exit(failed > 0 ? 1 : skipped > 0 ? 3 : 0);
