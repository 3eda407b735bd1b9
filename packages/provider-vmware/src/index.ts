/**
 * drkit's source for VMware vCenter and ESXi: a SOAP session (vim25 over HTTPS, TLS always verified), inventory of
 * VMs and their virtual disks through the PropertyCollector, and the disks drkit cannot protect with the reason.
 * The changed-block reader reads over NBD (`transport: 'nbd'`: an nbdkit export with VDDK that `nbd.locate` names)
 * or HTTPS datastore ranges (`transport: 'https'`): see the README, "Transports: which works where".
 *
 * @packageDocumentation
 */

export type { NbdConnectOptions, NbdTlsOptions } from './nbd/nbd-export.js';
export type { VmwareTlsOptions } from './soap/vmware-tls.js';
export type { ManagedObjectReference } from './soap/xml-writer.js';
export { VmwareDataPathNotBuiltError } from './vmware-changed-block-reader.js';
export { VmwareConnectionLimitError } from './vmware-connection-budget.js';
export type { VirtualDeviceBacking, VirtualDeviceInfo, VmwareDiskSkipReason } from './vmware-devices.js';
export { missingPrivilegeOf, type VmwareFaultInfo, vmwareFaultOf } from './vmware-errors.js';
export { diskIdOf, type VmwareInventory, type VmwareInventoryObject } from './vmware-inventory.js';
export type {
  VmwareNbdDisk,
  VmwareNbdExportLocation,
  VmwareNbdOptions,
} from './vmware-nbd-transport.js';
export type { VmwareConnectionLimits, VmwarePlatformOptions, VmwareTransport } from './vmware-options.js';
export {
  createVmwarePlatform,
  type VmwareConnectionInfo,
  type VmwarePlatform,
  type VmwarePlatformStatus,
} from './vmware-platform.js';
export type { VmwareDiskSnapshotRef } from './vmware-snapshots.js';
