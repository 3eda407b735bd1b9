/** Why a read session ends without a point (see {@link @drkit/core!ReadSessionBase.abandon}). */
export interface AbandonReason {
  /** `failed`: the task failed (the source, the repository, a stall); `cancelled`: the job was aborted. */
  readonly kind: 'failed' | 'cancelled';
  /** The error that ended the task (for `cancelled`, the signal's reason). */
  readonly error: unknown;
}
