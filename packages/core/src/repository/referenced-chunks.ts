import { CHUNK_ID_BYTES, isZeroId } from './chunk-id.js';
import { SEGMENT_PREFIX } from './chunk-index.js';
import type { RepositoryContext } from './repository-context.js';
import type { RecoveryPoint } from './types.js';

/**
 * The chunk ids a committed point references, read segment by segment from its manifest (memory: the manifest
 * and a few segments, whatever the disk's size). Each yielded id is a 32-byte array, valid after the next
 * iteration; all-zero chunks are not yielded; an id may repeat (in the order of the positions). This is the one
 * enumeration prune and verify rely on.
 *
 * @throws {@link RepositoryCorruptError} naming the blob when the manifest or a segment is missing or damaged
 * (for a missing manifest, its cause is a {@link NotFoundError}).
 * @internal
 */
export async function* referencedChunkIds(
  context: RepositoryContext,
  point: RecoveryPoint,
  signal: AbortSignal | undefined,
): AsyncIterable<Uint8Array> {
  const index = await context.openIndex(point, signal);
  for await (const segment of index.segments({ signal })) {
    if (segment.zero) continue;
    const { ids } = segment;
    for (let offset = 0; offset < ids.byteLength; offset += CHUNK_ID_BYTES) {
      if (!isZeroId(ids, offset)) yield ids.subarray(offset, offset + CHUNK_ID_BYTES);
    }
  }
}

/**
 * The store keys of the segment blobs a committed point references (`segments/<h2>/<id>`), from its manifest
 * alone (no segment is read); all-zero segments are not yielded; a key may repeat. Prune keeps these.
 *
 * @throws {@link RepositoryCorruptError} as {@link referencedChunkIds}.
 * @internal
 */
export async function* referencedSegmentKeys(
  context: RepositoryContext,
  point: RecoveryPoint,
  signal: AbortSignal | undefined,
): AsyncIterable<string> {
  const index = await context.openIndex(point, signal);
  for (let s = 0; s < index.segmentCount; s++) {
    if (index.isZeroSegment(s)) continue;
    const id = Buffer.from(index.segmentId(s)).toString('hex');
    yield `${SEGMENT_PREFIX}${id.slice(0, 2)}/${id}`;
  }
}
