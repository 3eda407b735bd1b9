import type { Checkpoint } from './checkpoint.js';

/** What {@link @drkit/core!ReadSessionBase.commit} is told: the recovery point that now holds the session's data. */
export interface CommittedPoint {
  /** The point's id in the repository. */
  readonly pointId: string;
  /**
   * The checkpoint as the point recorded it: the session's own {@link @drkit/core!ReadSessionBase.checkpoint}, read back, so
   * fields a checkpoint does not define are dropped.
   */
  readonly checkpoint: Checkpoint;
}
