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

/** The fixture's RBD object size: 2^22 = 4 MiB, the Ceph and Cinder default, set explicitly at create. */
const OBJECT_ORDER = 22;
const OBJECT_SIZE = 2 ** OBJECT_ORDER;

/**
 * Nine RBD objects, the last one partial; room to shrink by the suite's 1 MiB + 4 KiB. Enough objects that the
 * suite's writes leave most of them untouched: with the granularity below, the exact-incremental checks still rule
 * out data in every object nothing was written to (with three objects they would all be touched, and the checks
 * would allow any data anywhere).
 */
const SIZE = 8 * OBJECT_SIZE + 12_345;

/**
 * How coarse an exact diff of RBD is: one object. `rbd export-diff --from-snap` takes its extents from RADOS's
 * clone overlap, which covers only the extent an object had at the base snapshot. A write inside that extent is
 * reported to the byte; a write past the object's end is reported from the object's end at the base (its start,
 * when the object did not exist) to the end of the write, the bytes in between being zeros that read as zeros at
 * both snapshots. Measured on Ceph 16.2.15: after a 1-byte write at 2 099 621 into an object that held
 * [0, 1 500 000), `rbd diff --from-snap` and export-diff report [1 500 000, 2 099 622) (`rados listsnaps`: the
 * clone has size 1 500 000 and overlap [0~1500000], the head 2 099 622). Never past the object: exact to within
 * one object, which `exact-diff-extent.test.ts` pins on the real cluster.
 */
const EXACT_GRANULARITY_BYTES = OBJECT_SIZE;

for (const incrementalMode of ['exact', 'fast'] as const) {
  describeChangedBlockReaderContract({
    name: `ceph rbd, ${incrementalMode} mode (Ceph 16 memstore, client.backup)`,
    capabilities: {
      canWrite: true,
      canDiscard: true,
      canGrow: true,
      canShrink: true,
      exactGranularityBytes: EXACT_GRANULARITY_BYTES,
    },
    timeoutMs: 120_000,
    createFixture: async () => {
      const cluster = cephCluster();
      const image = uniqueImageName(`contract-${incrementalMode}`);
      await rbdHelper(cluster, [
        { op: 'create', image, size: SIZE, order: OBJECT_ORDER },
        // Data in the first two objects and the last one, holes between, and the last bytes.
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
