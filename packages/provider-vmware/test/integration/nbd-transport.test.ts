// The NBD transport (`transport: 'nbd'`) against vcsim, with nbdkit's **file plugin** serving the vcsim disk's
// `-flat.vmdk` as a stand-in for nbdkit's VDDK plugin (VDDK is VMware's, never shipped nor installed here; with
// it, `locate` would start `nbdkit vddk ... vm=moref=<vm> snapshot=<snapshot> file=<fileName>`, see the README).
// vcsim 0.24.2 takes snapshots without delta disks, so the flat file is what the snapshot saw as long as nothing
// writes between the snapshot and the read. The change ids and changed areas come from the project's own
// QueryChangedDiskAreas in the launcher (scripts/peers/vcsim/cbt.go), not from vcsim. Needs nbdkit from Debian
// (`sh scripts/peers/nbd.sh install`); each session's nbdkit runs on a Unix socket in a temp dir and is stopped by
// its PID when the session closes.
import { execFileSync } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { createBackupEngine, createLocalFolderStore, openRepository, SourceProtocolError } from '@drkit/core';
import { describeChangedBlockReaderContract } from '@drkit/testkit';
import { expect, it } from 'vitest';
import type { VmwareNbdDisk, VmwareNbdExportLocation } from '../../src/index.js';
import { startNbdkit } from './nbd/nbd-servers.js';
import { fillPattern, patternedImage, startVcsimDisk, type VcsimDisk } from './vcsim-disk.js';

function requireNbdkit(): void {
  try {
    execFileSync('nbdkit', ['--version'], { stdio: 'ignore' });
  } catch {
    throw new Error('nbdkit is not installed: `sh scripts/peers/nbd.sh install`');
  }
}

/** The local path of a datastore file of the launcher (its datastores are folders under its TMPDIR). */
async function localFile(root: string, datastorePath: string): Promise<string> {
  const wanted = datastorePath.replace(/^\[[^\]]+\]\s*/, '').replace(/\.vmdk$/, '-flat.vmdk');
  for (const entry of await readdir(root, { recursive: true })) {
    const path = join(root, entry);
    if (relative(root, path).endsWith(wanted)) return path;
  }
  throw new Error(`no ${wanted} under ${root}`);
}

/** A `locate` that starts nbdkit's file plugin on the disk's flat file, and counts the servers still running. */
function fileLocator(getDisk: () => VcsimDisk) {
  const running = new Set<number>();
  const located: VmwareNbdDisk[] = [];
  return {
    running,
    located,
    async locate(disk: VmwareNbdDisk): Promise<VmwareNbdExportLocation> {
      located.push(disk);
      const { vcsim } = getDisk();
      const server = await startNbdkit({
        plugin: ['file', `file=${await localFile(vcsim.dir, disk.fileName!)}`],
        flags: ['-r'],
      });
      running.add(server.pid);
      return {
        ...server.address,
        connections: 2,
        multiConn: 'always',
        release: async () => {
          await server.stop();
          running.delete(server.pid);
        },
      };
    },
  };
}

let current: VcsimDisk | undefined;
const contractLocator = fileLocator(() => current!);

describeChangedBlockReaderContract({
  name: 'vmware (vcsim vCenter mode, NBD transport: nbdkit file plugin standing in for VDDK)',
  capabilities: {
    canWrite: true,
    canDiscard: false,
    canGrow: true,
    canShrink: false,
    exactGranularityBytes: 64 * 1024,
  },
  createFixture: async () => {
    requireNbdkit();
    const disk = await startVcsimDisk({
      cbtPageBytes: 1024 * 1024,
      initial: (capacity) => patternedImage(capacity, [0, 1, 2, 9, 16, 17, 30, 31, 40, 63], 3),
      platform: { transport: 'nbd', nbd: { locate: (d) => contractLocator.locate(d) } },
    });
    current = disk;
    return {
      platform: disk.platform,
      hostId: disk.host.id,
      diskId: disk.disk.id,
      write: (offset, data) => disk.write(offset, data),
      discard: async () => {
        throw new Error('canDiscard is false');
      },
      resize: (capacity) => disk.resize(capacity),
      readAll: () => disk.readAll(),
      countOpenResources: () => contractLocator.running.size,
      cleanup: async () => {
        current = undefined;
        await disk.close();
      },
    };
  },
});

it('through the engine over NBD: a full read of the allocated areas, then only the changed ones, restored byte for byte', async () => {
  requireNbdkit();
  let disk: VcsimDisk | undefined;
  const locator = fileLocator(() => disk!);
  disk = await startVcsimDisk({
    initial: (capacity) => patternedImage(capacity, [3, 4, 50], 17),
    platform: { transport: 'nbd', nbd: { locate: (d) => locator.locate(d) } },
  });
  const { mkdtemp, readFile, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const dir = await mkdtemp(join(tmpdir(), 'drkit-vmware-nbd-e2e-'));
  const repository = await openRepository({
    store: createLocalFolderStore({ path: join(dir, 'repo') }),
    create: true,
  });
  try {
    await using engine = createBackupEngine({ repository, platforms: [disk.platform], chunkSize: 1 << 20 });
    const images: Uint8Array[] = [];
    const points: string[] = [];
    const backup = async () => {
      const [task] = (await engine.backup({ hosts: [disk!.host.id], quiesce: 'none' })).tasks;
      if (task?.status !== 'succeeded')
        throw new Error(`${task?.status}: ${String((task as { error?: unknown }).error)}`);
      images.push(Uint8Array.from(disk!.image));
      points.push(task.result.pointId);
      return task.result;
    };
    const full = await backup();
    expect(full.validity).toEqual({ kind: 'full', reason: 'first-backup' });
    expect(full.bytesRead).toBe(3 * 64 * 1024);
    fillPattern(disk.image, 4 * 64 * 1024 + 1000, 3000, 99);
    fillPattern(disk.image, 60 * 64 * 1024, 64 * 1024, 98);
    await disk.upload();
    const incremental = await backup();
    expect(incremental.validity).toEqual({ kind: 'exact' });
    expect(incremental.bytesRead).toBe(2 * 64 * 1024);
    // One nbdkit per disk task, told the snapshot and file VDDK would need; every one stopped at the session's end.
    expect(locator.located).toHaveLength(2);
    expect(locator.located[0]).toMatchObject({
      deviceKey: expect.any(Number),
      capacityBytes: disk.capacityBytes,
      // The VM's runtime.host: the key of the per-host connection budget.
      esxiHost: expect.stringMatching(/^host-\d+$/),
    });
    expect(locator.located[0]!.snapshot).not.toBe(locator.located[1]!.snapshot);
    expect(locator.running.size).toBe(0);
    for (const [i, pointId] of points.entries()) {
      const path = join(dir, `${i}.img`);
      await repository.restore(pointId, { path });
      expect(Buffer.from(await readFile(path)).equals(Buffer.from(images[i]!)), `point ${i}`).toBe(true);
    }
  } finally {
    await repository.close();
    await disk.close();
    await rm(dir, { recursive: true, force: true });
  }
}, 120_000);

it('a full read without change tracking over NBD skips what the block status says reads as zeros (sparse file)', async () => {
  requireNbdkit();
  const { mkdtemp, open, readFile, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const BLOCK = 64 * 1024;
  const written = [1, 2, 7, 40];
  const dir = await mkdtemp(join(tmpdir(), 'drkit-vmware-nbd-sparse-'));
  const running = new Set<number>();
  let disk: VcsimDisk | undefined;
  /** A sparse copy of the disk (only the written blocks allocated), served by nbdkit's file plugin. */
  const locate = async (located: VmwareNbdDisk): Promise<VmwareNbdExportLocation> => {
    const path = join(dir, `${located.snapshot}.img`);
    const file = await open(path, 'w');
    await file.truncate(located.capacityBytes);
    for (const block of written) {
      await file.write(disk!.image.subarray(block * BLOCK, (block + 1) * BLOCK), 0, BLOCK, block * BLOCK);
    }
    await file.close();
    const server = await startNbdkit({ plugin: ['file', `file=${path}`], flags: ['-r'] });
    running.add(server.pid);
    return {
      ...server.address,
      connections: 2,
      multiConn: 'always',
      release: async () => {
        await server.stop();
        running.delete(server.pid);
      },
    };
  };
  disk = await startVcsimDisk({
    changeTracking: false,
    initial: (capacity) => patternedImage(capacity, written, 23),
    platform: { transport: 'nbd', nbd: { locate } },
  });
  const repository = await openRepository({
    store: createLocalFolderStore({ path: join(dir, 'repo') }),
    create: true,
  });
  try {
    await using engine = createBackupEngine({ repository, platforms: [disk.platform], chunkSize: 1 << 20 });
    const [task] = (await engine.backup({ hosts: [disk.host.id], quiesce: 'none' })).tasks;
    if (task?.status !== 'succeeded') {
      throw new Error(`${task?.status}: ${String((task as { error?: unknown }).error)}`);
    }
    // No change id (tracking off): every byte is asked for, but the holes of the sparse file read as zeros.
    expect(task.result.validity).toMatchObject({ kind: 'full', reason: 'first-backup' });
    expect(task.result.bytesRead).toBe(written.length * BLOCK);
    expect(running.size).toBe(0);
    const path = join(dir, 'restored.img');
    await repository.restore(task.result.pointId, { path });
    expect(Buffer.from(await readFile(path)).equals(Buffer.from(disk.image))).toBe(true);
  } finally {
    await repository.close();
    await disk.close();
    await rm(dir, { recursive: true, force: true });
  }
}, 120_000);

it('an export of another size than the disk is refused (SourceProtocolError) and released', async () => {
  requireNbdkit();
  let released = 0;
  const disk = await startVcsimDisk({
    platform: {
      transport: 'nbd',
      nbd: {
        locate: async () => {
          const server = await startNbdkit({ plugin: ['memory', 'size=1M'], flags: ['-r'] });
          return {
            ...server.address,
            release: async () => {
              released += 1;
              await server.stop();
            },
          };
        },
      },
    },
  });
  try {
    const snapshot = await disk.platform.createSnapshot({
      host: disk.host,
      name: 'drkit-size',
      quiesce: 'none',
    });
    const error = await disk.platform.changedBlockReader
      .open({ disk: disk.disk, snapshot, diskSnapshot: snapshot.disks[0]!, chunkSize: 1 << 20 })
      .catch((e: unknown) => e);
    expect(SourceProtocolError.isInstance(error), String(error)).toBe(true);
    expect(released).toBe(1);
    await disk.platform.releaseSnapshot({ hostId: disk.host.id, name: 'drkit-size' });
  } finally {
    await disk.close();
  }
});
