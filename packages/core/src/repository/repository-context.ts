import { InvalidArgumentError, NotFoundError, RepositoryCorruptError } from '../errors/drkit-error.js';
import { ChunkWorkerPool } from '../workers/chunk-worker-pool.js';
import { isChunkId } from './chunk-id.js';
import { openPointIndex, type StoredPointIndex } from './chunk-index.js';
import { indexKey, isPointId, pointIdFromKey, pointKey, readPointMetadata } from './point-metadata.js';
import type { ImmutabilityPolicy, RepositoryConfig } from './repository-config.js';
import type { Store } from './store.js';
import { TaskWindow } from './task-window.js';
import type { ChunkId, RecoveryPoint, UnreadablePoint } from './types.js';

/** Key prefix of the damaged-chunk marks (`damaged/<chunk id>`). */
export const DAMAGED_PREFIX = 'damaged/';

/** Store key of the damaged mark of a chunk. */
export function damagedKey(id: ChunkId): string {
  return `${DAMAGED_PREFIX}${id}`;
}

/** What a damaged mark holds. */
export interface DamagedMark {
  readonly chunkId: ChunkId;
  readonly problem: 'missing' | 'checksum' | 'unreadable';
  readonly detail: string;
  readonly detectedAt: string;
  readonly pointIds: string[];
}

/** Number of metadata blobs read at once when listing points. */
const METADATA_READS = 16;

/**
 * The state one open repository shares between its operations: the store, the configuration, the worker
 * pool (created on first use unless given), and a cache of point metadata (immutable once written).
 *
 * @internal
 */
/** The most chunks restore and verify keep in flight, whatever the store asks (each holds one chunk in memory). */
export const MAX_READ_WINDOW = 32;

export class RepositoryContext {
  private pool: ChunkWorkerPool | undefined;
  private readonly ownsPool: boolean;
  private readonly pointCache = new Map<string, RecoveryPoint>();
  private closed = false;

  constructor(
    readonly store: Store,
    readonly config: RepositoryConfig,
    readonly lockStaleAfterMs: number,
    workers: ChunkWorkerPool | undefined,
    /**
     * The HMAC-SHA-256 key of chunk and segment ids in an encrypted repository (undefined: ids are SHA-256).
     * `store` then seals and opens every blob.
     */
    readonly idKey: Uint8Array | undefined = undefined,
    /** The wall clock (ms since the epoch) of lock dates; injectable for tests. */
    readonly now: () => number = Date.now,
  ) {
    this.pool = workers;
    this.ownsPool = workers === undefined;
  }

  /** The lock policy of a repository of immutable points (feature `object-lock`), else undefined. */
  get immutability(): ImmutabilityPolicy | undefined {
    return this.config.immutability;
  }

  /** `kind store location`, for messages. */
  get where(): string {
    return `${this.store.kind} store ${this.store.location}`;
  }

  /**
   * Throws when the repository was closed.
   *
   * @throws {@link InvalidArgumentError}
   */
  checkOpen(): void {
    if (this.closed) throw new InvalidArgumentError(`the repository in the ${this.where} is closed`);
  }

  /** The worker pool (started on first use when the repository owns it). */
  workers(): ChunkWorkerPool {
    this.checkOpen();
    this.pool ??= new ChunkWorkerPool();
    return this.pool;
  }

  /**
   * How many chunks to keep in flight in restore and verify: enough for the chunk workers, and as many reads as
   * the store serves at once ({@link Store.readConcurrency}), at most {@link MAX_READ_WINDOW}.
   */
  window(): number {
    const reads = Math.min(MAX_READ_WINDOW, Math.max(0, Math.floor(this.store.readConcurrency ?? 0)));
    return Math.max(4, this.workers().size * 2, reads);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.ownsPool) await this.pool?.close();
  }

  /**
   * Every committed point whose metadata can be read, oldest first (by `createdAt`, then id), and, by id, those
   * whose metadata cannot (skipped, never cached, so a repaired blob is read again next time).
   */
  async scanPoints(
    signal: AbortSignal | undefined,
  ): Promise<{ points: RecoveryPoint[]; unreadable: UnreadablePoint[] }> {
    this.checkOpen();
    const ids: string[] = [];
    for await (const entry of this.store.list('points/', { signal })) {
      const id = pointIdFromKey(entry.key);
      if (id !== undefined) ids.push(id);
    }
    const present = new Set(ids);
    for (const id of this.pointCache.keys()) if (!present.has(id)) this.pointCache.delete(id);
    const points: RecoveryPoint[] = [];
    const unreadable: UnreadablePoint[] = [];
    const window = new TaskWindow(METADATA_READS);
    for (const id of ids) {
      await window.add(async () => {
        const found = await this.readPoint(id, signal);
        if (found === undefined) return; // removed between the listing and the read (retention elsewhere)
        if ('problem' in found) unreadable.push(found);
        else points.push(found);
      });
    }
    await window.drain();
    return {
      points: points.sort(
        (a, b) =>
          Date.parse(a.createdAt) - Date.parse(b.createdAt) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
      ),
      unreadable: unreadable.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)),
    };
  }

  /** Every committed point whose metadata can be read, oldest first (see {@link scanPoints}). */
  async listPoints(signal: AbortSignal | undefined): Promise<RecoveryPoint[]> {
    return (await this.scanPoints(signal)).points;
  }

  /**
   * One point's metadata, or why it cannot be read, or undefined when the point does not exist.
   *
   * @throws {@link InvalidArgumentError} for a malformed id.
   */
  async readPoint(
    id: string,
    signal: AbortSignal | undefined,
  ): Promise<RecoveryPoint | UnreadablePoint | undefined> {
    this.checkOpen();
    if (!isPointId(id)) {
      throw new InvalidArgumentError(`${JSON.stringify(id)} is not a point id (yyyymmddThhmmssSSS-xxxxxxxx)`);
    }
    const cached = this.pointCache.get(id);
    if (cached !== undefined) return cached;
    const key = pointKey(id);
    let bytes: Uint8Array;
    try {
      bytes = await this.store.get(key, { signal });
    } catch (error) {
      if (NotFoundError.isInstance(error)) return undefined;
      // A sealed blob that does not authenticate: unreadable, like one whose checksum fails.
      if (RepositoryCorruptError.isInstance(error) && !signal?.aborted) {
        return { id, key, problem: 'corrupt', detail: error.message, error };
      }
      throw error;
    }
    const reading = readPointMetadata(bytes, key);
    if (!reading.ok) {
      return { id, key, problem: reading.problem, detail: reading.error.message, error: reading.error };
    }
    this.pointCache.set(id, reading.point);
    return reading.point;
  }

  /**
   * One point's metadata.
   *
   * @throws {@link InvalidArgumentError} for a malformed id; {@link NotFoundError}; {@link RepositoryCorruptError}
   * when its metadata cannot be read (corrupt, or of a newer format).
   */
  async getPoint(id: string, signal: AbortSignal | undefined): Promise<RecoveryPoint> {
    const found = await this.readPoint(id, signal);
    if (found === undefined) {
      throw new NotFoundError(`there is no point ${id} in the repository in the ${this.where}`);
    }
    if ('problem' in found) throw found.error;
    return found;
  }

  /** Remembers a point this process committed. */
  rememberPoint(point: RecoveryPoint): void {
    this.pointCache.set(point.id, point);
  }

  /** Forgets a point this process removed. */
  forgetPoint(id: string): void {
    this.pointCache.delete(id);
  }

  /**
   * A point's index: its manifest, checked against the point's digest and layout; segments are read on demand.
   *
   * @throws {@link RepositoryCorruptError} when the manifest is missing, damaged or does not match the point
   * (the cause is a {@link NotFoundError} when it is missing).
   */
  async openIndex(point: RecoveryPoint, signal: AbortSignal | undefined): Promise<StoredPointIndex> {
    this.checkOpen();
    return openPointIndex(this.store, point, indexKey(point.id), this.where, signal, this.idKey);
  }

  /** Ids of chunks marked damaged. */
  async damagedChunks(signal: AbortSignal | undefined): Promise<Set<ChunkId>> {
    this.checkOpen();
    const ids = new Set<ChunkId>();
    for await (const entry of this.store.list(DAMAGED_PREFIX, { signal })) {
      const id = entry.key.slice(DAMAGED_PREFIX.length);
      if (isChunkId(id)) ids.add(id);
    }
    return ids;
  }
}
