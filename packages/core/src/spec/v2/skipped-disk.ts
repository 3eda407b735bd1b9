import type { SkipReason } from './skip-reason.js';

/**
 * A disk a host has that the platform cannot protect. The engine reports each as a `skipped` outcome of the job
 * (never as success by omission), and the CLI exits non-zero when a job skipped something.
 */
export interface SkippedDisk {
  /** Stable identity of the disk on its platform, as {@link @drkit/core!Disk.id} would be. */
  readonly id: string;
  /** Human-readable name. */
  readonly name: string;
  /** Why it is skipped. */
  readonly reason: SkipReason;
  /** What is wrong and what to do about it, in words. */
  readonly detail: string;
}
