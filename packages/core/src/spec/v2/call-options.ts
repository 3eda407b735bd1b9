import type { Logger } from './logger.js';

/** The options object every I/O call of drkit and of its providers accepts. */
export interface CallOptions {
  /** Aborts the call; it then rejects with `signal.reason`. */
  readonly signal?: AbortSignal;
  /**
   * When the call must be over, in milliseconds since the epoch (`Date.now()`'s clock). Past it the call rejects
   * with a `TimeoutError`. `withCallDeadline` turns it and `signal` into one signal.
   */
  readonly deadline?: number;
  /** Where to write what the call does. Default: nothing is logged. */
  readonly logger?: Logger;
}
