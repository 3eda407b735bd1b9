import { NotFoundError, RepositoryCorruptError, UnreadablePointsError } from '../errors/drkit-error.js';
import { chunkIdFromKey } from './chunk-blob.js';
import { chunkIdToHash } from './chunk-id.js';
import { ChunkIdSet } from './chunk-id-set.js';
import { segmentIdFromKey } from './chunk-index.js';
import { isPointId, pointKey } from './point-metadata.js';
import { referencedChunkIds, referencedSegmentKeys } from './referenced-chunks.js';
import { damagedKey, type RepositoryContext } from './repository-context.js';
import { acquirePruneLock } from './repository-lock.js';
import { TaskWindow } from './task-window.js';
import type { PruneResult } from './types.js';

/** Deletions in flight at once. */
const DELETES = 8;
/** Deletions between two re-reads of the prune lock. */
const CONFIRM_EVERY = 1000;
const INDEX_PREFIX = 'indexes/';

/**
 * Takes the exclusive prune lock, computes the chunks that committed points reference, and deletes every other
 * chunk, the damaged marks of deleted chunks, and index blobs that belong to no point. Refuses, deleting
 * nothing, while any point's metadata or index cannot be read.
 *
 * @internal
 */
export async function pruneRepository(
  context: RepositoryContext,
  options: { signal?: AbortSignal },
): Promise<PruneResult> {
  const { signal } = options;
  const { store } = context;
  context.checkOpen();
  const { lock, staleLocksRemoved } = await acquirePruneLock(
    store,
    context.config.id,
    context.lockStaleAfterMs,
    signal,
  );
  try {
    // What committed points reference, computed only now that no backup can start or commit.
    const { points, unreadable } = await context.scanPoints(signal);
    if (unreadable.length > 0) {
      // Their indexes name chunks we cannot know without the metadata (its digest checks the index): deleting
      // anything could destroy data a repaired blob, or the newer drkit that wrote it, could still restore.
      throw new UnreadablePointsError(
        `cannot prune: the metadata of ${unreadable.length} point(s) cannot be read, so the chunks they need are unknown; nothing was deleted. Repair or remove them (or prune with the drkit that wrote them): ${unreadable.map((p) => `${p.id} (${p.problem}: ${p.detail})`).join('; ')}`,
        unreadable,
      );
    }
    const pointIds = new Set(points.map((point) => point.id));
    const referenced = new ChunkIdSet(Math.max(1024, points.length * 64));
    const referencedSegments = new Set<string>();
    for (const point of points) {
      try {
        for await (const key of referencedSegmentKeys(context, point, signal)) referencedSegments.add(key);
        for await (const id of referencedChunkIds(context, point, signal)) referenced.add(id);
      } catch (error) {
        const removed =
          RepositoryCorruptError.isInstance(error) &&
          NotFoundError.isInstance(error.cause) &&
          !(await store.has(pointKey(point.id), { signal }));
        if (removed) {
          // Removed by retention meanwhile (metadata first, then manifest): it references nothing.
          pointIds.delete(point.id);
          continue;
        }
        throw new RepositoryCorruptError(
          `cannot prune: the index of point ${point.id} cannot be read, so the chunks it needs are unknown; nothing was deleted. Run verify, then remove or repair that point (${(error as Error).message})`,
          { cause: error, retryable: false },
        );
      }
    }
    const damaged = await context.damagedChunks(signal);
    await lock.confirm(signal);

    let chunksRemoved = 0;
    let indexesRemoved = 0;
    let bytesFreed = 0;
    let sinceConfirm = 0;
    const window = new TaskWindow(DELETES);
    for await (const entry of store.list('chunks/', { signal })) {
      const id = chunkIdFromKey(entry.key);
      if (id === undefined || referenced.has(chunkIdToHash(id))) continue;
      lock.checkLive();
      if (++sinceConfirm >= CONFIRM_EVERY) {
        await window.drain();
        await lock.confirm(signal);
        sinceConfirm = 0;
      }
      await window.add(async () => {
        await store.delete(entry.key, { signal });
        chunksRemoved++;
        bytesFreed += entry.size;
        if (damaged.has(id)) await store.delete(damagedKey(id), { signal });
      });
    }
    await window.drain();
    for await (const entry of store.list('segments/', { signal })) {
      if (segmentIdFromKey(entry.key) === undefined || referencedSegments.has(entry.key)) continue;
      lock.checkLive();
      await store.delete(entry.key, { signal });
      bytesFreed += entry.size;
    }
    for (const id of damaged) {
      if (!referenced.has(chunkIdToHash(id))) await store.delete(damagedKey(id), { signal });
    }
    for await (const entry of store.list(INDEX_PREFIX, { signal })) {
      const id = entry.key.slice(INDEX_PREFIX.length);
      if (!isPointId(id) || pointIds.has(id) || (await store.has(pointKey(id), { signal }))) continue;
      lock.checkLive();
      // An index whose point metadata was never written (a commit that failed) or already removed.
      await store.delete(entry.key, { signal });
      indexesRemoved++;
      bytesFreed += entry.size;
    }
    await lock.release();
    return { chunksRemoved, bytesFreed, indexesRemoved, staleLocksRemoved };
  } catch (error) {
    await lock.release().catch(() => undefined);
    throw error;
  }
}
