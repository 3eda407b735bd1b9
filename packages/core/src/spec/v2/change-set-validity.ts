import type { FullReadReason } from './full-read-reason.js';

/**
 * How far a change set can be trusted, per disk:
 * - `exact`: exactly the bytes that changed since the base (e.g. `rbd export-diff --from-snap`, VMware CBT,
 *   EBS `ListChangedBlocks`);
 * - `superset`: everything that changed and possibly more (a coarse object-granular diff, or every allocated
 *   extent of a disk without change tracking); the engine compares chunk hashes with the parent point;
 * - `full`: the whole disk, for the {@link @drkit/core!FullReadReason} given.
 *
 * `detail` says more in words, e.g. why a fast diff fell back to an exact one.
 */
export type ChangeSetValidity =
  | { readonly kind: 'exact'; readonly detail?: string }
  | { readonly kind: 'superset'; readonly detail?: string }
  | { readonly kind: 'full'; readonly reason: FullReadReason; readonly detail?: string };
