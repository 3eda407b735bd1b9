// Snapshots, change tracking and QueryChangedDiskAreas against vcsim. vcsim has no QueryChangedDiskAreas: the
// change ids and changed areas here come from the project's own extension in the launcher
// (scripts/peers/vcsim/cbt.go, written from the vSphere API reference: change ids at snapshot time, 64 KiB block
// hashes, `*` = allocated areas, unknown id → InvalidArgument, answers paged by startOffset). Snapshots,
// ReconfigVM_Task and the tasks waited for through a PropertyCollector are vcsim's own.
import {
  CheckpointInvalidError,
  type Extent,
  type Host,
  InvalidSettingsError,
  QuiesceFailedError,
} from '@drkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VmwareDiskSnapshotRef, VmwarePlatform } from '../../src/index.js';
import { children } from '../../src/soap/xml-tree.js';
import { queryChangedDiskAreas } from '../../src/vmware-changed-areas.js';
import { type VcsimAdmin, vcsimAdmin } from './vcsim-admin.js';
import { capturingLogger, platformOn } from './vcsim-fixtures.js';
import { type RunningVcsim, startVcsim } from './vcsim-launcher.js';

const KiB = 1024;
const MiB = 1024 * KiB;

let vcsim: RunningVcsim;
let admin: VcsimAdmin;
let platform: VmwarePlatform;
let host: Host;

/** A 4 MiB disk image: zeros but for bytes at the given extents, filled with a pattern of `seed`. */
function image(extents: readonly Extent[], seed: number, base?: Uint8Array): Uint8Array {
  const data = base ? Uint8Array.from(base) : new Uint8Array(4 * MiB);
  for (const { offset, length } of extents) {
    for (let i = 0; i < length; i += 1) data[offset + i] = (seed + i * 31 + (i >> 9)) % 251 || 1;
  }
  return data;
}

async function areas(
  ref: VmwareDiskSnapshotRef,
  changeId: string,
  logger = capturingLogger(),
): Promise<Extent[]> {
  const found: Extent[] = [];
  for await (const extent of queryChangedDiskAreas(
    admin.session,
    {
      vm: { type: 'VirtualMachine', value: ref.vm },
      snapshot: { type: 'VirtualMachineSnapshot', value: ref.snapshot },
      deviceKey: ref.deviceKey,
      changeId,
      capacityBytes: ref.capacityBytes!,
    },
    { logger },
  )) {
    found.push(extent);
  }
  return found;
}

async function snapshotNames(): Promise<string[]> {
  const info = await admin.property(
    { type: 'VirtualMachine', value: host.attributes!['vmware.moref']! },
    'snapshot',
  );
  const names: string[] = [];
  const walk = (trees: ReturnType<typeof children>) => {
    for (const tree of trees) {
      names.push(tree.children.find((c) => c.name === 'name')!.text);
      walk(children(tree, 'childSnapshotList'));
    }
  };
  if (info) walk(children(info, 'rootSnapshotList'));
  return names;
}

beforeAll(async () => {
  vcsim = await startVcsim({ mode: 'vpx', vms: 1, diskMiB: 4, cbtPageBytes: 1 * MiB });
  admin = vcsimAdmin(vcsim);
  platform = platformOn(vcsim);
  for await (const h of platform.hosts()) {
    host = h;
    break;
  }
});
afterAll(async () => {
  await platform?.close();
  await admin?.session.logout().catch(() => undefined);
  await vcsim?.stop();
});

describe('change tracking and changed areas', () => {
  let first: VmwareDiskSnapshotRef;

  it('turns change tracking on once', async () => {
    expect(await platform.enableChangeTracking(host.id)).toEqual({ changed: true });
    expect(await platform.enableChangeTracking(host.id)).toEqual({ changed: false });
    expect((await platform.host(host.id)).attributes?.['vmware.changeTracking']).toBe('enabled');
  });

  it('reads the change id of each disk from the snapshot, and "*" lists the allocated areas, page by page', async () => {
    const written = [
      { offset: 0, length: 128 * KiB },
      { offset: 2 * MiB + 64 * KiB, length: 64 * KiB },
    ];
    await admin.putFile(`${host.name}/disk1-flat.vmdk`, image(written, 7));
    const snapshot = await platform.createSnapshot({ host, name: 'drkit-s1', quiesce: 'none' });
    expect(snapshot).toMatchObject({ hostId: host.id, name: 'drkit-s1', consistency: 'host' });
    expect(snapshot.disks.map((d) => d.diskId)).toEqual(host.disks.map((d) => d.id));
    first = JSON.parse(snapshot.disks[0]!.ref) as VmwareDiskSnapshotRef;
    expect(first.changeId).toMatch(/\/1$/);
    expect(first.capacityBytes).toBe(4 * MiB);
    const logger = capturingLogger();
    expect(await areas(first, '*', logger)).toEqual(written);
    // 4 MiB at most 1 MiB per answer: four calls, each starting where the last one ended.
    expect(logger.lines.filter((l) => l.fields.method === 'QueryChangedDiskAreas')).toHaveLength(4);
  });

  it('lists exactly the blocks changed since a change id', async () => {
    const changed = [{ offset: 3 * MiB, length: 64 * KiB }];
    const before = image(
      [
        { offset: 0, length: 128 * KiB },
        { offset: 2 * MiB + 64 * KiB, length: 64 * KiB },
      ],
      7,
    );
    await admin.putFile(`${host.name}/disk1-flat.vmdk`, image(changed, 99, before));
    const snapshot = await platform.createSnapshot({ host, name: 'drkit-s2', quiesce: 'none' });
    const second = JSON.parse(snapshot.disks[0]!.ref) as VmwareDiskSnapshotRef;
    expect(second.changeId).not.toBe(first.changeId);
    expect(await areas(second, first.changeId!)).toEqual(changed);
    expect(await areas(second, second.changeId!)).toEqual([]);
  });

  it('says CheckpointInvalidError for a change id vSphere does not know (InvalidArgument)', async () => {
    const error = await areas(first, '52 00 00 00 00 00 00 00-00 00 00 00 00 00 00 00/9').catch(
      (e: unknown) => e,
    );
    expect(CheckpointInvalidError.isInstance(error)).toBe(true);
    expect((error as Error).message).toContain('InvalidArgument');
  });

  it('releases snapshots by name, idempotently', async () => {
    expect(await snapshotNames()).toEqual(['drkit-s1', 'drkit-s2']);
    await platform.releaseSnapshot({ hostId: host.id, name: 'drkit-s1' });
    await platform.releaseSnapshot({ hostId: host.id, name: 'drkit-s1' });
    expect(await snapshotNames()).toEqual(['drkit-s2']);
    await platform.releaseSnapshot({ hostId: host.id, name: 'drkit-s2' });
    expect(await snapshotNames()).toEqual([]);
  });

  it('refuses every old change id once tracking was turned off', async () => {
    await admin.reconfigure(
      { type: 'VirtualMachine', value: host.attributes!['vmware.moref']! },
      '<changeTrackingEnabled>false</changeTrackingEnabled>',
    );
    expect(await platform.enableChangeTracking(host.id)).toEqual({ changed: true });
    const snapshot = await platform.createSnapshot({ host, name: 'drkit-s3', quiesce: 'none' });
    const third = JSON.parse(snapshot.disks[0]!.ref) as VmwareDiskSnapshotRef;
    expect(third.changeId).toMatch(/\/1$/);
    const error = await areas(third, first.changeId!).catch((e: unknown) => e);
    expect(CheckpointInvalidError.isInstance(error)).toBe(true);
    await platform.releaseSnapshot({ hostId: host.id, name: 'drkit-s3' });
  });
});

describe('quiescing (vcsim VMs run no VMware Tools)', () => {
  it('required: QuiesceFailedError before anything is created', async () => {
    const error = await platform
      .createSnapshot({ host, name: 'drkit-q1', quiesce: 'required' })
      .catch((e: unknown) => e);
    expect(QuiesceFailedError.isInstance(error)).toBe(true);
    expect((error as Error).message).toContain('VMware Tools');
    expect(await snapshotNames()).toEqual([]);
  });

  it('preferred: a crash-consistent snapshot that says why', async () => {
    const snapshot = await platform.createSnapshot({ host, name: 'drkit-q2', quiesce: 'preferred' });
    expect(snapshot.consistency).toBe('host');
    expect(snapshot.detail).toContain('VMware Tools are not running');
    await platform.releaseSnapshot({ hostId: host.id, name: 'drkit-q2' });
    expect(await snapshotNames()).toEqual([]);
  });
});

it('the NBD transport (the default) without `nbd.locate` refuses to open a session, naming the setting', async () => {
  const error = await platform.changedBlockReader
    .open({ disk: host.disks[0]!, chunkSize: MiB })
    .catch((e: unknown) => e);
  expect(InvalidSettingsError.isInstance(error)).toBe(true);
  expect((error as InvalidSettingsError).field).toBe('nbd');
});
