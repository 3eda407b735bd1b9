import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChunkWorkerPool } from '../workers/chunk-worker-pool.js';
import type { RepositoryEncryption } from './keyring.js';
import { createLocalFolderStore } from './local-folder-store.js';
import { openRepository } from './repository.js';
import type { Store } from './store.js';
import type {
  BackupSession,
  DiskLineage,
  NewPoint,
  PointIndex,
  PointIndexBuilder,
  RecoveryPoint,
  Repository,
} from './types.js';

/**
 * Test support for the repository tests (not part of the public API): a repository in a temporary folder, disk
 * images with zero, compressible and random regions, and a backup helper that encodes chunks through the
 * worker pool as the engine will.
 *
 * @internal
 */
export interface RepositoryFixture {
  readonly folder: string;
  readonly store: Store;
  readonly workers: ChunkWorkerPool;
  readonly repository: Repository;
  /** Another repository object on the same folder (another process, as far as locks go). */
  reopen(options?: { lockStaleAfterMs?: number; encryption?: RepositoryEncryption }): Promise<Repository>;
  cleanup(): Promise<void>;
}

/** The smallest chunk size a lineage may use; tests use it to keep images small. */
export const TEST_CHUNK_SIZE = 256 * 1024;

export const TEST_LINEAGE: DiskLineage = { platformId: 'platform-1', hostId: 'host-1', diskId: 'disk-1' };

/** @internal */
export async function createRepositoryFixture(
  options: { lockStaleAfterMs?: number; encryption?: RepositoryEncryption } = {},
): Promise<RepositoryFixture> {
  const folder = await mkdtemp(join(tmpdir(), 'drkit-repository-'));
  const store = createLocalFolderStore({ path: folder });
  const workers = new ChunkWorkerPool(2);
  const opened: Repository[] = [];
  const repository = await openRepository({ store, create: true, workers, ...options });
  opened.push(repository);
  return {
    folder,
    store,
    workers,
    repository,
    async reopen(reopenOptions = {}) {
      const other = await openRepository({
        store: createLocalFolderStore({ path: folder }),
        workers,
        ...options,
        ...reopenOptions,
      });
      opened.push(other);
      return other;
    },
    async cleanup() {
      for (const r of opened) await r.close();
      await workers.close();
      await rm(folder, { recursive: true, force: true });
    },
  };
}

/** Deterministic pseudo-random bytes. */
export function randomish(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let block = Buffer.alloc(0);
  let counter = 0;
  for (let i = 0; i < length; i += 32) {
    block = createHash('sha256').update(`${seed}:${counter++}`).digest();
    out.set(block.subarray(0, Math.min(32, length - i)), i);
  }
  return out;
}

/**
 * A disk image of `chunks` chunks of {@link TEST_CHUNK_SIZE} plus `tail` bytes: chunk `i % 4 === 1` all zeros,
 * `i % 4 === 2` compressible text, the rest random; the tail random.
 */
export function diskImage(chunks: number, tail: number, seed: number): Uint8Array {
  const image = new Uint8Array(chunks * TEST_CHUNK_SIZE + tail);
  for (let i = 0; i < chunks; i++) {
    const at = i * TEST_CHUNK_SIZE;
    if (i % 4 === 1) continue;
    if (i % 4 === 2)
      image.set(
        new TextEncoder().encode(`chunk ${i} seed ${seed} `.repeat(20000)).subarray(0, TEST_CHUNK_SIZE),
        at,
      );
    else image.set(randomish(TEST_CHUNK_SIZE, seed * 1000 + i), at);
  }
  if (tail > 0) image.set(randomish(tail, seed * 1000 + 999), chunks * TEST_CHUNK_SIZE);
  return image;
}

/** A {@link NewPoint} for {@link TEST_LINEAGE}. */
export function newPoint(capacityBytes: number, overrides: Partial<NewPoint> = {}): NewPoint {
  return {
    ...TEST_LINEAGE,
    hostName: 'host one',
    diskName: 'disk one',
    createdAt: new Date().toISOString(),
    capacityBytes,
    chunkSize: TEST_CHUNK_SIZE,
    validity: { kind: 'full', reason: 'first-backup' },
    stats: {
      bytesRead: capacityBytes,
      bytesWritten: capacityBytes,
      bytesSkippedUnchanged: 0,
      bytesDeduplicated: 0,
      bytesZero: 0,
      seconds: 0,
    },
    ...overrides,
  };
}

/**
 * Encodes every chunk of `image` through the pool, stores it in `session` and returns the index (not yet
 * committed) and the ids by position (undefined for a zero chunk).
 */
export async function storeImage(
  session: BackupSession,
  workers: ChunkWorkerPool,
  image: Uint8Array,
): Promise<{ index: PointIndexBuilder; chunksWritten: number; ids: (Uint8Array | undefined)[] }> {
  const count = Math.ceil(image.byteLength / TEST_CHUNK_SIZE);
  const index = session.createIndex({ capacityBytes: image.byteLength, chunkSize: TEST_CHUNK_SIZE });
  const ids: (Uint8Array | undefined)[] = new Array(count).fill(undefined);
  let chunksWritten = 0;
  for (let i = 0; i < count; i++) {
    const plain = image.slice(i * TEST_CHUNK_SIZE, Math.min((i + 1) * TEST_CHUNK_SIZE, image.byteLength));
    const plainLength = plain.byteLength;
    const encoded = await workers.encode(plain, { idKey: session.chunkIdKey });
    if (encoded.kind === 'zero') continue;
    if (encoded.kind !== 'data') throw new Error('unexpected unchanged chunk without a parent');
    index.setId(i, encoded.hash);
    ids[i] = encoded.hash.slice();
    if (
      await session.putChunk({
        hash: encoded.hash,
        codec: encoded.codec,
        payload: encoded.payload,
        plainLength,
      })
    ) {
      chunksWritten++;
    }
  }
  return { index, chunksWritten, ids };
}

/** Sets every position of `builder` to the id `index` has there (a copy of a committed point's index). */
export async function copyIndex(index: PointIndex, builder: PointIndexBuilder): Promise<void> {
  for await (const segment of index.segments()) {
    for (let k = 0; k < segment.chunkCount; k++) {
      builder.setId(segment.firstPosition + k, segment.ids.subarray(k * 32, (k + 1) * 32));
    }
  }
}

/** Backs `image` up as one point of {@link TEST_LINEAGE} (or the lineage in `overrides`). */
export async function backupImage(
  repository: Repository,
  workers: ChunkWorkerPool,
  image: Uint8Array,
  overrides: Partial<NewPoint> = {},
): Promise<RecoveryPoint> {
  const session = await repository.beginBackup({ ...TEST_LINEAGE, ...pickLineage(overrides) });
  try {
    const { index } = await storeImage(session, workers, image);
    return await session.commit(newPoint(image.byteLength, overrides), index);
  } finally {
    await session.abort();
  }
}

function pickLineage(overrides: Partial<NewPoint>): Partial<DiskLineage> {
  const lineage: { -readonly [K in keyof DiskLineage]?: string } = {};
  if (overrides.platformId !== undefined) lineage.platformId = overrides.platformId;
  if (overrides.hostId !== undefined) lineage.hostId = overrides.hostId;
  if (overrides.diskId !== undefined) lineage.diskId = overrides.diskId;
  return lineage;
}

/** The error a promise rejects with; fails the test when it resolves. */
export async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}
