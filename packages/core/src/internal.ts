/**
 * Internals of `@drkit/core`, for drkit's own packages and tests only: the disk task runner, the chunk worker
 * pool, the chunk blob, segment and manifest codecs, chunk id helpers, the external sort of chunk ids and small
 * utilities. **No compatibility promise**: anything here may change or disappear in any release, a patch
 * included. An embedder, a provider author or a store author needs only the root entry, `@drkit/core`; when
 * something here seems needed, open an issue.
 *
 * Classes and errors are the same objects as the root entry's (one build, shared modules).
 *
 * @packageDocumentation
 */

export {
  type DiskTaskContext,
  READ_BUFFER_CHUNKS_PER_READ,
  runDiskTask,
} from './engine/disk-task-runner.js';
export {
  type ExtentReadStats,
  type ExtentReadsOptions,
  MIN_ENTRY_BYTES,
  orderedExtentReads,
} from './engine/extent-reads.js';
export { type ChunkBlob, chunkKey, decodeChunkBlob, encodeChunkBlob } from './repository/chunk-blob.js';
export { chunkIdFromHash, chunkIdToHash, isChunkId } from './repository/chunk-id.js';
export {
  decodeManifest,
  decodeSegment,
  encodeManifest,
  encodeSegment,
  type Manifest,
  SEGMENT_CHUNKS,
  segmentKey,
} from './repository/chunk-index.js';
export { decodeCheckedJson, encodeCheckedJson } from './repository/repository-config.js';
export { SEALED_BLOB_OVERHEAD, SealedStore } from './repository/sealed-store.js';
export {
  ChunkIdSorter,
  type ChunkIdSorterOptions,
  type ChunkIdSorterStats,
} from './repository/sorted-chunk-ids.js';
export {
  type ChunkCodec,
  ChunkWorkerPool,
  type ChunkWorkerPoolOptions,
  DEFAULT_CHUNK_CALL_TIMEOUT_MS,
  type EncodedChunk,
  type EncodeOptions,
  type ReturnedBuffers,
  zstdCompressBound,
} from './workers/chunk-worker-pool.js';
