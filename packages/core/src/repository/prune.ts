import { createHash, randomBytes } from 'node:crypto';
import { writeSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import {
  InvalidArgumentError,
  NotFoundError,
  ObjectLockedError,
  RepositoryCorruptError,
  UnreadablePointsError,
} from '../errors/drkit-error.js';
import { sleep } from '../util/abort.js';
import { chunkIdFromKey } from './chunk-blob.js';
import { CHUNK_ID_BYTES, chunkIdFromHash } from './chunk-id.js';
import { SEGMENT_PREFIX, segmentIdFromKey } from './chunk-index.js';
import { isPointId, pointKey } from './point-metadata.js';
import { referencedChunkIds, referencedSegmentKeys } from './referenced-chunks.js';
import { damagedKey, type RepositoryContext } from './repository-context.js';
import { acquirePruneLock, type HeldLock } from './repository-lock.js';
import { ChunkIdSorter, compareIds, SortedIdCursor } from './sorted-chunk-ids.js';
import type { Store } from './store.js';
import { TaskWindow } from './task-window.js';
import type { PruneOptions, PruneResult, RecoveryPoint } from './types.js';

/** Deletions in flight at once. */
const DELETES = 8;
/** Deletions between two re-reads of the prune lock. */
const CONFIRM_EVERY = 1000;
/** Keys per bulk delete ({@link Store.deleteMany}): one S3 DeleteObjects request. */
const DELETE_BATCH = 1000;
const INDEX_PREFIX = 'indexes/';
/** Key prefix of everything a prune keeps between its calls. */
export const PRUNE_PREFIX = 'prune/';
/** Key of the pending mark. */
export const PRUNE_MARK_KEY = 'prune/mark.json';
/** Candidate ids per segment blob: 8 MiB. */
const SEGMENT_IDS = 256 * 1024;

/** What a list of candidate ids names: chunk blobs (`chunks/`) or index segment blobs (`segments/`). */
type CandidateKind = 'chunks' | 'index-segments';

/** One blob of a mark's candidate ids (chunk or index segment ids): ascending raw 32-byte ids. */
interface MarkSegment {
  readonly key: string;
  readonly ids: number;
  readonly sha256: string;
}

/** The JSON of `prune/mark.json`. */
export interface PruneMark {
  readonly formatVersion: 1;
  /** 16 random hex digits; the mark's segments are `prune/<markId>/chunks-<nnnnnn>`. */
  readonly markId: string;
  readonly repositoryId: string;
  /** When the candidates were last seen unreferenced (ISO 8601): after the listing that found them. */
  readonly markedAt: string;
  readonly candidateChunks: number;
  readonly candidateBytes: number;
  readonly segments: readonly MarkSegment[];
  /** Index segment blobs (`segments/<h2>/<id>`) no point's manifest named. */
  readonly candidateIndexSegments: number;
  /** Their ids, ascending, in blobs `prune/<markId>/index-segments-<nnnnnn>`. */
  readonly indexSegmentParts: readonly MarkSegment[];
  /** Point ids of `indexes/<id>` blobs that no metadata named. */
  readonly orphanIndexes: readonly string[];
}

const HEX16 = /^[0-9a-f]{16}$/;

function count(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** Parses a mark strictly; undefined when it is not one this drkit wrote (it is then discarded, never swept). */
function parseMark(bytes: Uint8Array, repositoryId: string): PruneMark | undefined {
  let value: Partial<PruneMark>;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) as Partial<PruneMark>;
  } catch {
    return undefined;
  }
  if (
    typeof value !== 'object' ||
    value === null ||
    value.formatVersion !== 1 ||
    typeof value.markId !== 'string' ||
    !HEX16.test(value.markId) ||
    value.repositoryId !== repositoryId ||
    typeof value.markedAt !== 'string' ||
    Number.isNaN(Date.parse(value.markedAt)) ||
    !count(value.candidateChunks) ||
    !count(value.candidateBytes) ||
    !Array.isArray(value.segments) ||
    !count(value.candidateIndexSegments) ||
    !Array.isArray(value.indexSegmentParts) ||
    !Array.isArray(value.orphanIndexes)
  ) {
    return undefined;
  }
  const markId = value.markId;
  const partsHold = (parts: readonly MarkSegment[], kind: CandidateKind): number | undefined => {
    let total = 0;
    for (const [i, segment] of parts.entries()) {
      if (
        typeof segment !== 'object' ||
        segment === null ||
        segment.key !== segmentKey(markId, i, kind) ||
        !count(segment.ids) ||
        segment.ids === 0 ||
        segment.ids > SEGMENT_IDS ||
        typeof segment.sha256 !== 'string' ||
        !/^[0-9a-f]{64}$/.test(segment.sha256)
      ) {
        return undefined;
      }
      total += segment.ids;
    }
    return total;
  };
  if (partsHold(value.segments, 'chunks') !== value.candidateChunks) return undefined;
  if (partsHold(value.indexSegmentParts, 'index-segments') !== value.candidateIndexSegments) return undefined;
  if (!value.orphanIndexes.every((id) => isPointId(id))) return undefined;
  return value as PruneMark;
}

function segmentKey(markId: string, index: number, kind: CandidateKind): string {
  return `${PRUNE_PREFIX}${markId}/${kind}-${String(index).padStart(6, '0')}`;
}

/** Errors that say the mark itself is damaged (a segment missing, altered or out of order): it is discarded. */
const damagedMarkErrors = new WeakSet<object>();

function damagedMark(message: string, cause?: unknown): RepositoryCorruptError {
  const error = new RepositoryCorruptError(message, { cause, retryable: false });
  damagedMarkErrors.add(error);
  return error;
}

/** The mark's candidate ids, ascending, each segment checked against its digest and order. */
async function* markCandidates(
  store: Store,
  parts: readonly MarkSegment[],
  signal: AbortSignal | undefined,
): AsyncGenerator<Uint8Array> {
  const previous = new Uint8Array(CHUNK_ID_BYTES);
  let first = true;
  for (const segment of parts) {
    let bytes: Uint8Array;
    try {
      bytes = await store.get(segment.key, { signal });
    } catch (error) {
      if (RepositoryCorruptError.isInstance(error) && !signal?.aborted) {
        throw damagedMark(`prune mark segment ${segment.key} is unreadable: ${error.message}`, error);
      }
      if (!NotFoundError.isInstance(error)) throw error;
      throw damagedMark(`prune mark segment ${segment.key} is missing`, error);
    }
    const digest = createHash('sha256').update(bytes).digest('hex');
    if (bytes.byteLength !== segment.ids * CHUNK_ID_BYTES || digest !== segment.sha256) {
      throw damagedMark(
        `prune mark segment ${segment.key} is damaged (${bytes.byteLength} bytes hashing to ${digest}; the mark records ${segment.ids} ids hashing to ${segment.sha256})`,
      );
    }
    for (let offset = 0; offset < bytes.byteLength; offset += CHUNK_ID_BYTES) {
      if (!first && compareIds(previous, 0, bytes, offset) >= 0) {
        throw damagedMark(`prune mark segment ${segment.key} is not in ascending order`);
      }
      previous.set(bytes.subarray(offset, offset + CHUNK_ID_BYTES));
      first = false;
      yield previous;
    }
  }
}

/** One ascending list of candidate ids of a mark, written in blobs of {@link SEGMENT_IDS} ids as it fills. */
class CandidateList {
  private readonly buffer = new Uint8Array(SEGMENT_IDS * CHUNK_ID_BYTES);
  private buffered = 0;
  readonly parts: MarkSegment[] = [];
  count = 0;

  constructor(
    private readonly store: Store,
    private readonly markId: string,
    private readonly kind: CandidateKind,
  ) {}

  async add(id: Uint8Array, signal: AbortSignal | undefined): Promise<void> {
    this.buffer.set(id.subarray(0, CHUNK_ID_BYTES), this.buffered * CHUNK_ID_BYTES);
    this.buffered++;
    this.count++;
    if (this.buffered === SEGMENT_IDS) await this.write(signal);
  }

  async write(signal: AbortSignal | undefined): Promise<void> {
    if (this.buffered === 0) return;
    const bytes = this.buffer.slice(0, this.buffered * CHUNK_ID_BYTES);
    const key = segmentKey(this.markId, this.parts.length, this.kind);
    await this.store.put(key, bytes, { signal });
    this.parts.push({ key, ids: this.buffered, sha256: createHash('sha256').update(bytes).digest('hex') });
    this.buffered = 0;
  }
}

/** Builds a mark: candidate chunk and index segment ids appended in ascending order, written as they fill. */
class MarkWriter {
  readonly markId = randomBytes(8).toString('hex');
  private readonly chunks: CandidateList;
  private readonly indexSegments: CandidateList;
  candidateBytes = 0;
  readonly orphanIndexes: string[] = [];

  constructor(
    private readonly store: Store,
    private readonly repositoryId: string,
  ) {
    this.chunks = new CandidateList(store, this.markId, 'chunks');
    this.indexSegments = new CandidateList(store, this.markId, 'index-segments');
  }

  async addChunk(id: Uint8Array, size: number, signal: AbortSignal | undefined): Promise<void> {
    this.candidateBytes += size;
    await this.chunks.add(id, signal);
  }

  async addIndexSegment(id: Uint8Array, size: number, signal: AbortSignal | undefined): Promise<void> {
    this.candidateBytes += size;
    await this.indexSegments.add(id, signal);
  }

  get empty(): boolean {
    return this.chunks.count === 0 && this.indexSegments.count === 0 && this.orphanIndexes.length === 0;
  }

  /**
   * Writes the last segment and `prune/mark.json` create-only (after deleting `replacing`, the swept mark).
   * Returns the mark, or undefined when another prune's mark got there first (this one is then discarded).
   */
  async commit(
    replacing: PruneMark | undefined,
    signal: AbortSignal | undefined,
  ): Promise<PruneMark | undefined> {
    await this.chunks.write(signal);
    await this.indexSegments.write(signal);
    const mark: PruneMark = {
      formatVersion: 1,
      markId: this.markId,
      repositoryId: this.repositoryId,
      markedAt: new Date().toISOString(),
      candidateChunks: this.chunks.count,
      candidateBytes: this.candidateBytes,
      segments: this.chunks.parts,
      candidateIndexSegments: this.indexSegments.count,
      indexSegmentParts: this.indexSegments.parts,
      orphanIndexes: this.orphanIndexes,
    };
    if (replacing !== undefined) await this.store.delete(PRUNE_MARK_KEY, { signal });
    const written = await this.store.put(
      PRUNE_MARK_KEY,
      new TextEncoder().encode(`${JSON.stringify(mark, null, 2)}\n`),
      { ifAbsent: true, signal },
    );
    if (!written) {
      await this.discard();
      return undefined;
    }
    return mark;
  }

  /** Deletes the segments written (best effort). */
  async discard(): Promise<void> {
    for (const segment of [...this.chunks.parts, ...this.indexSegments.parts]) {
      await this.store.delete(segment.key).catch(() => undefined);
    }
  }
}

/** The pending mark, or undefined; a blob that is not a valid mark is reported as `invalid`. */
async function readMark(
  context: RepositoryContext,
  signal: AbortSignal | undefined,
): Promise<PruneMark | 'invalid' | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await context.store.get(PRUNE_MARK_KEY, { signal });
  } catch (error) {
    if (NotFoundError.isInstance(error)) return undefined;
    if (RepositoryCorruptError.isInstance(error) && !signal?.aborted) return 'invalid'; // sealed, not opening
    throw error;
  }
  return parseMark(bytes, context.config.id) ?? 'invalid';
}

/** Deletes a mark and its segments (a swept mark, or one that cannot be read: a new mark replaces it). */
async function deleteMarkSegments(
  store: Store,
  markId: string,
  signal: AbortSignal | undefined,
): Promise<void> {
  const prefix = `${PRUNE_PREFIX}${markId}/`;
  const keys: string[] = [];
  for await (const entry of store.list(prefix, { signal })) keys.push(entry.key);
  for (const key of keys) await store.delete(key, { signal });
}

/**
 * Deletes segments that no mark names and that are older than the grace period: left by a prune that crashed
 * between its segments and its mark, or lost the race for `prune/mark.json`. A younger one may belong to a mark
 * being written right now.
 */
async function deleteStraySegments(
  store: Store,
  keep: string | undefined,
  graceMs: number,
  signal: AbortSignal | undefined,
): Promise<void> {
  const stray: string[] = [];
  for await (const entry of store.list(PRUNE_PREFIX, { signal })) {
    const markId = /^prune\/([0-9a-f]{16})\//.exec(entry.key)?.[1];
    if (markId === undefined || markId === keep) continue;
    if (Date.now() - entry.modifiedAt.getTime() > graceMs) stray.push(entry.key);
  }
  for (const key of stray) await store.delete(key, { signal });
}

/**
 * Stops this process for a test (`DRKIT_TEST_PRUNE_STOP_AT=<phase>`): announces the phase on standard error,
 * then sends itself SIGSTOP, so a test can keep the pruner paused exactly there and SIGCONT it. No-op otherwise.
 */
function testStop(phase: 'marked' | 'before-delete'): void {
  if (process.env.DRKIT_TEST_PRUNE_STOP_AT !== phase) return;
  writeSync(2, `drkit-test: prune stopping at ${phase}\n`);
  process.kill(process.pid, 'SIGSTOP');
}

/** Streams the referenced ids of every point through a sorter; skips points removed meanwhile. */
async function sortReferenced(
  context: RepositoryContext,
  points: readonly RecoveryPoint[],
  sorter: ChunkIdSorter,
  segmentSorter: ChunkIdSorter,
  pointIds: Set<string>,
  signal: AbortSignal | undefined,
): Promise<void> {
  for (const point of points) {
    try {
      for await (const key of referencedSegmentKeys(context, point, signal)) {
        const pending = segmentSorter.add(idFromSegmentKey(key)!);
        if (pending !== undefined) await pending;
      }
      for await (const id of referencedChunkIds(context, point, signal)) {
        const pending = sorter.add(id);
        if (pending !== undefined) await pending;
      }
    } catch (error) {
      const removed =
        RepositoryCorruptError.isInstance(error) &&
        NotFoundError.isInstance(error.cause) &&
        !(await context.store.has(pointKey(point.id), { signal }));
      if (removed) {
        // Removed by retention meanwhile (metadata first, then index): it references nothing.
        pointIds.delete(point.id);
        continue;
      }
      throw new RepositoryCorruptError(
        `cannot prune: the index of point ${point.id} cannot be read, so the chunks it needs are unknown; nothing was deleted. Run verify, then remove or repair that point (${(error as Error).message})`,
        { cause: error, retryable: false },
      );
    }
  }
}

/** Committed points, refusing while any cannot be read. */
async function readablePoints(context: RepositoryContext, signal: AbortSignal | undefined) {
  const { points, unreadable } = await context.scanPoints(signal);
  if (unreadable.length > 0) {
    // Their indexes name chunks we cannot know without the metadata (its digest checks the index): deleting
    // anything could destroy data a repaired blob, or the newer drkit that wrote it, could still restore.
    throw new UnreadablePointsError(
      `cannot prune: the metadata of ${unreadable.length} point(s) cannot be read, so the chunks they need are unknown; nothing was deleted. Repair or remove them (or prune with the drkit that wrote them): ${unreadable.map((p) => `${p.id} (${p.problem}: ${p.detail})`).join('; ')}`,
      unreadable,
    );
  }
  return points;
}

function idFromSegmentKey(key: string): Uint8Array | undefined {
  const hex = segmentIdFromKey(key);
  return hex === undefined ? undefined : new Uint8Array(Buffer.from(hex, 'hex'));
}

function idFromChunkKey(key: string): Uint8Array | undefined {
  const hex = chunkIdFromKey(key);
  return hex === undefined ? undefined : new Uint8Array(Buffer.from(hex, 'hex'));
}

interface PruneSettings {
  readonly graceMs: number;
  readonly scratchDirectory: string | undefined;
  readonly signal: AbortSignal | undefined;
}

/**
 * Phase one, without a lock (backups run on): what committed points reference now, and the chunks and orphan
 * indexes outside it. Writes them as a mark; returns it (or the mark another prune wrote at the same time).
 */
async function mark(context: RepositoryContext, settings: PruneSettings): Promise<PruneMark | undefined> {
  const { store } = context;
  const { signal } = settings;
  const points = await readablePoints(context, signal);
  const pointIds = new Set(points.map((point) => point.id));
  await using sorter = await ChunkIdSorter.create({ directory: settings.scratchDirectory });
  await using segmentSorter = await ChunkIdSorter.create({ directory: settings.scratchDirectory });
  await sortReferenced(context, points, sorter, segmentSorter, pointIds, signal);
  const writer = new MarkWriter(store, context.config.id);
  const referenced = new SortedIdCursor(sorter.sorted()[Symbol.asyncIterator]());
  const referencedSegments = new SortedIdCursor(segmentSorter.sorted()[Symbol.asyncIterator]());
  try {
    for await (const entry of store.list('chunks/', { signal })) {
      const id = idFromChunkKey(entry.key);
      if (id === undefined || (await referenced.seek(id))) continue;
      await writer.addChunk(id, entry.size, signal);
    }
    for await (const entry of store.list(SEGMENT_PREFIX, { signal })) {
      const id = idFromSegmentKey(entry.key);
      if (id === undefined || (await referencedSegments.seek(id))) continue;
      await writer.addIndexSegment(id, entry.size, signal);
    }
    for await (const entry of store.list(INDEX_PREFIX, { signal })) {
      const id = entry.key.slice(INDEX_PREFIX.length);
      if (!isPointId(id) || pointIds.has(id) || (await store.has(pointKey(id), { signal }))) continue;
      writer.orphanIndexes.push(id);
    }
    if (writer.empty) return undefined;
    const written = await writer.commit(undefined, signal);
    if (written !== undefined) return written;
    const other = await readMark(context, signal);
    return other === 'invalid' ? undefined : other;
  } catch (error) {
    await writer.discard();
    throw error;
  } finally {
    await referenced.close();
    await referencedSegments.close();
  }
}

interface SweepOutcome {
  readonly chunksRemoved: number;
  readonly segmentsRemoved: number;
  readonly indexesRemoved: number;
  readonly bytesFreed: number;
  /** Candidates the store still keeps locked, left for a later sweep, and the earliest lock date said. */
  readonly lockedSkipped: number;
  readonly lockedSkippedUntil: number | undefined;
  /** The next mark, recorded in the same pass; undefined when nothing is left to mark. */
  readonly next: PruneMark | undefined;
}

/**
 * Phase two, under the exclusive lock: recomputes what committed points reference, deletes the mark's candidates
 * that are still unreferenced (checking the lock by both clocks before each deletion), and records the next mark
 * from what is unreferenced now but was not a candidate.
 */
async function sweep(
  context: RepositoryContext,
  old: PruneMark,
  lock: HeldLock,
  settings: PruneSettings,
): Promise<SweepOutcome> {
  const { store } = context;
  const { signal } = settings;
  // What committed points reference, computed only now that no backup can start or commit.
  const points = await readablePoints(context, signal);
  const pointIds = new Set(points.map((point) => point.id));
  await using sorter = await ChunkIdSorter.create({ directory: settings.scratchDirectory });
  await using segmentSorter = await ChunkIdSorter.create({ directory: settings.scratchDirectory });
  await sortReferenced(context, points, sorter, segmentSorter, pointIds, signal);
  const damaged = await context.damagedChunks(signal);
  testStop('before-delete');
  await lock.confirm(signal);

  const next = new MarkWriter(store, context.config.id);
  const referenced = new SortedIdCursor(sorter.sorted()[Symbol.asyncIterator]());
  const candidates = new SortedIdCursor(markCandidates(store, old.segments, signal));
  const referencedSegments = new SortedIdCursor(segmentSorter.sorted()[Symbol.asyncIterator]());
  const segmentCandidates = new SortedIdCursor(markCandidates(store, old.indexSegmentParts, signal));
  let chunksRemoved = 0;
  let segmentsRemoved = 0;
  let indexesRemoved = 0;
  let bytesFreed = 0;
  let sinceConfirm = 0;
  let lockedSkipped = 0;
  let lockedSkippedUntil: number | undefined;
  /** A candidate the store keeps locked (immutable points): not deleted, counted, left for a later sweep. */
  const skipLocked = (error: ObjectLockedError) => {
    lockedSkipped++;
    const until = error.retainUntil?.getTime();
    if (until !== undefined && (lockedSkippedUntil === undefined || until < lockedSkippedUntil)) {
      lockedSkippedUntil = until;
    }
  };
  const window = new TaskWindow(DELETES);
  /** Bulk deletes: candidates queued here, deleted a batch at a time (one request where the store allows). */
  let batch: { key: string; size: number; then: (() => Promise<void>) | undefined }[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    const taken = batch;
    batch = [];
    if (sinceConfirm >= CONFIRM_EVERY) {
      await lock.confirm(signal);
      sinceConfirm = 0;
    }
    lock.checkLive();
    const failures = await store.deleteMany!(
      taken.map((entry) => entry.key),
      { signal },
    );
    const failed = new Map(failures.map((failure) => [failure.key, failure.error]));
    for (const entry of taken) {
      const error = failed.get(entry.key);
      if (error === undefined) {
        bytesFreed += entry.size;
        await entry.then?.();
      } else if (ObjectLockedError.isInstance(error)) skipLocked(error);
      else throw error;
    }
  };
  /** Waits for every deletion queued or in flight. */
  const drain = async () => {
    await flush();
    await window.drain();
  };
  /** Deletes one blob once the lock is known to be held, by both clocks, right before the deletion. */
  const remove = async (key: string, size: number, then?: () => Promise<void>) => {
    lock.checkLive();
    sinceConfirm++;
    if (store.deleteMany !== undefined) {
      batch.push({ key, size, then });
      if (batch.length >= DELETE_BATCH) await flush();
      return;
    }
    if (sinceConfirm >= CONFIRM_EVERY) {
      await window.drain();
      await lock.confirm(signal);
      sinceConfirm = 0;
    }
    await window.add(async () => {
      lock.checkLive();
      try {
        await store.delete(key, { signal });
      } catch (error) {
        if (!ObjectLockedError.isInstance(error)) throw error;
        skipLocked(error);
        return;
      }
      bytesFreed += size;
      await then?.();
    });
  };
  // Damaged ids, ascending, walked along the listing: a mark whose chunk is gone and that no point references
  // is removed (nothing will rewrite or read it). The mark of a chunk that still exists stays until the chunk is
  // deleted (a backup must not reuse a damaged chunk).
  const damagedIds = [...damaged].sort().map((hex) => ({ hex, id: new Uint8Array(Buffer.from(hex, 'hex')) }));
  let nextDamaged = 0;
  const passDamaged = async (below: Uint8Array | undefined) => {
    while (nextDamaged < damagedIds.length) {
      const { hex, id } = damagedIds[nextDamaged]!;
      const order = below === undefined ? -1 : compareIds(id, 0, below, 0);
      if (order >= 0) return;
      nextDamaged++;
      if (await referenced.seek(id)) continue;
      await remove(damagedKey(hex), 0, async () => {});
    }
  };
  try {
    for await (const entry of store.list('chunks/', { signal })) {
      const id = idFromChunkKey(entry.key);
      if (id === undefined) continue;
      await passDamaged(id);
      if (nextDamaged < damagedIds.length && compareIds(damagedIds[nextDamaged]!.id, 0, id, 0) === 0) {
        nextDamaged++;
      }
      if (await referenced.seek(id)) continue;
      if (await candidates.seek(id)) {
        const hex = chunkIdFromHash(id);
        await remove(entry.key, entry.size, async () => {
          chunksRemoved++;
          if (damaged.has(hex)) await store.delete(damagedKey(hex), { signal });
        });
      } else {
        await next.addChunk(id, entry.size, signal);
      }
    }
    await passDamaged(undefined);
    await drain();
    for await (const entry of store.list(SEGMENT_PREFIX, { signal })) {
      const id = idFromSegmentKey(entry.key);
      if (id === undefined || (await referencedSegments.seek(id))) continue;
      if (await segmentCandidates.seek(id)) {
        await remove(entry.key, entry.size, async () => {
          segmentsRemoved++;
        });
      } else {
        await next.addIndexSegment(id, entry.size, signal);
      }
    }
    await drain();
    const orphans = new Set(old.orphanIndexes);
    for await (const entry of store.list(INDEX_PREFIX, { signal })) {
      const id = entry.key.slice(INDEX_PREFIX.length);
      if (!isPointId(id) || pointIds.has(id) || (await store.has(pointKey(id), { signal }))) continue;
      if (orphans.has(id)) {
        // An index whose point metadata was never written (a commit that failed) or already removed, at the
        // mark and now.
        await remove(entry.key, entry.size, async () => {
          indexesRemoved++;
        });
      } else next.orphanIndexes.push(id);
    }
    await drain();
    lock.checkLive();
    const written = next.empty ? undefined : await next.commit(old, signal);
    if (next.empty) await store.delete(PRUNE_MARK_KEY, { signal });
    await deleteMarkSegments(store, old.markId, signal);
    await deleteStraySegments(store, written?.markId, settings.graceMs, signal);
    return {
      chunksRemoved,
      segmentsRemoved,
      indexesRemoved,
      bytesFreed,
      lockedSkipped,
      lockedSkippedUntil,
      next: written,
    };
  } catch (error) {
    batch = [];
    await window.drain().catch(() => undefined);
    await next.discard();
    throw error;
  } finally {
    await referenced.close();
    await candidates.close();
    await referencedSegments.close();
    await segmentCandidates.close();
  }
}

function sweepAfterMs(mark: PruneMark, graceMs: number): number {
  return Date.parse(mark.markedAt) + graceMs;
}

function describeMark(mark: PruneMark | undefined, graceMs: number) {
  if (mark === undefined)
    return { candidateChunks: 0, candidateIndexSegments: 0, candidateBytes: 0, candidateIndexes: 0 };
  return {
    candidateChunks: mark.candidateChunks,
    candidateIndexSegments: mark.candidateIndexSegments,
    candidateBytes: mark.candidateBytes,
    candidateIndexes: mark.orphanIndexes.length,
    markedAt: mark.markedAt,
    sweepAfter: new Date(sweepAfterMs(mark, graceMs)).toISOString(),
  };
}

/**
 * Waits until the mark is older than the grace period by the wall clock (the mark's time), and, for a mark this
 * process recorded, by its monotonic clock too.
 */
async function waitForGrace(
  mark: PruneMark,
  graceMs: number,
  markedMonotonic: number | undefined,
  signal: AbortSignal | undefined,
): Promise<void> {
  for (;;) {
    const byWall = sweepAfterMs(mark, graceMs) - Date.now();
    const byMonotonic = markedMonotonic === undefined ? 0 : markedMonotonic + graceMs - performance.now();
    const remaining = Math.max(byWall, byMonotonic);
    if (remaining <= 0) return;
    await sleep(Math.ceil(remaining) + 1, signal);
  }
}

/**
 * One call of a two-phase prune (see {@link Repository.prune}): records a mark if none is pending, sweeps the
 * pending mark once it is older than the grace period (or waits for that, with `wait`), else reports it pending.
 *
 * @internal
 */
export async function pruneRepository(
  context: RepositoryContext,
  options: PruneOptions,
): Promise<PruneResult> {
  const { signal, wait = false } = options;
  const { store } = context;
  context.checkOpen();
  const graceMs = options.graceMs ?? 2 * context.lockStaleAfterMs;
  if (typeof graceMs !== 'number' || !Number.isFinite(graceMs) || !(graceMs > context.lockStaleAfterMs)) {
    throw new InvalidArgumentError(
      `graceMs must be a number of milliseconds above the repository's lockStaleAfterMs (${context.lockStaleAfterMs}), got ${graceMs}`,
    );
  }
  const settings: PruneSettings = { graceMs, scratchDirectory: options.scratchDirectory, signal };
  const nothing = {
    chunksRemoved: 0,
    indexSegmentsRemoved: 0,
    bytesFreed: 0,
    indexesRemoved: 0,
    staleLocksRemoved: 0,
    lockedSkipped: 0,
  };

  const found = await readMark(context, signal);
  let pending = found === 'invalid' ? undefined : found;
  let markedMonotonic: number | undefined;
  if (pending === undefined) {
    // A blob that is not a valid mark is never swept; a new mark replaces it.
    if (found === 'invalid') await store.delete(PRUNE_MARK_KEY, { signal });
    pending = await mark(context, settings);
    markedMonotonic = performance.now();
    testStop('marked');
    if (!wait || pending === undefined)
      return { phase: 'marked', ...nothing, ...describeMark(pending, graceMs) };
  }
  if (wait) await waitForGrace(pending, graceMs, markedMonotonic, signal);
  else if (Date.now() < sweepAfterMs(pending, graceMs)) {
    return { phase: 'pending', ...nothing, ...describeMark(pending, graceMs) };
  }

  const { lock, staleLocksRemoved } = await acquirePruneLock(
    store,
    context.config.id,
    context.lockStaleAfterMs,
    signal,
  );
  try {
    // Under the lock, the mark is still the one that is due (another prune may have swept it just now).
    const current = await readMark(context, signal);
    if (
      current === 'invalid' ||
      current === undefined ||
      current.markId !== pending.markId ||
      Date.now() < sweepAfterMs(current, graceMs)
    ) {
      await lock.release();
      const shown = current === 'invalid' ? undefined : current;
      return { phase: 'pending', ...nothing, staleLocksRemoved, ...describeMark(shown, graceMs) };
    }
    let outcome: SweepOutcome;
    try {
      outcome = await sweep(context, current, lock, settings);
    } catch (error) {
      if (!damagedMarkErrors.has(error as object)) throw error;
      // Only candidates read before the damage were deleted (each checked unreferenced now): drop the mark, so
      // the next prune marks anew rather than failing on it for ever.
      await store.delete(PRUNE_MARK_KEY, { signal });
      await deleteMarkSegments(store, current.markId, signal);
      throw new RepositoryCorruptError(
        `${(error as Error).message}; the mark was discarded, and the next prune records a new one`,
        { cause: error, retryable: true },
      );
    }
    await lock.release();
    return {
      phase: 'swept',
      chunksRemoved: outcome.chunksRemoved,
      indexSegmentsRemoved: outcome.segmentsRemoved,
      bytesFreed: outcome.bytesFreed,
      indexesRemoved: outcome.indexesRemoved,
      staleLocksRemoved,
      lockedSkipped: outcome.lockedSkipped,
      ...(outcome.lockedSkippedUntil === undefined
        ? {}
        : { lockedSkippedUntil: new Date(outcome.lockedSkippedUntil).toISOString() }),
      ...describeMark(outcome.next, graceMs),
    };
  } catch (error) {
    await lock.release().catch(() => undefined);
    throw error;
  }
}
