// The shared ChangedBlockReader contract, against the AWS emulator.
import { describeChangedBlockReaderContract } from '@drkit/testkit';
import { type AwsTestBed, GIB, pattern, startAwsTestBed } from './aws-test-setup.js';

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
