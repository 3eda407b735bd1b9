import { DrkitError, ThrottledError } from '../errors/drkit-error.js';
import { sleep } from './abort.js';

/** Options of {@link retry}. */
export interface RetryOptions {
  /** Total attempts including the first. Default 5. */
  readonly attempts?: number;
  /** Delay before the second attempt, in ms. Default 200. */
  readonly baseDelayMs?: number;
  /** Upper bound of one delay, in ms. Default 30 000. */
  readonly maxDelayMs?: number;
  /** Decides whether an error is worth another attempt. Default: a drkit error with `retryable`. */
  readonly isRetryable?: (error: unknown) => boolean;
  /** Called before each wait, e.g. to log. */
  readonly onRetry?: (info: { error: unknown; attempt: number; delayMs: number }) => void;
  /** Aborts the waits and the attempts. */
  readonly signal?: AbortSignal;
  /** Source of randomness for the jitter, in [0, 1). Default `Math.random`. */
  readonly random?: () => number;
  /**
   * Waits `ms` milliseconds between attempts, rejecting with `signal.reason` as soon as the signal aborts. Default: a
   * timer. Tests pass one that records the delay and resolves at once, so that no test waits in real time.
   *
   * @example
   * ```ts
   * const waits: number[] = [];
   * await retry(operation, {
   *   sleep: async (ms) => {
   *     waits.push(ms);
   *   },
   * });
   * ```
   */
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/** The default retry decision: drkit errors that say they are retryable. */
export function isRetryableError(error: unknown): boolean {
  return DrkitError.isInstance(error) && error.retryable;
}

/**
 * Calls `operation` until it succeeds, the error is not retryable, or attempts run out. Waits grow exponentially
 * with full jitter; a {@link ThrottledError} with `retryAfterMs` waits at least that long. The last error is
 * rethrown unchanged. Aborts reject with `signal.reason` and are never retried.
 *
 * Providers use this one helper and turn off their SDK's own retries, so retries never nest.
 *
 * @example
 * ```ts
 * const body = await retry(({ attempt }) => client.get(url), { attempts: 4, signal });
 * ```
 */
export async function retry<T>(
  operation: (context: { attempt: number; signal?: AbortSignal }) => Promise<T>,
  options: RetryOptions = {},
): Promise<T> {
  const attempts = options.attempts ?? 5;
  const base = options.baseDelayMs ?? 200;
  const max = options.maxDelayMs ?? 30_000;
  const isRetryable = options.isRetryable ?? isRetryableError;
  const random = options.random ?? Math.random;
  const wait = options.sleep ?? sleep;
  const signal = options.signal;
  for (let attempt = 1; ; attempt++) {
    signal?.throwIfAborted();
    try {
      return await operation({ attempt, signal });
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (attempt >= attempts || !isRetryable(error)) throw error;
      const ceiling = Math.min(max, base * 2 ** (attempt - 1));
      let delayMs = Math.floor(random() * ceiling);
      if (ThrottledError.isInstance(error) && error.retryAfterMs !== undefined) {
        delayMs = Math.max(delayMs, Math.min(error.retryAfterMs, max));
      }
      options.onRetry?.({ error, attempt, delayMs });
      await wait(delayMs, signal);
    }
  }
}
