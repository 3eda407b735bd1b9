import { DrkitError, NotFoundError, RepositoryCorruptError } from '../errors/drkit-error.js';
import type { ChunkWorkerPool } from '../workers/chunk-worker-pool.js';
import { chunkKey, decodeChunkBlob } from './chunk-blob.js';
import { chunkIdFromHash } from './chunk-id.js';
import type { Store } from './store.js';

/** Why a stored chunk cannot be used. */
export type ChunkProblem = 'missing' | 'unreadable' | 'checksum';

/** The outcome of {@link loadChunk}. */
export type LoadedChunk =
  | { readonly ok: true; readonly plain: Uint8Array }
  | { readonly ok: false; readonly problem: ChunkProblem; readonly detail: string; readonly cause?: unknown };

const POOL_CLOSED = /chunk worker pool (is )?closed/;

/**
 * Reads a chunk blob, checks its header, decodes it in the worker pool and compares the SHA-256 with the id.
 * Damage is returned, not thrown; aborts, retryable store errors and a closed pool are thrown (they say
 * nothing about the chunk).
 *
 * @internal
 */
export async function loadChunk(
  store: Store,
  workers: ChunkWorkerPool,
  hash: Uint8Array,
  expectedLength: number,
  signal: AbortSignal | undefined,
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
  if (decoded.plainLength !== expectedLength) {
    return {
      ok: false,
      problem: 'unreadable',
      detail: `its header says ${decoded.plainLength} bytes, the index position holds ${expectedLength}`,
    };
  }
  signal?.throwIfAborted();
  let result: { plain: Uint8Array; hash: Uint8Array };
  try {
    // The blob was read for this call alone: hand its buffer to the worker rather than copy it.
    result = await workers.decode(decoded.payload, decoded.codec, decoded.plainLength, true);
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    if (error instanceof Error && POOL_CLOSED.test(error.message)) throw error;
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
  return { ok: true, plain: result.plain };
}
