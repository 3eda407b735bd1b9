// The per-ESXi-host connection budget against vcsim (HTTPS datastore ranges): the host is the VM's runtime.host as
// vcsim reports it, and two read sessions of disks on that host share one connection (limits.connectionsPerHost
// 1): the second waits, fails with VmwareConnectionLimitError when its deadline passes first, and opens once the
// first closes; both read the disk's bytes.
import { expect, it, vi } from 'vitest';
import { VmwareConnectionLimitError } from '../../src/index.js';
import { patternedImage } from './vcsim-disk.js';
import { useEngineFixture } from './vcsim-fixtures.js';

vi.setConfig({ testTimeout: 120_000 });

const KiB = 1024;
const MiB = 1024 * KiB;

const fx = useEngineFixture('drkit-vmware-limits-');

it('two sessions on one host with connectionsPerHost 1: the second waits for the first, or fails with its deadline', async () => {
  const disk = await fx.startDisk({
    initial: (capacity) => patternedImage(capacity, [0, 3, 63], 5),
    platform: { limits: { connectionsPerHost: 1 }, maxConcurrentReads: 4 },
  });
  const { platform, host } = disk;
  const snapshot = await platform.createSnapshot({ host, name: 'drkit-limits', quiesce: 'none' });
  try {
    const diskSnapshot = snapshot.disks.find((entry) => entry.diskId === disk.disk.id)!;
    const open = (deadline?: number) =>
      platform.changedBlockReader.open({
        disk: disk.disk,
        snapshot,
        diskSnapshot,
        chunkSize: MiB,
        ...(deadline === undefined ? {} : { deadline }),
      });
    const first = await open();
    // A deadline well past the few SOAP calls of opening: what ends the wait is the budget, not vcsim's speed.
    const refused = await open(Date.now() + 3000).catch((e: unknown) => e);
    expect(VmwareConnectionLimitError.isInstance(refused)).toBe(true);
    expect((refused as VmwareConnectionLimitError).esxiHost).toMatch(/^host-\d+$|^ha-host$/);
    let secondOpened = false;
    const second = open().then((session) => {
      secondOpened = true;
      return session;
    });
    if (first.mode !== 'extents') throw new Error('an extents reader');
    const reads = await Promise.all([0, 1, 2, 3].map((i) => first.read({ offset: i * MiB, length: MiB })));
    expect(Buffer.concat(reads.map((r) => r.data)).equals(Buffer.from(disk.image))).toBe(true);
    expect(secondOpened).toBe(false);
    await first.close();
    const next = await second;
    if (next.mode !== 'extents') throw new Error('an extents reader');
    const again = await next.read({ offset: 3 * 64 * KiB, length: 64 * KiB });
    expect(Buffer.from(again.data).equals(Buffer.from(disk.image.subarray(3 * 64 * KiB, 4 * 64 * KiB)))).toBe(
      true,
    );
    await next.close();
  } finally {
    await platform.releaseSnapshot({ hostId: host.id, name: 'drkit-limits' });
  }
});
