// The shared ChangedBlockReader contract, against the AWS emulator.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describeChangedBlockReaderContract } from '@drkit/testkit';
import { describe } from 'vitest';
import { type AwsTestBed, GIB, pattern, startAwsTestBed } from './aws-test-setup.js';

// The contract suite in this tree may still be the spec v1 one (stream sessions only, `specificationVersion:
// 'v1'`): it cannot drive a list-then-read reader. Until the v2 suite lands this file says so and skips; remove
// the guard then. (A text probe of the built suite: the v1 suite names itself in its first test.)
const suiteSource = readFileSync(fileURLToPath(import.meta.resolve('@drkit/testkit')), 'utf8');
const suiteIsV1 = suiteSource.includes('implements the v1 specification');

describe.skipIf(suiteIsV1)('the v2 contract suite (skipped while the v1 suite is in the tree)', () => {
  describeChangedBlockReaderContract({
    name: 'aws (EBS direct APIs, emulator)',
    capabilities: { canWrite: true, canDiscard: true, canGrow: true, canShrink: false, resizeStepBytes: GIB },
    timeoutMs: 120_000,
    createFixture: async () => {
      const bed: AwsTestBed = await startAwsTestBed();
      const { emulator } = bed;
      const volumeId = emulator.createVolume({ sizeGiB: 1 });
      for (const index of [0, 1, 17, 1000, 2047])
        emulator.writeVolume(volumeId, index * 524_288, pattern(index));
      const hostId = emulator.createInstance({ name: 'contract', volumes: [{ volumeId }] });
      const platform = bed.platform({ maxConcurrentReads: 8 });
      return {
        platform,
        hostId,
        diskId: volumeId,
        write: async (offset, data) => emulator.writeVolume(volumeId, offset, data),
        discard: async (offset, length) => emulator.discardVolume(volumeId, offset, length),
        resize: async (capacityBytes) => {
          if (capacityBytes % GIB !== 0) throw new Error('EBS volumes are sized in GiB');
          emulator.resizeVolume(volumeId, capacityBytes / GIB);
        },
        readAll: async () => ({
          sha256: emulator.volumeSha256(volumeId),
          capacityBytes: emulator.volumeCapacityBytes(volumeId),
        }),
        countOpenResources: () => emulator.stats().openBodies,
        cleanup: () => bed.close(),
      };
    },
  });
});
