/**
 * The drkit core: the provider specification (v2), typed errors, retry and wait helpers, extent math, the
 * backup engine, the Sync Proxy scheduler and the repository with its local-folder store. This entry is what an
 * embedder, a provider author and a store author need; the engine's own parts (chunk codecs, the worker pool,
 * the disk task runner) are in `@drkit/core/internal`, which carries no compatibility promise.
 *
 * @packageDocumentation
 */

export {
  type BackupEngine,
  type BackupEngineOptions,
  type BackupJobOptions,
  type BackupJobResult,
  createBackupEngine,
  DEFAULT_CHUNK_SIZE,
  type DiskTaskOutcome,
  type ReconcileKeptEntry,
  type ReconcileKeptReason,
  type ReconcileReport,
  type SnapshotReleaseFailure,
} from './engine/backup-engine.js';
export { MAX_CONCURRENT_READS } from './engine/disk-task-runner.js';
export {
  createInProcessSyncProxy,
  type InProcessSyncProxy,
  type InProcessSyncProxyOptions,
} from './engine/in-process-sync-proxy.js';
export { DEFAULT_LEDGER_LEASE_SECONDS, LEDGER_LEASE_MARGIN_SECONDS } from './engine/ledger-leases.js';
export {
  DEFAULT_RELEASE_TIMEOUT_SECONDS,
  DEFAULT_SNAPSHOT_TIMEOUT_SECONDS,
  snapshotName,
} from './engine/side-effects.js';
export { DEFAULT_STALL_TIMEOUT_SECONDS } from './engine/stall-watchdog.js';
export * from './errors/index.js';
export {
  type Placement,
  type ProxyLease,
  type SyncProxyInfo,
  SyncProxyRegistry,
} from './proxy/sync-proxy-registry.js';
export {
  DEFAULT_SYNC_PROXY_SETTINGS,
  MAX_MOUNTED_DISKS_LIMIT,
  resolveSyncProxySettings,
} from './proxy/sync-proxy-settings.js';
export {
  MAX_CAPACITY_BYTES,
  MAX_CHUNK_COUNT,
  MAX_CHUNK_SIZE,
  MAX_SEGMENT_COUNT,
  MIN_CHUNK_SIZE,
  SEGMENT_CHUNKS,
} from './repository/chunk-index.js';
export { DEFAULT_KEY_SCRYPT, type RepositoryEncryption } from './repository/keyring.js';
export {
  createLocalFolderStore,
  DEFAULT_WRITEBACK_BYTES,
  defaultLocalFolderSyncLevel,
  LOCAL_FOLDER_SYNC_LEVELS,
  type LocalFolderStoreOptions,
  type LocalFolderSyncLevel,
} from './repository/local-folder-store.js';
export { type OpenRepositoryOptions, openRepository } from './repository/repository.js';
export { planRetention, type RetentionPlan } from './repository/retention.js';
export type { ScryptParameters } from './repository/sealing.js';
export type {
  Store,
  StoreDeleteFailure,
  StoreEntry,
  StoreImmutability,
  StorePutOptions,
  StoreRetention,
} from './repository/store.js';
export { assertValidStoreKey, assertValidStorePrefix, STORE_TEMP_PREFIX } from './repository/store-key.js';
export type {
  AdoptedPoint,
  BackupSession,
  BeginBackupOptions,
  ChunkId,
  DiskLineage,
  EncodedChunkBlob,
  HostLock,
  HostPoint,
  HostPointFilter,
  ImmutabilityOptions,
  IndexSegment,
  LedgerEntry,
  LedgerEntryKind,
  LedgerEntryOwner,
  LockHostOptions,
  NewPoint,
  NewPointStats,
  PointIndex,
  PointIndexBuilder,
  PointStats,
  PruneOptions,
  PruneResult,
  RecoveryPoint,
  Repository,
  RestoreOptions,
  RestoreTarget,
  RetentionPolicy,
  UnreadablePoint,
  VerifyReport,
} from './repository/types.js';
export * from './spec/v2/index.js';
export { sleep } from './util/abort.js';
export { type CallScope, withCallDeadline } from './util/call-deadline.js';
export { parseCheckpointToken } from './util/checkpoint-token.js';
export {
  alignExtents,
  assertValidExtents,
  clipExtents,
  complementExtents,
  extentBytes,
  mergeExtents,
  sortExtents,
} from './util/extent-math.js';
export { abnormalStatus } from './util/platform-status.js';
export { isRetryableError, type RetryOptions, retry } from './util/retry.js';
export { type WaitUntilOptions, waitUntil } from './util/wait-until.js';
