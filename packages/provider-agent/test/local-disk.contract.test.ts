import { mkdtemp, open, readFile, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeChangedBlockReaderContract, writeDiskImage } from '@drkit/testkit';
import { createLocalDiskPlatform } from '../src/index.js';
import { canPunchHoles, openFileDescriptorCount, punchHole } from './local-disk-helpers.js';

/** 6 MiB and a bit: several 1 MiB read pieces, holes, and room to shrink by the suite's 1 MiB + 4 KiB step. */
const SIZE = 6 * 1024 * 1024 + 3 * 4096 + 123;

describeChangedBlockReaderContract({
  name: 'local disk (sparse image file)',
  capabilities: {
    canWrite: true,
    // A discard punches a hole (fallocate), which must come back as a zero change.
    canDiscard: canPunchHoles,
    canGrow: true,
    canShrink: true,
  },
  createFixture: async () => {
    const directory = await mkdtemp(join(tmpdir(), 'drkit-local-contract-'));
    const path = join(directory, 'disk.img');
    await writeDiskImage(path, { size: SIZE, seed: 'local-contract', maxRunBytes: 512 * 1024 });
    const platform = createLocalDiskPlatform({
      id: 'local-contract',
      hostId: 'contract-host',
      disks: [{ path, id: 'contract-disk' }],
      readSizeBytes: 1024 * 1024,
    });
    const fdCount = openFileDescriptorCount();
    return {
      platform,
      hostId: 'contract-host',
      diskId: 'contract-disk',
      async write(offset, data) {
        const handle = await open(path, 'r+');
        try {
          for (let done = 0; done < data.length; ) {
            done += (await handle.write(data, done, data.length - done, offset + done)).bytesWritten;
          }
        } finally {
          await handle.close();
        }
      },
      discard: (offset, length) => punchHole(path, offset, length),
      resize: (capacityBytes) => truncate(path, capacityBytes),
      readAll: async () => new Uint8Array(await readFile(path)),
      ...(fdCount === undefined ? {} : { countOpenResources: () => openFileDescriptorCount()! }),
      cleanup: () => rm(directory, { recursive: true, force: true }),
    };
  },
});
