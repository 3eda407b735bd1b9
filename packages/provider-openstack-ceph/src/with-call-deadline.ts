import { type CallOptions, TimeoutError } from '@drkit/core';

/** One signal for a call's `signal` and `deadline`; dispose it when the call ends (it clears its timer). @internal */
export interface CallScope extends Disposable {
  /** Aborts with the caller's reason, or with a `TimeoutError` at the deadline. Undefined when neither is set. */
  readonly signal: AbortSignal | undefined;
}

/**
 * Turns a call's `signal` and `deadline` ({@link @drkit/core!CallOptions}) into one signal, to hand to the rbd
 * processes and HTTP requests of the call. Past the deadline it aborts with a `TimeoutError` naming `what`; a
 * deadline already past aborts it at once.
 *
 * The same as `withCallDeadline` in `@drkit/core`'s own source, which neither of its entries exports yet: replace
 * this copy by it once core exports it.
 *
 * @internal
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
