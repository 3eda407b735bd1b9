/**
 * The drkit core: the provider specification (v1), typed errors, retry and wait helpers, extent math, the
 * backup engine, the Sync Proxy scheduler and the repository with its local-folder store.
 *
 * @packageDocumentation
 */
export * from './spec/v1/index.js';
export * from './errors/index.js';
export { retry, isRetryableError, type RetryOptions } from './util/retry.js';
export { waitUntil, type WaitUntilOptions } from './util/wait-until.js';
export { sleep } from './util/abort.js';
export {
  alignExtents,
  assertValidExtents,
  clipExtents,
  complementExtents,
  extentBytes,
  mergeExtents,
  sortExtents,
} from './util/extent-math.js';
export type { Store, StoreEntry, StorePutOptions } from './repository/store.js';
export type {
  BackupSession,
  BeginBackupOptions,
  ChunkId,
  ChunkIndex,
  DiskLineage,
  EncodedChunkBlob,
  LedgerEntry,
  NewPoint,
  PointStats,
  RecoveryPoint,
  Repository,
  RestoreOptions,
  RestoreTarget,
  RetentionPolicy,
  VerifyReport,
} from './repository/types.js';
