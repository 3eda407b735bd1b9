/**
 * drkit's agentless source for AWS EC2: instances and their EBS volumes, crash-consistent multi-volume snapshots
 * (`CreateSnapshots`), and the changed blocks through the EBS direct APIs (`ListSnapshotBlocks`,
 * `ListChangedBlocks`, `GetSnapshotBlock`).
 *
 * @packageDocumentation
 */

export type { AwsChangedBlockReader, AwsEbsReadSession } from './aws-changed-block-reader.js';
export { EBS_BLOCK_SIZE } from './aws-changed-block-reader.js';
export {
  AWS_RESTORED_POINT_TAG,
  AWS_RESTORED_REPOSITORY_TAG,
  type RestoreToEbsOptions,
  type RestoreToEbsResult,
} from './aws-ebs-restore.js';
export type { CreatedVolume, CreateVolumeFromSnapshotOptions } from './aws-ebs-volume.js';
export type {
  AwsCredentials,
  AwsCredentialsProvider,
  AwsEndpoints,
  AwsPlatformOptions,
} from './aws-options.js';
export {
  AWS_BACKUP_ACTIONS,
  AWS_HOST_TAG,
  AWS_PLATFORM_TAG,
  AWS_SNAPSHOT_TAG,
  type AwsPermissionReport,
  type AwsPlatform,
  createAwsPlatform,
  type OpenAwsPlatformOptions,
  openAwsPlatform,
} from './aws-platform.js';
export {
  AWS_BACKOFF_FACTOR,
  AWS_MAX_THROTTLED_ATTEMPTS,
  type AwsRateLimiterState,
  type AwsRateLimits,
} from './aws-rate-limiter.js';
export {
  type AwsRegion,
  type DiscoverAwsRegionOptions,
  type DiscoveredAwsRegion,
  discoverAwsRegion,
  type ListAwsRegionsOptions,
  listAwsRegions,
} from './aws-regions.js';
