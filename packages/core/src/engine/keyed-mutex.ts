/**
 * One lock per key, in this process: `lock(key)` resolves once every earlier holder of the key has released
 * it, in the order they asked. The engine keys it by platform and host, so two jobs never work on one host at
 * once (each would otherwise plan from, and release, the other's snapshots).
 *
 * @internal
 */
export class KeyedMutex {
  /** Per key, the promise that settles when the last holder asked so far releases. */
  private readonly tails = new Map<string, Promise<void>>();

  /**
   * Waits for the key and returns its release function (idempotent).
   *
   * @throws `signal.reason` when aborted while waiting; the place in the line is given up.
   */
  async lock(key: string, signal?: AbortSignal): Promise<() => void> {
    signal?.throwIfAborted();
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tail = previous.then(() => mine);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    try {
      await waitOrAbort(previous, signal);
    } catch (error) {
      release(); // the next in line waits for `previous`, then for this (already released) place
      throw error;
    }
    return release;
  }
}

/** `promise`, or `signal.reason` when the signal aborts first; the listener is always removed. */
function waitOrAbort(promise: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return promise;
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}
