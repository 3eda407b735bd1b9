import {
  type ChangedBlockReader,
  type ChangedBlockSession,
  InvalidSettingsError,
  type OpenChangedBlocksOptions,
} from '@drkit/core';
import type { VmwareTransport } from './vmware-options.js';

const notBuiltMarker = Symbol.for('drkit.vmware.data-path-not-built');

/**
 * The data path of `@drkit/provider-vmware` is not built yet: neither the NBD transport nor HTTPS datastore ranges
 * can read a disk today, so no backup of a VMware disk can run. An {@link @drkit/core!InvalidSettingsError} (code
 * `INVALID_SETTINGS`, field `transport`), not retryable: no setting makes it work in this release.
 */
export class VmwareDataPathNotBuiltError extends InvalidSettingsError {
  /** The transport the platform was configured with. */
  readonly transport: VmwareTransport;
  constructor(transport: VmwareTransport) {
    super(
      'transport',
      `the ${transport === 'nbd' ? 'NBD' : 'HTTPS datastore'} data path of @drkit/provider-vmware is not built ` +
        'yet: this release lists VMs and disks, opens and checks the vSphere session, but cannot read disk data ' +
        '(see the package README, "What works")',
      { retryable: false },
    );
    this.transport = transport;
    Object.defineProperty(this, notBuiltMarker, { value: true });
  }
  static override isInstance(error: unknown): error is VmwareDataPathNotBuiltError {
    return (
      InvalidSettingsError.isInstance(error) &&
      (error as unknown as Record<symbol, unknown>)[notBuiltMarker] === true
    );
  }
}

/**
 * The changed-block reader of a VMware platform: `extents` mode (QueryChangedDiskAreas, then ranged reads), 512-byte
 * alignment (CBT areas are sector aligned). `open` throws {@link VmwareDataPathNotBuiltError} until a transport
 * lands: never a session that pretends to read.
 * @internal
 */
export function createVmwareChangedBlockReader(transport: VmwareTransport): ChangedBlockReader {
  return {
    mode: 'extents',
    blockSize: 512,
    maxConcurrentReads: 4,
    async open(options: OpenChangedBlocksOptions): Promise<ChangedBlockSession> {
      options.signal?.throwIfAborted();
      throw new VmwareDataPathNotBuiltError(transport);
    },
  };
}
