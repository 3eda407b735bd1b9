// What goes wrong in a backup through the engine against vcsim (govmomi 0.24.2 with the project's launcher), over
// HTTPS datastore ranges: the session terminated between the listing and the reading (one re-login, the backup
// completes), a snapshot removal that fails (the launcher's `-fail-remove-snapshot`, a project extension answering
// TaskInProgress as a vCenter does while another task runs on the VM: the ledger keeps the entry, reconcile()
// removes the snapshot later), quiesce `required` on a VM without VMware Tools (vcsim's VMs run none), and a wrong
// password. Change ids and changed areas are the launcher's extension (scripts/peers/vcsim/cbt.go), not vcsim's.
import { AuthenticationError, createBackupEngine, QuiesceFailedError } from '@drkit/core';
import { expect, it, vi } from 'vitest';
import type { VmwarePlatform } from '../../src/index.js';
import { child, children, type XmlElement } from '../../src/soap/xml-tree.js';
import { fillPattern, patternedImage, type VcsimDisk } from './vcsim-disk.js';
import { capturingLogger, describeError, platformOn, useEngineFixture } from './vcsim-fixtures.js';

vi.setConfig({ testTimeout: 120_000 });

const MiB = 1024 * 1024;
const BLOCK = 64 * 1024;

const fx = useEngineFixture('drkit-vmware-failures-');
const { succeeded, failedWith, expectRestores } = fx;

/** The names of the VM's snapshots, as vSphere lists them. */
async function snapshotNames(d: VcsimDisk): Promise<string[]> {
  const vm = { type: 'VirtualMachine', value: d.host.attributes!['vmware.moref']! };
  const info = await d.admin.property(vm, 'snapshot');
  const names: string[] = [];
  const walk = (trees: readonly XmlElement[]) => {
    for (const tree of trees) {
      names.push(child(tree, 'name')!.text.trim());
      walk(children(tree, 'childSnapshotList'));
    }
  };
  if (info) walk(children(info, 'rootSnapshotList'));
  return names;
}

/** The platform with `beforeRead` run each time a disk is opened for reading (after the listing and the snapshot). */
function withBeforeRead(platform: VmwarePlatform, beforeRead: () => Promise<void>): VmwarePlatform {
  const reader = platform.changedBlockReader;
  return {
    ...platform,
    changedBlockReader: {
      ...reader,
      open: async (options) => {
        await beforeRead();
        return reader.open(options);
      },
    },
  };
}

it('a session terminated between the listing and the reading: one re-login, and the backup completes', async () => {
  const logger = capturingLogger();
  const disk = await fx.startDisk({
    initial: (capacity) => patternedImage(capacity, [0, 9, 30], 41),
    platform: { logger },
  });
  const { host, admin } = disk;
  await admin.session.login();
  let terminated = 0;
  const platform = withBeforeRead(disk.platform, async () => {
    terminated += await admin.terminateOtherSessions();
  });
  await using engine = createBackupEngine({
    repository: fx.repository,
    platforms: [platform],
    chunkSize: MiB,
  });
  const opened = () => logger.lines.filter((l) => l.message === 'vSphere session opened').length;
  const before = opened();

  const full = succeeded(await engine.backup({ hosts: [host.id], quiesce: 'none' }));
  expect(terminated).toBe(1); // the platform's own session, killed after the snapshot was taken
  expect(full.validity).toEqual({ kind: 'full', reason: 'first-backup' });
  expect(full.bytesRead).toBe(3 * BLOCK);
  expect(opened() - before).toBe(1); // exactly one re-login
  expect(logger.lines.some((l) => l.message.includes('logging in again'))).toBe(true);
  await expectRestores(full.pointId, disk.image);

  // The incremental after another termination still reads only the changed area, against the new session.
  fillPattern(disk.image, 9 * BLOCK, BLOCK, 42);
  await disk.upload();
  const next = succeeded(await engine.backup({ hosts: [host.id], quiesce: 'none' }));
  expect(terminated).toBe(2);
  expect(next.validity).toEqual({ kind: 'exact' });
  expect(next.bytesRead).toBe(BLOCK);
  expect(opened() - before).toBe(2);
  await expectRestores(next.pointId, disk.image);
  expect(await snapshotNames(disk)).toEqual([]);
  expect(logger.text()).not.toContain(disk.vcsim.password);
});

it('a snapshot removal that fails (TaskInProgress) leaves its ledger entry, and reconcile() removes the snapshot later', async () => {
  const disk = await fx.startDisk({
    failRemoveSnapshot: 1,
    initial: (capacity) => patternedImage(capacity, [3, 4], 51),
  });
  const { host } = disk;
  await using engine = createBackupEngine({
    repository: fx.repository,
    platforms: [disk.platform],
    chunkSize: MiB,
  });

  const result = await engine.backup({ hosts: [host.id], quiesce: 'none' });
  const full = succeeded(result); // the point is whole: the release failure changes no task's outcome
  expect(result.releaseFailures).toHaveLength(1);
  const [failure] = result.releaseFailures;
  expect(describeError(failure!.error)).toContain('TaskInProgress');
  expect(await snapshotNames(disk)).toEqual([failure!.snapshot]);
  const entries = await fx.repository.ledger.list();
  expect(entries.map((e) => ({ id: e.id, name: e.name, state: e.state }))).toEqual([
    { id: failure!.entryId, name: failure!.snapshot, state: 'pending' },
  ]);
  await expectRestores(full.pointId, disk.image);

  const report = await engine.reconcile();
  expect(report.failed).toEqual([]);
  expect(report.released.map((e) => e.name)).toEqual([failure!.snapshot]);
  expect(await snapshotNames(disk)).toEqual([]);
  expect(await fx.repository.ledger.list()).toEqual([]);

  // The lineage goes on: VMware's base is the change id in the point, not the snapshot reconcile removed.
  fillPattern(disk.image, 4 * BLOCK, 512, 52);
  await disk.upload();
  const next = succeeded(await engine.backup({ hosts: [host.id], quiesce: 'none' }));
  expect(next.validity).toEqual({ kind: 'exact' });
  expect(next.bytesRead).toBe(BLOCK);
  await expectRestores(next.pointId, disk.image);
});

it('quiesce required on a VM without VMware Tools: QuiesceFailedError, no snapshot left, nothing committed', async () => {
  const disk = await fx.startDisk({ initial: (capacity) => patternedImage(capacity, [1], 61) });
  const { host } = disk;
  await using engine = createBackupEngine({
    repository: fx.repository,
    platforms: [disk.platform],
    chunkSize: MiB,
  });

  const result = await engine.backup({ hosts: [host.id], quiesce: 'required' });
  const error = failedWith(result);
  expect(QuiesceFailedError.isInstance(error), describeError(error)).toBe(true);
  expect((error as Error).message).toContain('VMware Tools');
  expect(result.releaseFailures).toEqual([]);
  expect(await snapshotNames(disk)).toEqual([]);
  expect(await fx.repository.points()).toEqual([]);
  expect(await fx.repository.ledger.list()).toEqual([]);

  // `preferred` on the same VM backs up crash-consistently instead.
  const preferred = succeeded(await engine.backup({ hosts: [host.id], quiesce: 'preferred' }));
  expect(preferred.bytesRead).toBe(BLOCK);
  await expectRestores(preferred.pointId, disk.image);
});

it('a wrong password: the job is refused with AuthenticationError (InvalidLogin), nothing snapshotted, nothing committed, no password anywhere', async () => {
  const disk = await fx.startDisk({ initial: (capacity) => patternedImage(capacity, [2], 71) });
  const { host } = disk;
  const wrong = 'not-the-password-17';
  const logger = capturingLogger();
  await using platform = platformOn(disk.vcsim, { transport: 'https', password: wrong, logger });
  await using engine = createBackupEngine({
    repository: fx.repository,
    platforms: [platform],
    chunkSize: MiB,
    logger,
  });

  // The engine looks the host up before it plans a task: the job itself is refused, before any snapshot.
  const outcome = await engine.backup({ hosts: [host.id], quiesce: 'none' }).then(
    (result) => new Error(`the job was not refused: ${JSON.stringify(result.tasks)}`),
    (e: unknown) => e,
  );
  expect(AuthenticationError.isInstance(outcome), describeError(outcome)).toBe(true);
  expect((outcome as Error).message).toContain('InvalidLogin');
  expect((outcome as AuthenticationError).retryable).toBe(false);
  expect(await snapshotNames(disk)).toEqual([]);
  expect(await fx.repository.points()).toEqual([]);
  expect(await fx.repository.ledger.list()).toEqual([]);
  for (const text of [describeError(outcome), logger.text()]) expect(text).not.toContain(wrong);
});
