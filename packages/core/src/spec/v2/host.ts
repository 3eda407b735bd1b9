import type { Disk } from './disk.js';
import type { SkippedDisk } from './skipped-disk.js';

/** A protected machine: a VM, a cloud instance, a physical server running the agent. */
export interface Host {
  /** Stable identity on its platform (VM instance uuid, Nova server id, EC2 instance id, agent machine id). */
  readonly id: string;
  /** Human-readable name. */
  readonly name: string;
  /** The platform the host was listed from. */
  readonly platformId: string;
  /** The disks the platform can protect, in the platform's order. */
  readonly disks: readonly Disk[];
  /** The disks it cannot protect, each with its reason. Absent or empty when there are none. */
  readonly skippedDisks?: readonly SkippedDisk[];
  /** Provider-specific facts worth showing a user (power state, flavor, OS). Never secrets. */
  readonly attributes?: Readonly<Record<string, string>>;
}
