// The shared v2 contract suite against vcsim (govmomi 0.24.2 with the project's launcher), in vCenter and in ESXi
// mode, over HTTPS datastore ranges. The change ids and changed areas come from the project's own
// QueryChangedDiskAreas in the launcher (scripts/peers/vcsim/cbt.go, written from the vSphere API reference:
// 64 KiB block hashes remembered per change id, `*` = allocated areas), not from vcsim; snapshots, the datastore
// file service (GET with Range, PUT) and the inventory are vcsim's own. A fresh launcher per test (1-2 s).
import { describeChangedBlockReaderContract } from '@drkit/testkit';
import { patternedImage, startVcsimDisk } from './vcsim-disk.js';

for (const mode of ['vpx', 'esx'] as const) {
  describeChangedBlockReaderContract({
    name: `vmware (vcsim ${mode === 'vpx' ? 'vCenter' : 'ESXi'} mode, HTTPS datastore ranges)`,
    capabilities: {
      canWrite: true,
      // Datastore PUT writes bytes; it cannot trim. vSphere grows disks (ReconfigVM_Task), never shrinks them.
      canDiscard: false,
      canGrow: true,
      canShrink: false,
      // The launcher's change tracking compares 64 KiB blocks.
      exactGranularityBytes: 64 * 1024,
    },
    timeoutMs: 60_000,
    createFixture: async () => {
      const disk = await startVcsimDisk({
        mode,
        // 1 MiB per QueryChangedDiskAreas answer: a 4 MiB disk's list comes in four pages.
        cbtPageBytes: 1024 * 1024,
        initial: (capacity) => patternedImage(capacity, [0, 1, 2, 9, 16, 17, 30, 31, 40, 63], 3),
      });
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
        cleanup: () => disk.close(),
      };
    },
  });
}
