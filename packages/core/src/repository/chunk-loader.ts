import {
  DrkitError,
  NotFoundError,
  RepositoryCorruptError,
  TimeoutError,
  WorkerCrashedError,
} from '../errors/drkit-error.js';
import type { ChunkWorkerPool } from '../workers/chunk-worker-pool.js';
import { chunkKey, decodeChunkBlob } from './chunk-blob.js';
import { chunkIdFromHash } from './chunk-id.js';
import type { Store } from './store.js';

/** Why a stored chunk cannot be used. */
export type ChunkProblem = 'missing' | 'unreadable' | 'checksum';

/** The outcome of {@link loadChunk}. */
export type LoadedChunk =
  | {
      readonly ok: true;
      readonly plain: Uint8Array;
      /** The `output` buffer given to {@link loadChunk} when the plain bytes are not in it (a raw chunk). */
      readonly spare?: Uint8Array;
    }
  | { readonly ok: false; readonly problem: ChunkProblem; readonly detail: string; readonly cause?: unknown };

const POOL_CLOSED = /chunk worker pool (is )?closed/;

/** A failure of the worker rather than of the data: a crashed worker, a call that timed out. */
function isWorkerFailure(error: unknown): error is WorkerCrashedError | TimeoutError {
  return WorkerCrashedError.isInstance(error) || TimeoutError.isInstance(error);
}

/**
 * Reads a chunk blob, checks its header (its plain length against `expectedLength`, unless undefined: verify knows
 * ids, not positions), decodes it in the worker pool and compares the SHA-256 (HMAC-SHA-256 under `idKey` in an
 * encrypted repository) with the id.
 * Damage is returned, not thrown; aborts, retryable store errors, a closed pool and failures of the worker
 * (which say nothing about the chunk) are thrown. A worker that crashes or times out on the chunk gets one more
 * try: the blob is read again and decoded on the replacement worker.
 *
 * `output` (a buffer of its own, at least the chunk's length) receives the plain bytes of a compressed chunk:
 * `plain` is then a view of it, and a caller that recycles its buffers allocates none per chunk. It is moved to
 * the worker: once the call settles, only what comes back (`plain`'s buffer or `spare`) is usable.
 *
 * @throws {@link WorkerCrashedError} or {@link TimeoutError} when the second try fails the same way.
 * @internal
 */
export async function loadChunk(
  store: Store,
  workers: ChunkWorkerPool,
  hash: Uint8Array,
  expectedLength: number | undefined,
  signal: AbortSignal | undefined,
  idKey?: Uint8Array,
  output?: Uint8Array,
): Promise<LoadedChunk> {
  try {
    return await loadChunkOnce(store, workers, hash, expectedLength, signal, idKey, output);
  } catch (error) {
    if (!isWorkerFailure(error) || !error.retryable) throw error;
    // The output went down with the worker: the second try decodes into a buffer of the worker's own.
    return loadChunkOnce(store, workers, hash, expectedLength, signal, idKey, undefined);
  }
}

async function loadChunkOnce(
  store: Store,
  workers: ChunkWorkerPool,
  hash: Uint8Array,
  expectedLength: number | undefined,
  signal: AbortSignal | undefined,
  idKey: Uint8Array | undefined,
  output: Uint8Array | undefined,
): Promise<LoadedChunk> {
  const key = chunkKey(hash);
  let blob: Uint8Array;
  try {
    blob = await store.get(key, { signal });
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    if (NotFoundError.isInstance(error))
      return { ok: false, problem: 'missing', detail: 'it is not in the store' };
    if (!DrkitError.isInstance(error) || error.retryable) throw error;
    return { ok: false, problem: 'unreadable', detail: error.message, cause: error };
  }
  let decoded: ReturnType<typeof decodeChunkBlob>;
  try {
    decoded = decodeChunkBlob(blob, key);
  } catch (error) {
    if (!RepositoryCorruptError.isInstance(error)) throw error;
    return { ok: false, problem: 'unreadable', detail: error.message, cause: error };
  }
  if (expectedLength !== undefined && decoded.plainLength !== expectedLength) {
    return {
      ok: false,
      problem: 'unreadable',
      detail: `its header says ${decoded.plainLength} bytes, the index position holds ${expectedLength}`,
    };
  }
  signal?.throwIfAborted();
  let result: { plain: Uint8Array; hash: Uint8Array; spare?: Uint8Array };
  // Too small for this chunk (verify does not know lengths), the output stays with the caller unused.
  const into = output !== undefined && output.byteLength >= decoded.plainLength ? output : undefined;
  try {
    // The blob was read for this call alone: hand its buffer to the worker rather than copy it.
    result = await workers.decode(decoded.payload, decoded.codec, decoded.plainLength, true, idKey, into);
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    if (error instanceof Error && POOL_CLOSED.test(error.message)) throw error;
    if (isWorkerFailure(error)) throw error; // the worker failed, not the data: no damage
    return {
      ok: false,
      problem: 'unreadable',
      detail: `it cannot be decoded: ${String((error as Error)?.message ?? error)}`,
      cause: error,
    };
  }
  if (Buffer.compare(result.hash, hash) !== 0) {
    return {
      ok: false,
      problem: 'checksum',
      detail: `its content hashes to ${chunkIdFromHash(result.hash)}`,
    };
  }
  const spare = into === undefined ? output : result.spare;
  return spare === undefined ? { ok: true, plain: result.plain } : { ok: true, plain: result.plain, spare };
}
