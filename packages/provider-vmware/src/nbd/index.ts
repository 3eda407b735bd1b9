// The package's NBD client: what the VMware provider's NBD transport (nbdkit with VMware's VDDK plugin on the
// Sync Proxy) builds on. Public through the package entry only when the transport exports it.
export { connectNbdExport } from './connect-nbd-export.js';
export type {
  NbdConnectOptions,
  NbdExport,
  NbdExportInfo,
  NbdExportStats,
  NbdExtent,
  NbdExtentsOptions,
  NbdReadOptions,
  NbdTlsOptions,
} from './nbd-export.js';
