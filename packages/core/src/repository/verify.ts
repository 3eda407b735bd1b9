import { NotFoundError, RepositoryCorruptError } from '../errors/drkit-error.js';
import { CHUNK_ID_BYTES, chunkIdFromHash, chunkIdToHash, isZeroId } from './chunk-id.js';
import { ChunkIdSet } from './chunk-id-set.js';
import { type ChunkProblem, loadChunk } from './chunk-loader.js';
import { pointKey } from './point-metadata.js';
import { referencedChunkIds } from './referenced-chunks.js';
import { type DamagedMark, damagedKey, type RepositoryContext } from './repository-context.js';
import { TaskWindow } from './task-window.js';
import type { ChunkId, PointIndex, RecoveryPoint, UnreadablePoint, VerifyReport } from './types.js';

interface Finding {
  readonly problem: ChunkProblem;
  readonly detail: string;
  readonly pointIds: Set<string>;
}

/**
 * Re-hashes every distinct chunk of the selected points once, then names, for each damaged chunk, every
 * selected point that references it, records `damaged/<id>` marks and clears the marks of chunks that now
 * check out. Points whose metadata cannot be read are reported, not checked.
 *
 * @internal
 */
export async function verifyPoints(
  context: RepositoryContext,
  options: { pointIds?: readonly string[]; signal?: AbortSignal },
): Promise<VerifyReport> {
  const { signal } = options;
  let points: RecoveryPoint[];
  let unreadablePoints: UnreadablePoint[];
  if (options.pointIds === undefined) {
    ({ points, unreadable: unreadablePoints } = await context.scanPoints(signal));
  } else {
    const ids = [...new Set(options.pointIds)];
    const found = await Promise.all(ids.map((id) => context.readPoint(id, signal)));
    points = [];
    unreadablePoints = [];
    found.forEach((entry, i) => {
      if (entry === undefined) {
        throw new NotFoundError(`there is no point ${ids[i]} in the repository in the ${context.where}`);
      }
      if ('problem' in entry) unreadablePoints.push(entry);
      else points.push(entry);
    });
  }
  const previouslyDamaged = await context.damagedChunks(signal);
  const workers = context.workers();
  const window = new TaskWindow(context.window());
  const checked = new ChunkIdSet(4096);
  const damagedSet = new ChunkIdSet();
  const findings = new Map<ChunkId, Finding>();
  const damagedIndexes: { pointId: string; problem: 'missing' | 'corrupt'; detail: string }[] = [];
  const readable: RecoveryPoint[] = [];
  let chunksChecked = 0;
  let bytesChecked = 0;

  const damagedIndex = async (point: RecoveryPoint, error: unknown): Promise<void> => {
    if (!RepositoryCorruptError.isInstance(error)) throw error;
    damagedIndexes.push({ pointId: point.id, problem: 'corrupt', detail: error.message });
  };
  const readIndex = async (point: RecoveryPoint): Promise<PointIndex | undefined> => {
    try {
      return await context.openIndex(point, signal);
    } catch (error) {
      if (!RepositoryCorruptError.isInstance(error)) throw error;
      if (NotFoundError.isInstance(error.cause)) {
        // Removed by retention while we ran (metadata goes first): not a point any more.
        if (!(await context.store.has(pointKey(point.id), { signal }))) return undefined;
      }
      damagedIndexes.push({
        pointId: point.id,
        problem: NotFoundError.isInstance(error.cause) ? 'missing' : 'corrupt',
        detail: error.message,
      });
      return undefined;
    }
  };

  for (const point of points) {
    const index = await readIndex(point);
    if (index === undefined) continue;
    try {
      for await (const segment of index.segments({ signal })) {
        if (segment.zero) continue;
        for (let k = 0; k < segment.chunkCount; k++) {
          const id = segment.ids.subarray(k * CHUNK_ID_BYTES, (k + 1) * CHUNK_ID_BYTES);
          if (isZeroId(id) || !checked.add(id)) continue;
          const position = segment.firstPosition + k;
          const length = Math.min(point.chunkSize, point.capacityBytes - position * point.chunkSize);
          await window.add(async () => {
            const loaded = await loadChunk(context.store, workers, id, length, signal);
            chunksChecked++;
            if (loaded.ok) {
              bytesChecked += length;
              return;
            }
            damagedSet.add(id);
            findings.set(chunkIdFromHash(id), {
              problem: loaded.problem,
              detail: loaded.detail,
              pointIds: new Set(),
            });
          });
        }
      }
    } catch (error) {
      await damagedIndex(point, error);
      continue;
    }
    readable.push(point);
  }
  await window.drain();

  if (findings.size > 0) {
    // Second pass: every selected point that references a damaged chunk, not only the first one seen.
    for (const point of readable) {
      try {
        for await (const id of referencedChunkIds(context, point, signal)) {
          if (damagedSet.has(id)) findings.get(chunkIdFromHash(id))?.pointIds.add(point.id);
        }
      } catch (error) {
        if (!RepositoryCorruptError.isInstance(error)) throw error;
      }
    }
  }

  const detectedAt = new Date().toISOString();
  const damaged = [...findings.entries()]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([chunkId, finding]) => ({
      chunkId,
      problem: finding.problem,
      pointIds: [...finding.pointIds].sort(),
    }));
  for (const entry of damaged) {
    const detail = findings.get(entry.chunkId)?.detail ?? '';
    const mark: DamagedMark = { ...entry, detail, detectedAt };
    await context.store.put(
      damagedKey(entry.chunkId),
      new TextEncoder().encode(`${JSON.stringify(mark, null, 2)}\n`),
      {
        signal,
      },
    );
  }
  for (const id of previouslyDamaged) {
    if (!findings.has(id) && checked.has(chunkIdToHash(id)))
      await context.store.delete(damagedKey(id), { signal });
  }
  return {
    pointsChecked: points.length,
    chunksChecked,
    bytesChecked,
    damaged,
    damagedIndexes,
    unreadablePoints,
    ok: damaged.length === 0 && damagedIndexes.length === 0 && unreadablePoints.length === 0,
  };
}
