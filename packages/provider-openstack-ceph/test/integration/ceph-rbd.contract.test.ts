// The shared ChangedBlockReader contract, run against createCephRbdPlatform on the real Ceph cluster of the
// global setup, in both incremental modes. The fixture changes the image behind drkit's back through librbd
// (python3-rbd): writes, discards and resizes to the byte.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeChangedBlockReaderContract } from '@drkit/testkit';
import { afterAll } from 'vitest';
import { createCephRbdPlatform } from '../../src/index.js';
import {
  backupClusterOptions,
  cephCluster,
  exportBytes,
  openRbdResources,
  rbdHelper,
  uniqueImageName,
} from './ceph-test-cluster.js';

// A temp dir of this test file alone, so that counting the rbd calls' temp folders sees only ours.
const privateTmp = mkdtempSync(join(tmpdir(), 'drkit-ceph-contract-'));
process.env.TMPDIR = privateTmp;
afterAll(() => rmSync(privateTmp, { recursive: true, force: true }));

/** 10 MiB and a bit: three RBD objects, the last one partial; room to shrink by the suite's 1 MiB + 4 KiB. */
const SIZE = 10 * 1024 * 1024 + 12_345;

for (const incrementalMode of ['exact', 'fast'] as const) {
  describeChangedBlockReaderContract({
    name: `ceph rbd, ${incrementalMode} mode (Ceph 16 memstore, client.backup)`,
    capabilities: { canWrite: true, canDiscard: true, canGrow: true, canShrink: true },
    timeoutMs: 120_000,
    createFixture: async () => {
      const cluster = cephCluster();
      const image = uniqueImageName(`contract-${incrementalMode}`);
      await rbdHelper(cluster, [
        { op: 'create', image, size: SIZE },
        // Data in each object, holes between, and the last bytes.
        { op: 'fill', image, offset: 0, length: 1_500_000, seed: 1 },
        { op: 'fill', image, offset: 5 * 1024 * 1024 - 7, length: 300_000, seed: 2 },
        { op: 'fill', image, offset: SIZE - 70_000, length: 70_000, seed: 3 },
      ]);
      const platform = createCephRbdPlatform({
        id: `ceph-contract-${incrementalMode}`,
        clusters: [backupClusterOptions(cluster, { incrementalMode })],
        hosts: [{ id: 'contract-host', name: 'contract-host', images: [`${cluster.pool}/${image}`] }],
      });
      return {
        platform,
        hostId: 'contract-host',
        diskId: `test/${cluster.pool}/${image}`,
        write: async (offset, data) => {
          await rbdHelper(cluster, [{ op: 'write', image, offset, data }]);
        },
        discard: async (offset, length) => {
          await rbdHelper(cluster, [{ op: 'discard', image, offset, length }]);
        },
        resize: async (capacityBytes) => {
          await rbdHelper(cluster, [{ op: 'resize', image, size: capacityBytes }]);
        },
        readAll: () => exportBytes(cluster, image),
        countOpenResources: () => openRbdResources(),
        cleanup: async () => {
          await rbdHelper(cluster, [{ op: 'remove', image }]);
        },
      };
    },
  });
}
