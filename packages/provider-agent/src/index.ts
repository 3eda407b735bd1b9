/**
 * drkit's agent-mode source. Today: the local-disk source, which backs up raw disk image files and block devices
 * of the machine drkit runs on. Later: the in-guest agent for Linux and Windows and the console side that agents
 * register with.
 *
 * @packageDocumentation
 */
export {
  LOCAL_DISK_BLOCK_SIZE,
  LOCAL_DISK_MAX_CONCURRENT_READS,
  type LocalDiskChangedBlockReader,
  type LocalDiskChangedBlockSession,
  type LocalDiskHoleDetection,
} from './local-disk-changed-block-reader.js';
export {
  createLocalDiskPlatform,
  type LocalDiskOptions,
  type LocalDiskPlatform,
  type LocalDiskPlatformOptions,
} from './local-disk-platform.js';
export { SEEK_DATA_UNAVAILABLE_WARNING } from './native-seek.js';
