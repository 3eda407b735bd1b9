import { NotFoundError, RepositoryCorruptError } from '../errors/drkit-error.js';
import { chunkIdFromHash, chunkIdToHash } from './chunk-id.js';
import { ChunkIdSet } from './chunk-id-set.js';
import { type ChunkProblem, loadChunk } from './chunk-loader.js';
import { pointKey } from './point-metadata.js';
import { referencedChunkIds } from './referenced-chunks.js';
import { type DamagedMark, damagedKey, type RepositoryContext } from './repository-context.js';
import { ChunkIdSorter } from './sorted-chunk-ids.js';
import { TaskWindow } from './task-window.js';
import type { ChunkId, RecoveryPoint, UnreadablePoint, VerifyReport } from './types.js';

interface Finding {
  readonly problem: ChunkProblem;
  readonly detail: string;
  readonly pointIds: Set<string>;
}

/**
 * Re-hashes every distinct chunk of the selected points once, then names, for each damaged chunk, every
 * selected point that references it, records `damaged/<id>` marks and clears the marks of chunks that now
 * check out. Points whose metadata cannot be read are reported, not checked. The distinct ids come from an
 * external sort ({@link ChunkIdSorter}): memory stays bounded (about 45 MiB, plus the damaged chunks found)
 * whatever the number of chunks.
 *
 * @internal
 */
export async function verifyPoints(
  context: RepositoryContext,
  options: { pointIds?: readonly string[]; scratchDirectory?: string; signal?: AbortSignal },
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
  const previouslyDamagedSet = new ChunkIdSet(previouslyDamaged.size + 1);
  for (const id of previouslyDamaged) previouslyDamagedSet.add(chunkIdToHash(id));
  const workers = context.workers();
  const window = new TaskWindow(context.window());
  const damagedSet = new ChunkIdSet();
  const findings = new Map<ChunkId, Finding>();
  const damagedIndexes: { pointId: string; problem: 'missing' | 'corrupt'; detail: string }[] = [];
  const readable: RecoveryPoint[] = [];
  /** Marked chunks that were checked this time (their marks are cleared when they check out). */
  const recheckedMarks: ChunkId[] = [];
  let chunksChecked = 0;
  let bytesChecked = 0;

  /** Feeds one point's ids to `each`; false when its index cannot be read (recorded) or it was removed. */
  const forEachId = async (point: RecoveryPoint, each: (id: Uint8Array) => Promise<void> | void) => {
    try {
      for await (const id of referencedChunkIds(context, point, signal)) {
        const pending = each(id);
        if (pending !== undefined) await pending;
      }
      return true;
    } catch (error) {
      if (!RepositoryCorruptError.isInstance(error)) throw error;
      if (NotFoundError.isInstance(error.cause)) {
        // Removed by retention while we ran (metadata goes first): not a point any more.
        if (!(await context.store.has(pointKey(point.id), { signal }))) return false;
      }
      damagedIndexes.push({
        pointId: point.id,
        problem: NotFoundError.isInstance(error.cause) ? 'missing' : 'corrupt',
        detail: error.message,
      });
      return false;
    }
  };

  // Every distinct chunk once, whatever the number of chunks: the ids are sorted on disk in bounded memory.
  {
    await using sorter = await ChunkIdSorter.create({ directory: options.scratchDirectory });
    for (const point of points) {
      if (await forEachId(point, (id) => sorter.add(id))) readable.push(point);
    }
    for await (const view of sorter.sorted()) {
      const id = view.slice();
      const marked = previouslyDamagedSet.size > 0 && previouslyDamagedSet.has(id);
      await window.add(async () => {
        const loaded = await loadChunk(context.store, workers, id, undefined, signal, context.idKey);
        chunksChecked++;
        if (loaded.ok) {
          bytesChecked += loaded.plain.byteLength;
          if (marked) recheckedMarks.push(chunkIdFromHash(id));
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
    await window.drain();
  }

  if (findings.size > 0) {
    // Second pass: every selected point that references a damaged chunk, not only the first one seen.
    for (const point of readable) {
      const pointFindings = new Set<Finding>();
      await forEachId(point, (id) => {
        if (damagedSet.has(id)) {
          const finding = findings.get(chunkIdFromHash(id));
          if (finding !== undefined) pointFindings.add(finding);
        }
      }).catch(() => false);
      for (const finding of pointFindings) finding.pointIds.add(point.id);
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
  for (const id of recheckedMarks) await context.store.delete(damagedKey(id), { signal });
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
