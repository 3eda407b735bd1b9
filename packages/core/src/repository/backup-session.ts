import { createHash } from 'node:crypto';
import {
  InvalidArgumentError,
  RepositoryCorruptError,
  RepositoryLockedError,
} from '../errors/drkit-error.js';
import { chunkIdFromKey, chunkKey, encodeChunkBlob } from './chunk-blob.js';
import { CHUNK_ID_BYTES, chunkIdFromHash, chunkIdToHash } from './chunk-id.js';
import { ChunkIdSet } from './chunk-id-set.js';
import { chunkCountOf, encodeChunkIndex, forEachNonZeroId } from './chunk-index.js';
import {
  checkNewPoint,
  indexKey,
  newPointId,
  pointKey,
  recoveryPoint,
  serializePoint,
} from './point-metadata.js';
import { damagedKey, type RepositoryContext } from './repository-context.js';
import { acquireBackupLock, type HeldLock } from './repository-lock.js';
import { TaskWindow } from './task-window.js';
import type {
  AdoptedPoint,
  BackupSession,
  BeginBackupOptions,
  ChunkId,
  ChunkIndex,
  DiskLineage,
  EncodedChunkBlob,
  NewPoint,
  RecoveryPoint,
} from './types.js';

/** Below this many unchecked chunks, commit asks the store about each; above, it lists the chunk folders. */
const HAS_CHECK_LIMIT = 256;
/** Existence checks run at once. */
const HAS_CHECKS = 8;
/** Chunk ids named in an error message. */
const IDS_SHOWN = 5;

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

class RepositoryBackupSession implements BackupSession {
  /** Chunks this session wrote or found present: commit does not check them again. */
  private readonly known = new ChunkIdSet(4096);
  /**
   * Chunks this session wrote (`durable: false`) or found present (`has`, or the commit's existence check) that no
   * committed point it adopted references: none is known durable yet, so commit syncs them first, in one step.
   */
  private readonly found = new ChunkIdSet();
  private state: 'open' | 'committed' | 'aborted' = 'open';

  constructor(
    private readonly context: RepositoryContext,
    private readonly lineage: DiskLineage,
    private readonly lock: HeldLock,
    /** Chunks marked damaged when the session began, minus those it rewrote. */
    private readonly damaged: Set<ChunkId>,
  ) {}

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

  async adoptPoint(pointId: string, options: { signal?: AbortSignal } = {}): Promise<AdoptedPoint> {
    this.checkOpen();
    this.lock.checkLive();
    const { signal } = options;
    // Read under this session's lock: no prune runs until it is released, so every chunk of a point that
    // exists now stays. Its ids need no existence check at commit.
    const point = await this.context.getPoint(pointId, signal);
    const index = await this.context.readIndex(point, signal);
    forEachNonZeroId(index, (bytes, offset) => {
      if (
        this.damaged.size === 0 ||
        !this.damaged.has(chunkIdFromHash(bytes.subarray(offset, offset + CHUNK_ID_BYTES)))
      )
        this.known.add(bytes, offset);
    });
    return { point, index };
  }

  async hasChunk(hash: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<boolean> {
    checkHash(hash);
    this.checkOpen();
    options.signal?.throwIfAborted();
    const id = chunkIdFromHash(hash);
    if (this.damaged.has(id)) return false;
    if (this.known.has(hash)) return true;
    const present = await this.context.store.has(chunkKey(id), options);
    if (present) {
      this.known.add(hash);
      this.found.add(hash);
    }
    return present;
  }

  async putChunk(chunk: EncodedChunkBlob, options: { signal?: AbortSignal } = {}): Promise<boolean> {
    checkHash(chunk?.hash);
    this.checkOpen();
    this.lock.checkLive();
    options.signal?.throwIfAborted();
    const id = chunkIdFromHash(chunk.hash);
    const blob = encodeChunkBlob(chunk);
    const { store } = this.context;
    if (this.damaged.has(id)) {
      await store.put(chunkKey(id), blob, { signal: options.signal });
      await store.delete(damagedKey(id), { signal: options.signal });
      this.damaged.delete(id);
      this.known.add(chunk.hash);
      return true;
    }
    if (this.known.has(chunk.hash)) return false;
    // Written or found present, the blob is made durable by the commit's one sync (syncChunks).
    const written = await store.put(chunkKey(id), blob, {
      ifAbsent: true,
      durable: false,
      signal: options.signal,
    });
    this.known.add(chunk.hash);
    this.found.add(chunk.hash);
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
          if (!(await store.has(chunkKey(id), { signal }))) missing.add(id);
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
        if (unknown.has(bytes)) found.add(bytes);
      }
    }
    unknown.forEach((id) => {
      if (!found.has(id)) missing.add(id);
    });
    return missing;
  }

  /** Checks that every non-zero chunk of the index is stored and not marked damaged. */
  private async checkChunks(index: ChunkIndex, signal: AbortSignal | undefined): Promise<void> {
    const damaged = new ChunkIdSet(this.damaged.size);
    for (const id of this.damaged) damaged.add(chunkIdToHash(id));
    const damagedNamed = new ChunkIdSet();
    const unknown = new ChunkIdSet();
    forEachNonZeroId(index, (bytes, offset) => {
      if (damaged.size > 0 && damaged.has(bytes, offset)) damagedNamed.add(bytes, offset);
      else if (!this.known.has(bytes, offset)) unknown.add(bytes, offset);
    });
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
   * Makes every chunk the point names and no adopted point vouches for durable, in one step: those this session
   * wrote (`durable: false`) and those it found present (another writer, or a run that crashed, may not have
   * synced them). The point must not outlive any of them in a crash. One `Store.sync`, before the index and the
   * metadata are written (a syncfs, or one fsync per chunk folder, on a local folder).
   */
  private async syncChunks(signal: AbortSignal | undefined): Promise<void> {
    const { store } = this.context;
    if (this.found.size === 0 || store.sync === undefined) return;
    const found = this.found;
    await store.sync(
      (function* keys() {
        for (const id of found.values()) yield chunkKey(id);
      })(),
      { signal },
    );
  }

  async commit(
    point: NewPoint,
    index: ChunkIndex,
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
    const expected = chunkCountOf(described.capacityBytes, described.chunkSize);
    if (index?.chunkCount !== expected) {
      throw new InvalidArgumentError(
        `the index has ${index?.chunkCount} chunks; a ${described.capacityBytes}-byte disk in ${described.chunkSize}-byte chunks has ${expected}`,
      );
    }
    await this.checkChunks(index, signal);
    await this.syncChunks(signal);

    const { store } = this.context;
    const blob = encodeChunkIndex(index, described);
    const digest = createHash('sha256').update(blob).digest('hex');
    const createdAt = new Date(described.createdAt);
    let id: string;
    do {
      id = newPointId(createdAt);
    } while (!(await store.put(indexKey(id), blob, { ifAbsent: true, signal })));
    const committed = recoveryPoint(id, described, digest);
    try {
      // Last look at the lock: a prune that judged it stale may have deleted chunks this point names.
      await this.lock.confirm(signal);
    } catch (error) {
      await store.delete(indexKey(id)).catch(() => undefined);
      throw error;
    }
    if (!(await store.put(pointKey(id), serializePoint(committed), { ifAbsent: true, signal }))) {
      throw new RepositoryCorruptError(`point metadata ${pointKey(id)} exists without having been committed`);
    }
    this.state = 'committed';
    this.context.rememberPoint(committed);
    // The point is committed; a lock left behind (delete failed) goes stale and a prune removes it.
    await this.lock.release().catch(() => undefined);
    return committed;
  }

  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    await this.lock.release();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.abort();
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
