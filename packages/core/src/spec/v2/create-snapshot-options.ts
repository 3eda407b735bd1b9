import type { CallOptions } from './call-options.js';
import type { Host } from './host.js';
import type { QuiesceMode } from './quiesce-mode.js';

/** What {@link @drkit/core!Platform.createSnapshot} needs. */
export interface CreateSnapshotOptions extends CallOptions {
  /** The host to snapshot, every disk of {@link @drkit/core!Host.disks} (not its skipped disks). */
  readonly host: Host;
  /** The name to give the snapshot. */
  readonly name: string;
  /**
   * Whether to quiesce the guest first. `required`: quiesce or throw a `QuiesceFailedError` (after removing what
   * was created); `preferred`: try, and fall back to a crash-consistent snapshot, saying so in
   * {@link @drkit/core!HostSnapshot.detail}; `none`: do not. A platform whose `capabilities.quiesce` is false is only called
   * with `none` or `preferred`.
   */
  readonly quiesce: QuiesceMode;
}
