import { TimeoutError } from '../errors/drkit-error.js';
import type { CallOptions } from '../spec/v2/index.js';

/** One signal for a call's `signal` and `deadline`; dispose it when the call ends (it clears its timer). */
export interface CallScope extends Disposable {
  /** Aborts with the caller's reason, or with a {@link TimeoutError} at the deadline. Undefined when neither is set. */
  readonly signal: AbortSignal | undefined;
}

/**
 * Turns a call's {@link CallOptions.signal} and {@link CallOptions.deadline} into one signal, for a provider to
 * hand to its HTTP client or child process. Past the deadline it aborts with a {@link TimeoutError} naming
 * `what`; a deadline already past aborts it at once.
 *
 * @example
 * ```ts
 * using scope = withCallDeadline(options, `GET ${url}`);
 * const response = await fetch(url, { signal: scope.signal });
 * ```
 */
export function withCallDeadline(options: CallOptions | undefined, what = 'the call'): CallScope {
  const signal = options?.signal;
  const deadline = options?.deadline;
  if (deadline === undefined) return { signal, [Symbol.dispose]: () => undefined };
  const controller = new AbortController();
  const onAbort = () => controller.abort(signal?.reason);
  if (signal?.aborted) controller.abort(signal.reason);
  else signal?.addEventListener('abort', onAbort, { once: true });
  const expire = () =>
    controller.abort(
      new TimeoutError(`${what} did not finish by its deadline ${new Date(deadline).toISOString()}`),
    );
  const remaining = deadline - Date.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  if (remaining <= 0) expire();
  else timer = setTimeout(expire, remaining);
  return {
    signal: controller.signal,
    [Symbol.dispose]: () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    },
  };
}

/** The deadline `seconds` from now, in milliseconds since the epoch; undefined when `seconds` is. */
export function deadlineAfter(seconds: number | undefined, now = Date.now()): number | undefined {
  return seconds === undefined ? undefined : now + seconds * 1000;
}
