import { open, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InvalidArgumentError, RepositoryCorruptError } from '../errors/drkit-error.js';
import { SESSION_LIMITS } from './backup-session.js';
import { SEGMENT_CHUNKS } from './chunk-index.js';
import { createLocalFolderStore } from './local-folder-store.js';
import { referencedChunkIds } from './referenced-chunks.js';
import { openRepository } from './repository.js';
import { loadRepositoryConfig } from './repository-config.js';
import { RepositoryContext } from './repository-context.js';
import {
  backupImage,
  createRepositoryFixture,
  diskImage,
  newPoint,
  type RepositoryFixture,
  randomish,
  rejection,
  TEST_LINEAGE,
} from './repository-fixture.js';
import type { Store } from './store.js';
import type { Repository } from './types.js';

/** A store that counts gets and puts by the first segment of their key. */
function countingStore(inner: Store) {
  const gets = new Map<string, number>();
  const puts = new Map<string, number>();
  const bump = (map: Map<string, number>, key: string) => {
    const kind = key.split('/')[0]!;
    map.set(kind, (map.get(kind) ?? 0) + 1);
  };
  const store: Store = Object.create(inner);
  store.get = (key, options) => {
    bump(gets, key);
    return inner.get(key, options);
  };
  store.put = (key, bytes, options) => {
    bump(puts, key);
    return inner.put(key, bytes, options);
  };
  return {
    store,
    gets,
    puts,
    reset() {
      gets.clear();
      puts.clear();
    },
  };
}

async function flipBit(path: string, at: number, bit = 0): Promise<void> {
  const handle = await open(path, 'r+');
  const byte = Buffer.alloc(1);
  await handle.read(byte, 0, 1, at);
  byte[0]! ^= 1 << bit;
  await handle.write(byte, 0, 1, at);
  await handle.close();
}

// The tests back up a few MiB through the chunk worker pool into a folder store that fsyncs every blob.
describe('repository format v2', { timeout: 60_000 }, () => {
  let fixture: RepositoryFixture;
  beforeEach(async () => {
    fixture = await createRepositoryFixture();
  });
  afterEach(() => fixture.cleanup());

  it('an incremental of a 4 TiB sparse disk costs what its 16 changed chunks cost', async () => {
    const chunkSize = 256 * 1024;
    const capacityBytes = 4 * 2 ** 40;
    const chunkCount = capacityBytes / chunkSize; // 2^24 positions, 2^14 segments
    const counted = countingStore(createLocalFolderStore({ path: fixture.folder }));
    await using repository = await openRepository({ store: counted.store, workers: fixture.workers });
    const chunk = async (seed: number) => {
      const encoded = await fixture.workers.encode(randomish(chunkSize, seed));
      if (encoded.kind !== 'data') throw new Error('random data is data');
      return encoded;
    };
    const put = async (session: Awaited<ReturnType<Repository['beginBackup']>>, seed: number) => {
      const encoded = await chunk(seed);
      await session.putChunk({ ...encoded, plainLength: chunkSize });
      return encoded.hash;
    };
    const stride = chunkCount / 64;
    // Full backup: 64 data chunks spread over the disk, everything else never set (zeros). The session may
    // remember only 8 ids: it forgets those of sealed segments, whatever the number of chunks written.
    const limit = SESSION_LIMITS.knownIds;
    SESSION_LIMITS.knownIds = 8;
    const full = await repository.beginBackup(TEST_LINEAGE);
    const index = full.createIndex({ capacityBytes, chunkSize });
    let remembered = 0;
    try {
      for (let r = 0; r < 64; r++) {
        index.setId(r * stride, await put(full, r));
        await index.flushBelow(r * stride + 1);
        remembered = Math.max(remembered, (full as unknown as { rememberedIds: number }).rememberedIds);
      }
    } finally {
      SESSION_LIMITS.knownIds = limit;
    }
    expect(remembered).toBeLessThanOrEqual(9);
    const stats = {
      bytesRead: 64 * chunkSize,
      bytesWritten: 64 * chunkSize,
      bytesSkippedUnchanged: 0,
      bytesDeduplicated: 0,
      bytesZero: capacityBytes - 64 * chunkSize,
      seconds: 1,
    };
    const first = await full.commit(newPoint(capacityBytes, { chunkSize, stats }), index);
    expect(first.stats).toMatchObject({ chunksWritten: 64, segmentsWritten: 64 });
    expect(counted.puts.get('segments')).toBe(64);

    // Incremental: 8 chunks change inside data segments, 8 land in holes.
    counted.reset();
    const incr = await repository.beginBackup(TEST_LINEAGE);
    const adopted = await incr.adoptPoint(first.id);
    const next = incr.createIndex({ capacityBytes, chunkSize, base: adopted.index });
    const changed: number[] = [];
    for (let w = 0; w < 16; w++) changed.push(w < 8 ? w * 8 * stride + 1 : w * 4 * stride + stride / 2);
    changed.sort((a, b) => a - b);
    for (const [w, position] of changed.entries()) {
      next.setId(position, await put(incr, 1000 + w));
      await next.flushBelow(position + 1);
    }
    const second = await incr.commit(
      newPoint(capacityBytes, {
        chunkSize,
        parentId: first.id,
        stats: {
          ...stats,
          bytesWritten: 16 * chunkSize,
          bytesSkippedUnchanged: capacityBytes - 16 * chunkSize,
          bytesZero: 0,
        },
      }),
      next,
    );
    // Reads: the parent's manifest and metadata, and only the 8 parent segments holding a change.
    expect(counted.gets.get('segments')).toBe(8);
    expect(counted.gets.get('indexes')).toBe(1);
    // Writes: 16 chunks, the 16 segments containing them, one manifest, one metadata blob.
    expect(counted.puts.get('chunks')).toBe(16);
    expect(counted.puts.get('segments')).toBe(16);
    expect(counted.puts.get('indexes')).toBe(1);
    expect(counted.puts.get('points')).toBe(1);
    expect(second.stats).toMatchObject({ chunksWritten: 16, segmentsWritten: 16 });
    const { bytesWritten, bytesDeduplicated, bytesSkippedUnchanged, bytesZero } = second.stats;
    expect(bytesWritten + bytesDeduplicated + bytesSkippedUnchanged + bytesZero).toBe(capacityBytes);

    // The new point names exactly the 64 + 16 - 8 overwritten... none: the 8 changes in data segments are
    // beside the old chunks, so 80 chunk ids, read segment by segment.
    const context = new RepositoryContext(
      counted.store,
      (await loadRepositoryConfig(counted.store, false, undefined)).config,
      600_000,
      fixture.workers,
    );
    let referenced = 0;
    for await (const id of referencedChunkIds(context, second, undefined)) {
      expect(id.byteLength).toBe(32);
      referenced++;
    }
    expect(referenced).toBe(80);
    await context.close();
  });

  it('commit refuses stats that do not add up to the capacity', async () => {
    const image = diskImage(2, 0, 1);
    const error = await rejection(
      backupImage(fixture.repository, fixture.workers, image, {
        stats: {
          bytesRead: 0,
          bytesWritten: 1,
          bytesSkippedUnchanged: 0,
          bytesDeduplicated: 0,
          bytesZero: 0,
          seconds: 0,
        },
      }),
    );
    expect(InvalidArgumentError.isInstance(error)).toBe(true);
    expect((error as Error).message).toMatch(/capacity/);
  });

  it('a flipped bit in the parentId, validity or stats of point metadata is a typed error naming the blob', async () => {
    const image = diskImage(3, 100, 2);
    const parent = await backupImage(fixture.repository, fixture.workers, image);
    for (const field of ['"parentId"', '"validity"', '"bytesZero"']) {
      const point = await backupImage(fixture.repository, fixture.workers, image, { parentId: parent.id });
      const path = join(fixture.folder, 'points', `${point.id}.json`);
      const text = await readFile(path, 'latin1');
      // A bit of the value after the field's name (a digit or a letter of it).
      await flipBit(path, text.indexOf(field) + field.length + 4);
      const reader = await fixture.reopen();
      const error = await rejection(reader.point(point.id));
      expect(RepositoryCorruptError.isInstance(error)).toBe(true);
      expect((error as Error).message).toContain(`points/${point.id}.json`);
      const unreadable = await reader.unreadablePoints();
      expect(unreadable.map((p) => [p.id, p.problem])).toContainEqual([point.id, 'corrupt']);
      await writeFile(path, text, 'latin1');
    }
  });

  it('a flipped bit in a manifest or a segment is a typed error naming the blob; a zero segment is no blob', async () => {
    const image = diskImage(3, 0, 3);
    const point = await backupImage(fixture.repository, fixture.workers, image);
    expect(point.stats.segmentsWritten).toBe(1);
    const out = join(fixture.folder, 'out.img');
    const manifest = join(fixture.folder, 'indexes', point.id);
    const size = (await readFile(manifest)).byteLength;
    for (const at of [0, 9, 20, 30, size - 40, size - 1]) {
      await flipBit(manifest, at, 3);
      const reader = await fixture.reopen();
      const error = await rejection(reader.restore(point.id, { path: out }));
      expect(RepositoryCorruptError.isInstance(error)).toBe(true);
      expect((error as Error).message).toContain(`indexes/${point.id}`);
      await flipBit(manifest, at, 3);
    }
    const [h2] = await readdir(join(fixture.folder, 'segments'));
    const [name] = await readdir(join(fixture.folder, 'segments', h2!));
    const segment = join(fixture.folder, 'segments', h2!, name!);
    const segmentSize = (await readFile(segment)).byteLength;
    for (const at of [0, 5, 9, 14, segmentSize - 33, segmentSize - 1]) {
      await flipBit(segment, at, 1);
      const reader = await fixture.reopen();
      const error = await rejection(reader.restore(point.id, { path: out }));
      expect(RepositoryCorruptError.isInstance(error)).toBe(true);
      expect((error as Error).message).toContain(`segments/${h2}/${name}`);
      expect((error as Error).message).toContain(point.id);
      const report = await reader.verify();
      expect(report.damagedIndexes).toEqual([
        expect.objectContaining({ pointId: point.id, problem: 'corrupt' }),
      ]);
      await flipBit(segment, at, 1);
    }
    // An all-zero disk stores no segment at all.
    const zeros = await backupImage(fixture.repository, fixture.workers, new Uint8Array(4 * SEGMENT_CHUNKS));
    expect(zeros.stats.segmentsWritten).toBe(0);
  });
});
