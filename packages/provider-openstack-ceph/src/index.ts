/**
 * drkit's source for OpenStack servers whose volumes live in Ceph RBD, and for RBD images on their own
 * (Proxmox VE, Kubernetes Ceph-CSI): RBD snapshots of all images of a host, and the changed data through
 * `rbd export-diff`.
 *
 * @packageDocumentation
 */

// Ceph RBD
export type {
  CephRbdChangedBlockReader,
  CephRbdChangedBlockSession,
} from './ceph/ceph-rbd-changed-block-reader.js';
export type {
  CephClusterOptions,
  CephDiskDefinition,
  CephHostDefinition,
  CephHostOptions,
  CephImageRef,
  CephIncrementalMode,
  CephRbdPlatformOptions,
  CephxCredentials,
} from './ceph/ceph-rbd-options.js';
export {
  type CephClusterInfo,
  type CephRbdPlatform,
  createCephRbdPlatform,
} from './ceph/ceph-rbd-platform.js';
export {
  EXPORT_DIFF_MAX_NAME_BYTES,
  EXPORT_DIFF_V1_HEADER,
  type ExportDiffEvent,
  type ParseExportDiffOptions,
  parseExportDiff,
} from './ceph/export-diff-parser.js';

// OpenStack (Keystone v3, Nova, Cinder) on top of Ceph RBD
export {
  type CinderAttachment,
  type CinderBackendPool,
  type CinderClient,
  type CinderClientOptions,
  type CinderVolume,
  type CinderVolumeHost,
  createCinderClient,
  type GetVolumeOptions,
  type ListVolumesOptions,
} from './openstack/cinder-client.js';
export {
  createKeystoneClient,
  type KeystoneClient,
  type KeystoneClientOptions,
  type KeystoneCredentials,
  type KeystoneRequestOptions,
  type KeystoneTokenInfo,
  type OpenStackInterface,
} from './openstack/keystone-client.js';
export {
  createNovaClient,
  type ListServersOptions,
  NOVA_MICROVERSION,
  type NovaAttachedVolume,
  type NovaClient,
  type NovaClientOptions,
  type NovaFlavor,
  type NovaServer,
} from './openstack/nova-client.js';
export type {
  OpenStackCephPlatformOptions,
  OpenStackConnectionOptions,
} from './openstack/openstack-ceph-options.js';
export {
  createOpenStackCephPlatform,
  type OpenStackCephPlatform,
  type OpenStackCephPlatformStatus,
  type OpenStackConnectionInfo,
  type OpenStackInventory,
  type OpenStackSkippedDisk,
  SKIP_CLUSTER_AMBIGUOUS,
  SKIP_VOLUME_UNAVAILABLE,
} from './openstack/openstack-ceph-platform.js';
