// How many chunk reads a restore and a verify keep in flight: enough for the chunk workers, and as many as the
// store says it serves at once (Store.readConcurrency: an S3 store's socket pool), never more than MAX_READ_WINDOW.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openRepository, type Store } from '../src/index.js';
import { ChunkWorkerPool } from '../src/internal.js';
import { MAX_READ_WINDOW } from '../src/repository/repository-context.js';
import { backupImage, diskImage } from '../src/repository/repository-fixture.js';
import { countingStore } from './counting-store.js';

/** The counting store, with `readConcurrency` and a record of the chunk reads in flight at most. */
function windowedStore(readConcurrency: number | undefined) {
  const inner = countingStore(true);
  let inFlight = 0;
  const seen = { max: 0 };
  const store: Store = {
    ...inner,
    ...(readConcurrency === undefined ? {} : { readConcurrency }),
    async get(key, options) {
      if (!key.startsWith('chunks/')) return inner.get(key, options);
      inFlight++;
      seen.max = Math.max(seen.max, inFlight);
      try {
        // Answered on a later turn of the event loop: every read the restore starts at once is in flight together.
        await new Promise((resolve) => setImmediate(resolve));
        return await inner.get(key, options);
      } finally {
        inFlight--;
      }
    },
  };
  return { store, seen };
}

describe('chunk reads in flight in restore and verify', () => {
  const folders: string[] = [];
  afterEach(async () => {
    for (const folder of folders.splice(0)) await rm(folder, { recursive: true, force: true });
  });

  it.each([
    ['a store that does not say (a local folder)', undefined, 4],
    ['an S3 store of 16 sockets', 16, 16],
    ['a store asking for more than the cap', 1000, MAX_READ_WINDOW],
  ])('%s: %s → at most the window in flight, reached', async (_name, readConcurrency, expected) => {
    const { store, seen } = windowedStore(readConcurrency);
    const workers = new ChunkWorkerPool(2);
    const repository = await openRepository({ store, create: true, workers });
    try {
      // 3 of every 4 chunks hold data: 60 reads, more than any window.
      const image = diskImage(80, 0, 31);
      const point = await backupImage(repository, workers, image);
      const folder = await mkdtemp(join(tmpdir(), 'drkit-read-window-'));
      folders.push(folder);
      seen.max = 0;
      await repository.restore(point.id, { path: join(folder, 'restored.img') });
      expect(Buffer.from(await readFile(join(folder, 'restored.img'))).equals(image)).toBe(true);
      expect(seen.max).toBe(expected);
      seen.max = 0;
      const report = await repository.verify();
      expect([report.ok, report.chunksChecked]).toEqual([true, 60]);
      expect(seen.max).toBe(expected);
    } finally {
      await repository.close();
      await workers.close();
    }
  });
});
