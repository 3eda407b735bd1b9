import { InvalidSettingsError, TaskStalledError } from '../errors/drkit-error.js';
import { resolveSecondsSetting } from '../util/seconds-setting.js';

/** Default stall timeout of a disk task: 600 s, the default `httpTimeoutSeconds` of a Sync Proxy. */
export const DEFAULT_STALL_TIMEOUT_SECONDS = 600;

/**
 * Validates a stall timeout: whole seconds from 1 to 86400.
 *
 * @throws {@link InvalidSettingsError} naming `field`.
 * @internal
 */
export function resolveStallTimeoutSeconds(value: number | undefined, field: string): number {
  return resolveSecondsSetting(value, DEFAULT_STALL_TIMEOUT_SECONDS, field, { wholeSeconds: true });
}

/**
 * Fails a disk task that makes no progress for `timeoutSeconds`: it samples a progress figure (bytes read plus
 * bytes done) every tenth of the timeout (at most every 10 s), and when the figure has not moved for the whole
 * timeout it aborts {@link StallWatchdog.signal} and rejects every promise given to {@link StallWatchdog.guard}
 * with a {@link TaskStalledError}, whether or not the hung operation honours the signal. Time {@link
 * StallWatchdog.pause}d (a reader waiting for a data connection other sessions hold) is not counted: such a wait
 * is bounded by its own deadline.
 *
 * @internal
 */
export class StallWatchdog {
  /** The task's signal, aborted (with the {@link TaskStalledError}) when the task stalls. */
  readonly signal: AbortSignal;
  private readonly controller = new AbortController();
  private readonly stalled: Promise<never>;
  private rejectStalled!: (error: TaskStalledError) => void;
  private timer: ReturnType<typeof setInterval> | undefined;
  private error: TaskStalledError | undefined;
  private paused = 0;

  constructor(options: {
    readonly taskId: string;
    readonly timeoutSeconds: number;
    readonly progress: () => number;
    readonly signal?: AbortSignal;
  }) {
    const { taskId, timeoutSeconds, progress } = options;
    this.signal = options.signal
      ? AbortSignal.any([options.signal, this.controller.signal])
      : this.controller.signal;
    this.stalled = new Promise<never>((_, reject) => {
      this.rejectStalled = reject;
    });
    this.stalled.catch(() => undefined); // rejected also when nothing is guarded at that moment
    const timeoutMs = timeoutSeconds * 1000;
    const tickMs = Math.min(timeoutMs / 10, 10_000);
    let last = progress();
    let idleMs = 0;
    this.timer = setInterval(() => {
      const now = progress();
      if (this.paused > 0) {
        // A wait for a shared resource, not a stall: the idle time starts again when it ends.
        last = now;
        idleMs = 0;
        return;
      }
      if (now !== last) {
        last = now;
        idleMs = 0;
        return;
      }
      idleMs += tickMs;
      if (idleMs < timeoutMs) return;
      this.stop();
      this.error = new TaskStalledError(
        `disk task ${taskId} made no progress for ${timeoutSeconds} s (no byte read, no chunk completed): ` +
          'its source or a chunk worker hangs; the task was stopped and its backup session released',
        { taskId, stallTimeoutSeconds: timeoutSeconds },
      );
      this.controller.abort(this.error);
      this.rejectStalled(this.error);
    }, tickMs);
    this.timer.unref?.();
  }

  /** Whether the task stalled. */
  get fired(): boolean {
    return this.error !== undefined;
  }

  /** `promise`, or the {@link TaskStalledError} if the task stalls first (the promise is then left to itself). */
  guard<T>(promise: Promise<T>): Promise<T> {
    promise.catch(() => undefined); // it may reject after the race is lost: not an unhandled rejection
    return Promise.race([promise, this.stalled]);
  }

  /**
   * Stops counting idle time until the returned function is called (once; later calls do nothing); pauses nest.
   * The idle time counts from zero again after the last one ends.
   */
  pause(): () => void {
    this.paused += 1;
    let resumed = false;
    return () => {
      if (resumed) return;
      resumed = true;
      this.paused -= 1;
    };
  }

  /** Stops watching (before the commit, and when the task ends). */
  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }
}
