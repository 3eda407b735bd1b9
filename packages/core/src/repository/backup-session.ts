import { createHash } from 'node:crypto';
import { writeSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import {
  InvalidArgumentError,
  PointWithdrawnError,
  RepositoryCorruptError,
  RepositoryLockedError,
} from '../errors/drkit-error.js';
import { sleep } from '../util/abort.js';
import { CHUNK_BLOB_HEADER_BYTES, chunkIdFromKey, chunkKey, encodeChunkBlob } from './chunk-blob.js';
import { CHUNK_ID_BYTES, chunkIdFromHash, chunkIdToHash, isZeroId, sameId } from './chunk-id.js';
import { ChunkIdSet } from './chunk-id-set.js';
import {
  chunkCountOf,
  encodeManifest,
  encodeSegment,
  layoutProblem,
  SEGMENT_CHUNKS,
  StoredPointIndex,
  segmentCountOf,
  segmentKey,
} from './chunk-index.js';
import {
  checkNewPoint,
  indexKey,
  newPointId,
  pointKey,
  recoveryPoint,
  serializePoint,
} from './point-metadata.js';
import { referencedChunkIds, referencedSegmentKeys } from './referenced-chunks.js';
import { damagedKey, type RepositoryContext } from './repository-context.js';
import { acquireBackupLock, type HeldLock, pruneLockLive } from './repository-lock.js';
import type { StoreRetention } from './store.js';
import { TaskWindow } from './task-window.js';
import type {
  AdoptedPoint,
  BackupSession,
  BeginBackupOptions,
  ChunkId,
  DiskLineage,
  EncodedChunkBlob,
  NewPoint,
  PointIndex,
  PointIndexBuilder,
  RecoveryPoint,
} from './types.js';

/** Below this many unchecked chunks, commit asks the store about each; above, it lists the chunk folders. */
const HAS_CHECK_LIMIT = 256;
/** Existence checks run at once. */
const HAS_CHECKS = 8;
/** Lock extensions (`retain`) run at once. */
const RETAIN_CALLS = 8;
/**
 * How many ids a session remembers (written or found) before it forgets those of sealed segments: its memory
 * stays bounded (about 64 bytes an id) however many chunks a backup writes. Mutable for tests only.
 *
 * @internal
 */
export const SESSION_LIMITS: { knownIds: number } = { knownIds: 1 << 18 };
/** Chunk ids named in an error message. */
const IDS_SHOWN = 5;
/**
 * How long a commit whose lock may have lapsed waits for a running prune to finish before it withdraws its point,
 * in stale thresholds.
 */
const PRUNE_WAIT_THRESHOLDS = 3;

/**
 * Stops this process for a test (`DRKIT_TEST_BACKUP_STOP_AT=<phase>`): announces the phase on standard error,
 * then sends itself SIGSTOP, so a test can keep the session paused exactly there and SIGCONT it. No-op otherwise.
 */
function testStop(phase: 'before-point'): void {
  if (process.env.DRKIT_TEST_BACKUP_STOP_AT !== phase) return;
  writeSync(2, `drkit-test: backup stopping at ${phase}\n`);
  process.kill(process.pid, 'SIGSTOP');
}

function checkHash(hash: Uint8Array): void {
  if (!(hash instanceof Uint8Array) || hash.byteLength !== CHUNK_ID_BYTES) {
    throw new InvalidArgumentError(`a chunk hash must be a ${CHUNK_ID_BYTES}-byte Uint8Array`);
  }
}

function checkLineage(lineage: DiskLineage): DiskLineage {
  for (const field of ['platformId', 'hostId', 'diskId'] as const) {
    if (typeof lineage?.[field] !== 'string' || lineage[field] === '') {
      throw new InvalidArgumentError(`${field} must be a non-empty string`);
    }
  }
  return { platformId: lineage.platformId, hostId: lineage.hostId, diskId: lineage.diskId };
}

/** Some ids and how many there are, for a message. */
function sample(ids: readonly string[], total: number): string {
  return `${ids.slice(0, IDS_SHOWN).join(', ')}${total > IDS_SHOWN ? `, … (${total} in all)` : ''}`;
}

/**
 * Whether a found chunk blob of this size lost its content: a name made durable before its data (a machine crash
 * at sync level `filesystem` or `none` leaves it empty). Every chunk blob holds a header and a non-empty payload.
 */
function hollowSize(size: number): boolean {
  return size <= CHUNK_BLOB_HEADER_BYTES;
}

/** A segment being built: the ids set so far and which positions were set. */
interface Draft {
  readonly ids: Uint8Array;
  readonly set: Uint8Array;
  /** The segment was zeroed as a whole first: unset positions are zeros, not the base's ids. */
  readonly zeroBase: boolean;
}

/** The index a session builds, segment by segment; see {@link PointIndexBuilder}. */
class SessionIndexBuilder implements PointIndexBuilder {
  readonly chunkCount: number;
  readonly segmentCount: number;
  /** The manifest being built: 32 bytes per segment (zero until sealed). */
  readonly segmentIds: Uint8Array;
  private readonly drafts = new Map<number, Draft>();
  /** Segments zeroed as a whole (over a base whose segment is not all zero). */
  private readonly zeroed = new Set<number>();
  /** Segments below this are written and final. */
  private sealed = 0;
  /** The adopted index this one builds on, if any. */
  get baseIndex(): StoredPointIndex | undefined {
    return this.base;
  }
  private flushing: Promise<void> = Promise.resolve();
  /** Non-zero ids of sealed segments that are neither adopted nor known: looked up in the store at commit. */
  readonly unknown = new ChunkIdSet();
  /** Ids of sealed segments that verify marked damaged and the session did not rewrite. */
  readonly damagedNamed = new ChunkIdSet();

  constructor(
    readonly session: RepositoryBackupSession,
    readonly capacityBytes: number,
    readonly chunkSize: number,
    private readonly base: StoredPointIndex | undefined,
    /** Whether unset positions keep the base's ids (else they are zeros; the base only vouches for ids). */
    private readonly inherit: boolean,
  ) {
    this.chunkCount = chunkCountOf(capacityBytes, chunkSize);
    this.segmentCount = segmentCountOf(this.chunkCount);
    this.segmentIds = new Uint8Array(this.segmentCount * CHUNK_ID_BYTES);
  }

  private segmentLength(s: number): number {
    return Math.min(SEGMENT_CHUNKS, this.chunkCount - s * SEGMENT_CHUNKS);
  }

  /** Whether position `i` has a chunk of the same length in the base (only then it may inherit its id). */
  private sameLengthInBase(i: number): boolean {
    const { base } = this;
    if (base === undefined || i >= base.chunkCount) return false;
    const length = (capacity: number) => Math.min(this.chunkSize, capacity - i * this.chunkSize);
    return length(this.capacityBytes) === length(base.capacityBytes);
  }

  /** Whether unset positions of segment `s` would take non-zero ids from the base. */
  private inherits(s: number): boolean {
    return this.inherit && this.baseHasData(s);
  }

  /** Whether segment `s` of the base holds any non-zero id. */
  private baseHasData(s: number): boolean {
    return this.base !== undefined && s < this.base.segmentCount && !this.base.isZeroSegment(s);
  }

  private check(i: number): number {
    if (!Number.isInteger(i) || i < 0 || i >= this.chunkCount) {
      throw new InvalidArgumentError(`chunk position ${i} is outside 0..${this.chunkCount - 1}`);
    }
    const s = Math.floor(i / SEGMENT_CHUNKS);
    if (s < this.sealed) {
      throw new InvalidArgumentError(`chunk position ${i} is in segment ${s}, which was already written`);
    }
    return s;
  }

  private draft(s: number): Draft {
    let draft = this.drafts.get(s);
    if (draft === undefined) {
      const n = this.segmentLength(s);
      draft = {
        ids: new Uint8Array(n * CHUNK_ID_BYTES),
        set: new Uint8Array(n),
        zeroBase: this.zeroed.delete(s),
      };
      this.drafts.set(s, draft);
    }
    return draft;
  }

  setId(i: number, id: Uint8Array): void {
    const s = this.check(i);
    if (!(id instanceof Uint8Array) || id.byteLength !== CHUNK_ID_BYTES) {
      throw new InvalidArgumentError(`a chunk id must be ${CHUNK_ID_BYTES} bytes`);
    }
    const draft = this.draft(s);
    const k = i - s * SEGMENT_CHUNKS;
    draft.ids.set(id, k * CHUNK_ID_BYTES);
    draft.set[k] = 1;
  }

  setZero(i: number): void {
    const s = this.check(i);
    // Nothing to record where the default already is zero (no draft, and no base data to inherit).
    if (!this.drafts.has(s) && (this.zeroed.has(s) || !this.inherits(s))) return;
    const draft = this.draft(s);
    const k = i - s * SEGMENT_CHUNKS;
    draft.ids.fill(0, k * CHUNK_ID_BYTES, (k + 1) * CHUNK_ID_BYTES);
    draft.set[k] = 1;
  }

  setZeroRange(from: number, to: number): void {
    if (!Number.isInteger(to) || to < from || to > this.chunkCount) {
      throw new InvalidArgumentError(`chunk range ${from}..${to} is outside 0..${this.chunkCount}`);
    }
    if (to === from) return;
    this.check(from);
    let i = from;
    while (i < to) {
      const s = Math.floor(i / SEGMENT_CHUNKS);
      const start = s * SEGMENT_CHUNKS;
      const end = start + this.segmentLength(s);
      if (i === start && to >= end) {
        this.drafts.delete(s);
        if (this.inherits(s)) this.zeroed.add(s);
        i = end;
        continue;
      }
      for (const stop = Math.min(end, to); i < stop; i++) this.setZero(i);
    }
  }

  flushBelow(end: number, options: { signal?: AbortSignal } = {}): Promise<void> {
    if (!Number.isInteger(end) || end < 0 || end > this.chunkCount) {
      throw new InvalidArgumentError(`chunk position ${end} is outside 0..${this.chunkCount}`);
    }
    const target = end === this.chunkCount ? this.segmentCount : Math.floor(end / SEGMENT_CHUNKS);
    const run = this.flushing.then(async () => {
      if (this.sealed >= target) return;
      while (this.sealed < target) {
        await this.seal(this.sealed, options.signal);
        this.sealed++;
      }
      const drafts = this.drafts;
      await this.session.forgetSettled(
        (function* ids() {
          for (const draft of drafts.values()) yield draft.ids;
        })(),
        options.signal,
      );
    });
    this.flushing = run.catch(() => undefined);
    return run;
  }

  /** Finalises segment `s`: its id in the manifest, its blob written unless it is zero or the base's. */
  private async seal(s: number, signal: AbortSignal | undefined): Promise<void> {
    const { base, session } = this;
    const n = this.segmentLength(s);
    const first = s * SEGMENT_CHUNKS;
    const draft = this.drafts.get(s);
    const zeroed = this.zeroed.delete(s);
    this.drafts.delete(s);
    if (draft === undefined && (zeroed || !this.inherits(s))) return; // all zero: the zero id
    if (
      draft === undefined &&
      base !== undefined &&
      base.segmentLength(s) === n &&
      this.sameLengthInBase(first + n - 1)
    ) {
      // Untouched: the base's segment by reference (its chunks are adopted; damaged ones are refused).
      const id = base.segmentId(s);
      if (session.hasDamaged()) {
        const { ids } = await base.segment(s, { signal });
        session.checkIds(ids, ids, this);
      }
      this.segmentIds.set(id, s * CHUNK_ID_BYTES);
      return;
    }
    const baseSegment = this.baseHasData(s) ? await base!.segment(s, { signal }) : undefined;
    const ids = new Uint8Array(n * CHUNK_ID_BYTES);
    for (let k = 0; k < n; k++) {
      const at = k * CHUNK_ID_BYTES;
      if (draft?.set[k] === 1) ids.set(draft.ids.subarray(at, at + CHUNK_ID_BYTES), at);
      else if (
        this.inherit &&
        draft?.zeroBase !== true &&
        baseSegment !== undefined &&
        k < baseSegment.chunkCount &&
        this.sameLengthInBase(first + k)
      ) {
        ids.set(baseSegment.ids.subarray(at, at + CHUNK_ID_BYTES), at);
      }
    }
    session.checkIds(ids, baseSegment?.ids, this);
    const encoded = encodeSegment(ids, session.chunkIdKey);
    this.segmentIds.set(encoded.id, s * CHUNK_ID_BYTES);
    if (encoded.blob === undefined) return;
    if (base !== undefined && s < base.segmentCount && sameId(encoded.id, 0, base.segmentId(s), 0)) return;
    await session.putSegment(encoded.id, encoded.blob, signal);
  }

  /** Seals every segment and returns the manifest blob. */
  async finish(signal: AbortSignal | undefined): Promise<Uint8Array> {
    await this.flushBelow(this.chunkCount, { signal });
    return encodeManifest({
      chunkSize: this.chunkSize,
      capacityBytes: this.capacityBytes,
      segmentIds: this.segmentIds,
    });
  }
}

class RepositoryBackupSession implements BackupSession {
  /**
   * Chunks this session wrote or found present and that an unsealed segment may still name: sealing does not
   * check them again. Forgotten past `SESSION_LIMITS.knownIds` once their segments are sealed.
   */
  private known = new ChunkIdSet(4096);
  /**
   * Chunks this session wrote (`durable: false`) or found present (`has`, or the commit's existence check) that no
   * adopted point vouches for: none is known durable yet, so commit syncs them first, in one step (earlier when
   * there are many).
   */
  private found = new ChunkIdSet();
  /** Segment blobs this session wrote or found present, by hex id. */
  private readonly segments = new Set<string>();
  /** Segment blobs written (`durable: false`) or found present, synced like {@link found}. */
  private readonly foundSegments: string[] = [];
  /** Of {@link found}: chunks this session's put wrote, hence locked by it (immutable points). */
  private lockedByPut = new ChunkIdSet();
  /** Of {@link foundSegments}: segments this session's put wrote, hence locked by it. */
  private readonly segmentsLockedByPut = new Set<string>();
  /**
   * In a repository of immutable points: the lock of every blob this session writes, and of every chunk or
   * segment it finds stored (of unknown origin): the session's start plus the period and the window.
   */
  private readonly retainNew: StoreRetention | undefined;
  /** Lock extensions issued, for tests of their cost. */
  retainCalls = 0;
  private readonly damagedIds = new ChunkIdSet();
  /** Chunks found named in the store with their content lost ({@link hollowSize}): `putChunk` overwrites them. */
  private readonly hollow = new ChunkIdSet();
  /** Indexes this session adopted (the only ones {@link createIndex} accepts as a base), with their points. */
  private readonly adopted = new Map<StoredPointIndex, RecoveryPoint>();
  private readonly written = { bytesStored: 0, chunksWritten: 0, segmentsWritten: 0 };
  private state: 'open' | 'committed' | 'aborted' = 'open';

  get chunkIdKey(): Uint8Array | undefined {
    return this.context.idKey;
  }

  get putSettlesPresence(): boolean {
    return this.context.store.createOnlyProvesWhole === true;
  }

  constructor(
    private readonly context: RepositoryContext,
    private readonly lineage: DiskLineage,
    private readonly lock: HeldLock,
    /** Chunks marked damaged when the session began, minus those it rewrote. */
    private readonly damaged: Set<ChunkId>,
  ) {
    for (const id of damaged) this.damagedIds.add(chunkIdToHash(id));
    const policy = context.immutability;
    this.retainNew =
      policy === undefined
        ? undefined
        : { mode: policy.mode, until: new Date(context.now() + policy.periodMs + policy.windowMs) };
  }

  /**
   * The lock of a blob written or found now: the session's lock date, or now + period when a backup has run past
   * it (a store refuses a date in the past). Never earlier than the session's date, which the floor counts on.
   */
  private lockNow(): StoreRetention | undefined {
    const retention = this.retainNew;
    const policy = this.context.immutability;
    if (retention === undefined || policy === undefined) return undefined;
    const soonest = this.context.now() + policy.periodMs;
    return soonest <= retention.until.getTime()
      ? retention
      : { mode: retention.mode, until: new Date(soonest) };
  }

  /** The `retain` option of a put: the session's lock in a repository of immutable points. */
  private get retainOption(): { retain?: StoreRetention } {
    const retention = this.lockNow();
    return retention === undefined ? {} : { retain: retention };
  }

  private checkOpen(): void {
    if (this.state !== 'open') {
      throw new RepositoryLockedError(
        `this backup session was ${this.state} and holds no lock; begin a new one`,
        {
          retryable: false,
        },
      );
    }
    this.context.checkOpen();
  }

  /** How many chunk ids the session remembers now (for tests of its memory bound). */
  get rememberedIds(): number {
    return this.known.size;
  }

  /** Whether any chunk is marked damaged (and not rewritten by this session). */
  hasDamaged(): boolean {
    return this.damaged.size > 0;
  }

  /**
   * Classifies the non-zero ids of a sealed segment: an id equal to the base's at its position is adopted (under
   * this session's lock it cannot be pruned), a known id needs nothing, any other is checked at commit; an id
   * marked damaged and not rewritten is remembered, so commit refuses.
   */
  checkIds(
    ids: Uint8Array,
    baseIds: Uint8Array | undefined,
    into: { readonly unknown: ChunkIdSet; readonly damagedNamed: ChunkIdSet },
  ): void {
    for (let at = 0; at < ids.byteLength; at += CHUNK_ID_BYTES) {
      if (isZeroId(ids, at)) continue;
      if (this.damaged.size > 0 && this.damagedIds.has(ids, at)) {
        const id = chunkIdFromHash(ids.subarray(at, at + CHUNK_ID_BYTES));
        if (this.damaged.has(id)) {
          into.damagedNamed.add(ids, at);
          continue;
        }
      }
      const adopted = baseIds !== undefined && at < baseIds.byteLength && sameId(ids, at, baseIds, at);
      if (!adopted && !this.known.has(ids, at)) into.unknown.add(ids, at);
    }
  }

  /**
   * Called after segments are sealed: past `SESSION_LIMITS.knownIds` remembered ids, keeps only those the open
   * segments name (the sealed ones are settled), and makes the chunks found so far durable now rather than at
   * commit, so memory does not grow with the disk.
   */
  async forgetSettled(openIds: Iterable<Uint8Array>, signal: AbortSignal | undefined): Promise<void> {
    if (this.known.size > SESSION_LIMITS.knownIds) {
      const kept = new ChunkIdSet(4096);
      for (const ids of openIds) {
        for (let at = 0; at < ids.byteLength; at += CHUNK_ID_BYTES) {
          if (!isZeroId(ids, at) && this.known.has(ids, at)) kept.add(ids, at);
        }
      }
      this.known = kept;
    }
    if (this.segments.size > SESSION_LIMITS.knownIds) this.segments.clear();
    if (this.found.size + this.foundSegments.length > SESSION_LIMITS.knownIds) {
      await this.syncFound(signal);
      this.found = new ChunkIdSet();
      this.lockedByPut = new ChunkIdSet();
      this.foundSegments.length = 0;
      this.segmentsLockedByPut.clear();
    }
  }

  /** Writes a segment blob create-only (once per session). */
  async putSegment(id: Uint8Array, blob: Uint8Array, signal: AbortSignal | undefined): Promise<void> {
    const hex = chunkIdFromHash(id);
    if (this.segments.has(hex)) return;
    const key = segmentKey(hex);
    // Written (without a sync) or found present, the blob is made durable by the session's one sync (syncFound).
    if (
      await this.context.store.put(key, blob, {
        ifAbsent: true,
        durable: false,
        signal,
        ...this.retainOption,
      })
    ) {
      this.written.segmentsWritten++;
      this.written.bytesStored += blob.byteLength;
      this.segmentsLockedByPut.add(key);
    }
    this.foundSegments.push(key);
    this.segments.add(hex);
  }

  async adoptPoint(pointId: string, options: { signal?: AbortSignal } = {}): Promise<AdoptedPoint> {
    this.checkOpen();
    this.lock.checkLive();
    const { signal } = options;
    // Read under this session's lock: no prune runs until it is released, so every chunk and segment of a
    // point that exists now stays. Ids an index keeps from it need no existence check at commit.
    const point = await this.context.getPoint(pointId, signal);
    const index = await this.context.openIndex(point, signal);
    this.adopted.set(index, point);
    return { point, index };
  }

  createIndex(layout: {
    readonly capacityBytes: number;
    readonly chunkSize: number;
    readonly base?: PointIndex;
    readonly inherit?: boolean;
  }): PointIndexBuilder {
    this.checkOpen();
    const { capacityBytes, chunkSize, base, inherit = true } = layout;
    const problem = layoutProblem(capacityBytes, chunkSize);
    if (problem !== undefined) throw new InvalidArgumentError(`cannot back up this disk: ${problem}`);
    if (base !== undefined) {
      if (!(base instanceof StoredPointIndex) || !this.adopted.has(base)) {
        throw new InvalidArgumentError('the base index must be one adoptPoint of this session returned');
      }
      if (base.chunkSize !== chunkSize) {
        throw new InvalidArgumentError(`chunk size ${chunkSize} differs from the base's ${base.chunkSize}`);
      }
    }
    return new SessionIndexBuilder(
      this,
      capacityBytes,
      chunkSize,
      base as StoredPointIndex | undefined,
      inherit,
    );
  }

  async hasChunk(hash: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<boolean> {
    checkHash(hash);
    this.checkOpen();
    options.signal?.throwIfAborted();
    const id = chunkIdFromHash(hash);
    if (this.damaged.has(id)) return false;
    if (this.known.has(hash)) return true;
    const presence = await this.presence(chunkKey(id), options.signal);
    if (presence === 'hollow') this.hollow.add(hash);
    const present = presence === 'present';
    if (present) {
      this.known.add(hash);
      this.found.add(hash);
    }
    return present;
  }

  /** Whether a chunk blob is stored, and whole as far as its size tells (one stat where the store has `size`). */
  private async presence(
    key: string,
    signal: AbortSignal | undefined,
  ): Promise<'absent' | 'present' | 'hollow'> {
    const { store } = this.context;
    if (store.size === undefined) return (await store.has(key, { signal })) ? 'present' : 'absent';
    const size = await store.size(key, { signal });
    if (size === undefined) return 'absent';
    return hollowSize(size) ? 'hollow' : 'present';
  }

  async putChunk(chunk: EncodedChunkBlob, options: { signal?: AbortSignal } = {}): Promise<boolean> {
    checkHash(chunk?.hash);
    this.checkOpen();
    this.lock.checkLive();
    options.signal?.throwIfAborted();
    const id = chunkIdFromHash(chunk.hash);
    const { store } = this.context;
    if (this.damaged.has(id)) {
      const blob = encodeChunkBlob(chunk);
      await store.put(chunkKey(id), blob, { signal: options.signal, ...this.retainOption });
      await store.delete(damagedKey(id), { signal: options.signal });
      this.damaged.delete(id);
      this.known.add(chunk.hash);
      this.written.chunksWritten++;
      this.written.bytesStored += blob.byteLength;
      return true;
    }
    if (this.known.has(chunk.hash)) return false; // no request: written or found by this session
    const blob = encodeChunkBlob(chunk);
    // Written or found present, the blob is made durable by the session's one sync (syncFound) before commit.
    // A name found with its content lost (by hasChunk, or here when the create-only put finds it) is overwritten.
    let written = await store.put(chunkKey(id), blob, {
      ifAbsent: !this.hollow.has(chunk.hash),
      durable: false,
      signal: options.signal,
      ...this.retainOption,
    });
    // A taken key is checked for lost content, unless the store's create-only write proves a whole blob.
    if (
      !written &&
      store.createOnlyProvesWhole !== true &&
      (await this.presence(chunkKey(id), options.signal)) !== 'present'
    ) {
      written = await store.put(chunkKey(id), blob, {
        durable: false,
        signal: options.signal,
        ...this.retainOption,
      });
    }
    this.known.add(chunk.hash);
    this.found.add(chunk.hash);
    if (written) {
      this.lockedByPut.add(chunk.hash);
      this.written.chunksWritten++;
      this.written.bytesStored += blob.byteLength;
    }
    return written;
  }

  /** Ids (hex) of the chunks in `unknown` that the store does not hold. */
  private async missingChunks(unknown: ChunkIdSet, signal: AbortSignal | undefined): Promise<ChunkIdSet> {
    const { store } = this.context;
    const missing = new ChunkIdSet();
    if (unknown.size <= HAS_CHECK_LIMIT) {
      const ids: Uint8Array[] = [];
      unknown.forEach((id) => {
        ids.push(id.slice());
      });
      const window = new TaskWindow(HAS_CHECKS);
      for (const id of ids) {
        await window.add(async () => {
          if ((await this.presence(chunkKey(id), signal)) !== 'present') missing.add(id);
        });
      }
      await window.drain();
      return missing;
    }
    const prefixes = new Set<number>();
    unknown.forEach((id) => {
      prefixes.add(id[0]!);
    });
    const found = new ChunkIdSet(unknown.size);
    for (const prefix of [...prefixes].sort((a, b) => a - b)) {
      const folder = `chunks/${prefix.toString(16).padStart(2, '0')}/`;
      for await (const entry of store.list(folder, { signal })) {
        const id = chunkIdFromKey(entry.key);
        if (id === undefined) continue;
        const bytes = chunkIdToHash(id);
        if (unknown.has(bytes) && !hollowSize(entry.size)) found.add(bytes);
      }
    }
    unknown.forEach((id) => {
      if (!found.has(id)) missing.add(id);
    });
    return missing;
  }

  /** Checks that every non-zero chunk the sealed segments name is stored and not marked damaged. */
  private async checkChunks(index: SessionIndexBuilder, signal: AbortSignal | undefined): Promise<void> {
    const { damagedNamed } = index;
    if (damagedNamed.size > 0) {
      const ids: string[] = [];
      damagedNamed.forEach((id) => {
        if (ids.length < IDS_SHOWN) ids.push(chunkIdFromHash(id));
      });
      throw new RepositoryCorruptError(
        `cannot commit: the index names chunks that verify marked damaged and this session did not rewrite (${sample(ids, damagedNamed.size)}); read them from the source again and putChunk them`,
        { retryable: false },
      );
    }
    const unknown = new ChunkIdSet(Math.max(16, index.unknown.size));
    index.unknown.forEach((id) => {
      if (!this.known.has(id)) unknown.add(id);
    });
    const missing = unknown.size === 0 ? unknown : await this.missingChunks(unknown, signal);
    if (missing.size > 0) {
      const ids: string[] = [];
      missing.forEach((id) => {
        if (ids.length < IDS_SHOWN) ids.push(chunkIdFromHash(id));
      });
      throw new RepositoryCorruptError(
        `cannot commit: the index names chunks that are not in the ${this.context.where} (${sample(ids, missing.size)}); putChunk them first`,
        { retryable: false },
      );
    }
    unknown.forEach((id) => {
      this.known.add(id);
      this.found.add(id);
    });
  }

  /**
   * Makes every chunk and segment the point names and no adopted point vouches for durable, in one step: those
   * this session wrote (`durable: false`) and those it found present (another writer, or a run that crashed, may
   * not have synced them). The point must not outlive any of them in a crash. One `Store.sync`, before the
   * manifest and the metadata are written (a syncfs, or one fsync per folder, on a local folder).
   */
  private async syncFound(signal: AbortSignal | undefined): Promise<void> {
    const { store } = this.context;
    if (this.found.size === 0 && this.foundSegments.length === 0) return;
    const { found, foundSegments } = this;
    if (store.sync !== undefined) {
      await store.sync(
        (function* keys() {
          for (const id of found.values()) yield chunkKey(id);
          yield* foundSegments;
        })(),
        { signal },
      );
    }
    await this.retainFound(signal);
  }

  /**
   * Locks blobs until `retention`, {@link RETAIN_CALLS} at once: `retain(key)` queues one (and counts it in
   * {@link retainCalls}), `window.drain()` waits for them all. A key the store no longer holds fails the commit with
   * a {@link RepositoryCorruptError} saying `missing(key)`.
   */
  private retainer(
    retention: StoreRetention,
    missing: (key: string) => string,
    signal: AbortSignal | undefined,
  ): { window: TaskWindow; retain(key: string): Promise<void> } {
    const immutability = this.context.store.immutability!;
    const window = new TaskWindow(RETAIN_CALLS);
    const retain = (key: string) =>
      window.add(async () => {
        this.retainCalls++;
        if (!(await immutability.retain(key, retention, { signal }))) {
          throw new RepositoryCorruptError(`cannot commit: ${missing(key)}; back the disk up again`);
        }
      });
    return { window, retain };
  }

  /**
   * In a repository of immutable points: locks every chunk and segment this session found stored rather than
   * wrote (deduplicated, of unknown origin) until the session's lock date, one store call each, so the cost
   * follows the data the backup read. What it wrote was locked by its put; what it inherits from its parent is
   * covered by the parent's `chunksLockedUntil` (see commit).
   */
  private async retainFound(signal: AbortSignal | undefined): Promise<void> {
    const retention = this.lockNow();
    const immutability = this.context.store.immutability;
    if (retention === undefined || immutability === undefined) return;
    const { window, retain } = this.retainer(
      retention,
      (key) => `${key} vanished from the ${this.context.where} before it could be locked`,
      signal,
    );
    for (const id of this.found.values()) {
      if (!this.lockedByPut.has(id)) await retain(chunkKey(id));
    }
    for (const key of this.foundSegments) if (!this.segmentsLockedByPut.has(key)) await retain(key);
    await window.drain();
  }

  /**
   * In a repository of immutable points, before the point's metadata is written: the date until which every
   * chunk and segment the point references is locked, at least `lockedUntil`. Inherited blobs are locked until
   * the base's `chunksLockedUntil`, the others until the session's lock date; when the earlier of the two falls
   * before `lockedUntil`, every blob the point references is locked anew until now + period + window (once a
   * window: the cost is amortised over the backups of that window).
   */
  private async lockFloor(
    point: RecoveryPoint,
    base: RecoveryPoint | undefined,
    lockedUntil: number,
    signal: AbortSignal | undefined,
  ): Promise<number> {
    const policy = this.context.immutability!;
    const inherited =
      base === undefined
        ? Number.POSITIVE_INFINITY
        : base.chunksLockedUntil === undefined
          ? 0
          : Date.parse(base.chunksLockedUntil);
    const floor = Math.min(inherited, this.retainNew!.until.getTime());
    if (floor >= lockedUntil) return floor;
    const until = this.context.now() + policy.periodMs + policy.windowMs;
    const retention: StoreRetention = { mode: policy.mode, until: new Date(until) };
    const { window, retain } = this.retainer(
      retention,
      (key) => `${key}, which the point names, is not in the ${this.context.where}`,
      signal,
    );
    let previous = '';
    for await (const key of referencedSegmentKeys(this.context, point, signal)) {
      if (key !== previous) await retain(key);
      previous = key;
    }
    for await (const bytes of referencedChunkIds(this.context, point, signal)) {
      const key = chunkKey(bytes);
      if (key !== previous) await retain(key);
      previous = key;
    }
    await window.drain();
    return until;
  }

  async commit(
    point: NewPoint,
    index: PointIndexBuilder,
    options: { signal?: AbortSignal } = {},
  ): Promise<RecoveryPoint> {
    const { signal } = options;
    this.checkOpen();
    signal?.throwIfAborted();
    this.lock.checkLive();
    const described = checkNewPoint(point);
    for (const field of ['platformId', 'hostId', 'diskId'] as const) {
      if (described[field] !== this.lineage[field]) {
        throw new InvalidArgumentError(
          `point.${field} is ${JSON.stringify(described[field])} but the session was begun for ${JSON.stringify(this.lineage[field])}`,
        );
      }
    }
    if (!(index instanceof SessionIndexBuilder) || index.session !== this) {
      throw new InvalidArgumentError('the index must be one createIndex of this session returned');
    }
    if (index.capacityBytes !== described.capacityBytes || index.chunkSize !== described.chunkSize) {
      throw new InvalidArgumentError(
        `the index is of a ${index.capacityBytes}-byte disk in ${index.chunkSize}-byte chunks; the point says ${described.capacityBytes} in ${described.chunkSize}-byte chunks`,
      );
    }
    const blob = await index.finish(signal);
    await this.checkChunks(index, signal);
    await this.syncFound(signal);

    const { store } = this.context;
    const digest = createHash('sha256').update(blob).digest('hex');
    const createdAt = new Date(described.createdAt);
    const policy = this.context.immutability;
    // The point's own lock date: its metadata and manifest are locked until then, and retention keeps it.
    const lockedUntil = policy === undefined ? undefined : this.context.now() + policy.periodMs;
    const lockOption: { retain?: StoreRetention } =
      policy === undefined ? {} : { retain: { mode: policy.mode, until: new Date(lockedUntil!) } };
    let id: string;
    do {
      id = newPointId(createdAt);
    } while (!(await store.put(indexKey(id), blob, { ifAbsent: true, signal, ...lockOption })));
    let committed = recoveryPoint(id, described, digest, {
      ...this.written,
      bytesStored: this.written.bytesStored + blob.byteLength,
    });
    if (lockedUntil !== undefined) {
      const base = index.baseIndex === undefined ? undefined : this.adopted.get(index.baseIndex);
      const floor = await this.lockFloor(committed, base, lockedUntil, signal);
      committed = {
        ...committed,
        lockedUntil: new Date(lockedUntil).toISOString(),
        chunksLockedUntil: new Date(floor).toISOString(),
      };
    }
    try {
      // Last look at the lock: a prune that judged it stale may have deleted chunks this point names.
      await this.lock.confirm(signal);
    } catch (error) {
      await store.delete(indexKey(id)).catch(() => undefined);
      throw error;
    }
    testStop('before-point');
    if (
      !(await store.put(pointKey(id), serializePoint(committed), { ifAbsent: true, signal, ...lockOption }))
    ) {
      throw new RepositoryCorruptError(`point metadata ${pointKey(id)} exists without having been committed`);
    }
    // A pause between the confirmation above and this put (SIGSTOP, a suspended VM) may have let a sweep judge
    // the lock stale and delete chunks the point names. Only then (by our own two clocks) is the point checked.
    if (this.lock.mayHaveLapsed()) {
      try {
        await this.checkStands(committed, signal);
      } catch (error) {
        this.state = 'aborted';
        await this.lock.release().catch(() => undefined);
        throw error;
      }
    }
    this.state = 'committed';
    this.context.rememberPoint(committed);
    // The point is committed; a lock left behind (delete failed) goes stale and a prune removes it.
    await this.lock.release().catch(() => undefined);
    return committed;
  }

  /**
   * For a point whose metadata was written after this session's lock may have lapsed: waits until no prune lock
   * is live (a sweep that began before the metadata existed has finished; any later sweep sees the point), then
   * checks that the manifest and every segment and chunk the point names exist. All present: the point stands.
   * Otherwise, or when the check cannot finish (deadline, abort, a failed read), the point is withdrawn: its
   * metadata deleted, then its manifest.
   *
   * @throws {@link PointWithdrawnError} naming what was missing; {@link RepositoryLockedError} (retryable) when a
   * prune held the repository past the deadline; the signal's reason when aborted.
   */
  private async checkStands(point: RecoveryPoint, signal: AbortSignal | undefined): Promise<void> {
    const { store, lockStaleAfterMs } = this.context;
    let missing: { manifest: boolean; segments: string[]; chunks: string[]; total: number };
    try {
      const deadline = performance.now() + PRUNE_WAIT_THRESHOLDS * lockStaleAfterMs;
      const interval = Math.min(5000, Math.max(10, Math.floor(lockStaleAfterMs / 10)));
      while (await pruneLockLive(store, lockStaleAfterMs, signal)) {
        if (performance.now() > deadline) {
          throw new RepositoryLockedError(
            `cannot commit point ${point.id}: this session's lock may have lapsed (the process was paused), and a prune held the repository in the ${this.context.where} for more than ${PRUNE_WAIT_THRESHOLDS * lockStaleAfterMs} ms afterwards, so the point could not be checked; it was withdrawn. Back the disk up again`,
          );
        }
        await sleep(interval, signal);
      }
      missing = await this.missingBlobs(point, signal);
    } catch (error) {
      await this.withdraw(point.id, error);
      throw error;
    }
    if (missing.total === 0) return;
    const shown = [
      ...(missing.manifest ? [indexKey(point.id)] : []),
      ...missing.segments,
      ...missing.chunks.map(chunkKey),
    ].slice(0, IDS_SHOWN);
    const error = new PointWithdrawnError(
      `point ${point.id} was withdrawn: this session's lock may have lapsed before the point was committed (the process was paused past ${lockStaleAfterMs / 2} ms), and a prune deleted what it names (${sample(shown, missing.total)}); back the disk up again, which writes them anew`,
      point.id,
      missing,
    );
    await this.withdraw(point.id, error);
    throw error;
  }

  /** Deletes a point's metadata, then its manifest. */
  private async withdraw(id: string, reason: unknown): Promise<void> {
    const { store } = this.context;
    try {
      await store.delete(pointKey(id));
    } catch (cause) {
      throw new RepositoryCorruptError(
        `point ${id} had to be withdrawn (${reason instanceof Error ? reason.message : String(reason)}), but its metadata ${pointKey(id)} could not be deleted; remove the point (verify reports what it lacks)`,
        { cause, retryable: false },
      );
    }
    await store.delete(indexKey(id)).catch(() => undefined);
  }

  /** The manifest, segments and chunks `point` names that the store does not hold (at most a few of each). */
  private async missingBlobs(
    point: RecoveryPoint,
    signal: AbortSignal | undefined,
  ): Promise<{ manifest: boolean; segments: string[]; chunks: string[]; total: number }> {
    const { context } = this;
    const { store } = context;
    const found = { manifest: false, segments: [] as string[], chunks: [] as string[], total: 0 };
    if (!(await store.has(indexKey(point.id), { signal }))) {
      return { ...found, manifest: true, total: 1 };
    }
    const window = new TaskWindow(HAS_CHECKS);
    const check = async (key: string, into: string[], shown: string): Promise<void> => {
      await window.add(async () => {
        if (await store.has(key, { signal })) return;
        found.total++;
        if (into.length < IDS_SHOWN) into.push(shown);
      });
    };
    let previous = '';
    for await (const key of referencedSegmentKeys(context, point, signal)) {
      if (key !== previous) await check(key, found.segments, key);
      previous = key;
    }
    await window.drain();
    // The chunk ids are read from the segments: only once they are all there.
    if (found.total > 0) return found;
    for await (const bytes of referencedChunkIds(context, point, signal)) {
      const id = chunkIdFromHash(bytes);
      if (id !== previous) await check(chunkKey(id), found.chunks, id);
      previous = id;
    }
    await window.drain();
    return found;
  }

  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    await this.lock.release();
  }

  /**
   * Aborts, and never throws: disposal runs when the backup has already ended, often because the store failed,
   * and a lock whose delete fails too is left to go stale (a prune removes it) rather than hide the typed error
   * that ended the backup behind a `SuppressedError`.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.abort().catch(() => undefined);
  }
}

/**
 * Opens a backup session: takes the shared lock and loads the damaged-chunk marks.
 *
 * @throws {@link RepositoryLockedError} while a prune holds the repository.
 * @internal
 */
export async function beginBackupSession(
  context: RepositoryContext,
  options: BeginBackupOptions,
): Promise<BackupSession> {
  context.checkOpen();
  const lineage = checkLineage(options);
  options.signal?.throwIfAborted();
  const lock = await acquireBackupLock(
    context.store,
    context.config.id,
    lineage,
    context.lockStaleAfterMs,
    options.signal,
  );
  try {
    const damaged = await context.damagedChunks(options.signal);
    return new RepositoryBackupSession(context, lineage, lock, damaged);
  } catch (error) {
    await lock.release().catch(() => undefined);
    throw error;
  }
}
