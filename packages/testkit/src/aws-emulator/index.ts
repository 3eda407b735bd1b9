export {
  type AwsEmulator,
  type AwsEmulatorOptions,
  type CreateEmulatedInstanceOptions,
  type CreateEmulatedVolumeOptions,
  type EmulatedSnapshotInfo,
  startAwsEmulator,
} from './aws-emulator.js';
export {
  createManualClock,
  type EmulatorClock,
  MANUAL_CLOCK_START,
  type ManualClock,
  systemClock,
} from './emulator-clock.js';
export {
  type AwsEmulatorFault,
  type AwsEmulatorInstanceType,
  type AwsEmulatorOperation,
  type AwsEmulatorQuotas,
  type AwsEmulatorStats,
  type AwsEmulatorUser,
  DEFAULT_EBS_QUOTAS,
} from './emulator-context.js';
export type { EmulatorTag, SnapshotStatus } from './emulator-state.js';
export { BLOCK_TOKEN_TTL_MS, EBS_BLOCK_SIZE, PAGE_TOKEN_TTL_MS } from './emulator-state.js';
