export type { Change, ChangeSetValidity, DataChange, FullReadReason, ZeroChange } from './change-set.js';
export type {
  ChangedBlockReader,
  ChangedBlockSession,
  OpenChangedBlocksOptions,
} from './changed-block-reader.js';
export type { Checkpoint } from './checkpoint.js';
export type { Disk } from './disk.js';
export type { DiskTaskCounters, DiskTaskProgress, DiskTaskResult, DiskTaskState } from './disk-task.js';
export type { Extent } from './extent.js';
export type { Host } from './host.js';
export type { CallOptions } from './options.js';
export type {
  CreateSnapshotOptions,
  Platform,
  PlatformCapabilities,
  PlatformStatus,
  ReleaseSnapshotOptions,
  SnapshotRef,
  SpecificationVersion,
} from './platform.js';
export type { DiskTask, RunDiskTaskOptions, SyncProxy, SyncProxySettings } from './sync-proxy.js';
