import type { CallOptions } from './call-options.js';

/**
 * What {@link @drkit/core!Platform.releaseSnapshot} needs: only what the ledger records, so that a snapshot can be released
 * by name after a crash, when the {@link @drkit/core!HostSnapshot} the create call returned is lost.
 */
export interface ReleaseSnapshotOptions extends CallOptions {
  readonly hostId: string;
  /** The name drkit gave the snapshot. */
  readonly name: string;
}
