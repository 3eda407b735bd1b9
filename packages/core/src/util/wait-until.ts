import { TimeoutError } from '../errors/drkit-error.js';
import { sleep } from './abort.js';

/** Options of {@link waitUntil}. */
export interface WaitUntilOptions {
  /** Give up after this many ms with a {@link TimeoutError}. */
  readonly timeoutMs: number;
  /** First delay between polls, in ms. Default 250. */
  readonly minDelayMs?: number;
  /** Largest delay between polls, in ms. Default 10 000. */
  readonly maxDelayMs?: number;
  /** Words for the timeout message: "timed out waiting for <what>". */
  readonly what?: string;
  readonly signal?: AbortSignal;
}

/**
 * Polls `check` until it returns a value other than `undefined`, backing off between polls (a waiter, as the
 * AWS SDK's waiters do for a snapshot to complete). Errors thrown by `check` end the wait.
 *
 * @throws {@link TimeoutError} when `timeoutMs` passes first; `signal.reason` when aborted.
 * @example
 * ```ts
 * const snapshot = await waitUntil(async () => {
 *   const s = await describe(id);
 *   return s.state === 'completed' ? s : undefined;
 * }, { timeoutMs: 600_000, what: `snapshot ${id}` });
 * ```
 */
export async function waitUntil<T>(
  check: (context: { attempt: number; signal?: AbortSignal }) => Promise<T | undefined>,
  options: WaitUntilOptions,
): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  let delay = options.minDelayMs ?? 250;
  const maxDelay = options.maxDelayMs ?? 10_000;
  for (let attempt = 1; ; attempt++) {
    options.signal?.throwIfAborted();
    const value = await check({ attempt, signal: options.signal });
    if (value !== undefined) return value;
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      throw new TimeoutError(
        `timed out after ${options.timeoutMs} ms waiting for ${options.what ?? 'the condition'}`,
      );
    }
    await sleep(Math.min(delay, remaining), options.signal);
    delay = Math.min(maxDelay, delay * 2);
  }
}
