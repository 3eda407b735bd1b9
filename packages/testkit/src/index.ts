export {
  type ChangedBlockReaderContractCapabilities,
  type ChangedBlockReaderContractOptions,
  type ChangedBlockReaderFixture,
  type ContractDiskContent,
  describeChangedBlockReaderContract,
} from './changed-block-reader-contract.js';
export {
  type DiskImageLayout,
  type DiskImageMutation,
  type DiskImageRun,
  type DiskImageRunKind,
  hashDiskImage,
  type MutateDiskImageOptions,
  mutateDiskImage,
  type WriteDiskImageOptions,
  writeDiskImage,
} from './disk-image.js';
export {
  describeStoreContract,
  type StoreContractCapabilities,
  type StoreContractFixture,
  type StoreContractOptions,
} from './store-contract.js';
