import { CHUNK_ID_BYTES, isZeroId } from './chunk-id.js';
import type { RepositoryContext } from './repository-context.js';
import type { RecoveryPoint } from './types.js';

/** Ids yielded between two checks of the signal. */
const SIGNAL_EVERY = 65_536;

/**
 * The chunk ids one committed point references, in index order: each a fresh 32-byte array (the caller may keep
 * it), the all-zero id of a zero chunk never yielded, an id that several positions hold yielded each time. The one
 * place that knows how a point names its chunks: prune and verify enumerate only through it.
 *
 * @throws {@link RepositoryCorruptError} when the point's index is missing or does not match the point (its
 * `cause` is a {@link NotFoundError} when the blob is missing).
 * @internal
 */
export async function* referencedChunkIds(
  context: RepositoryContext,
  point: RecoveryPoint,
  signal: AbortSignal | undefined,
): AsyncIterable<Uint8Array> {
  const index = await context.readIndex(point, signal);
  for (let position = 0; position < index.chunkCount; position++) {
    if (position % SIGNAL_EVERY === 0) signal?.throwIfAborted();
    if (index.isZero(position)) continue;
    const id = index.idAt(position);
    if (id.byteLength !== CHUNK_ID_BYTES || isZeroId(id)) continue;
    yield id.slice();
  }
}
