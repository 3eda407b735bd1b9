// The stall watchdog on a fake clock: it fires after the timeout without progress, and does not count the time a
// task waits for a resource other tasks hold (a data connection of its host).
import { afterEach, describe, expect, it, vi } from 'vitest';
import { TaskStalledError } from '../errors/drkit-error.js';
import { StallWatchdog } from './stall-watchdog.js';

afterEach(() => {
  vi.useRealTimers();
});

describe('StallWatchdog', () => {
  it('fires after the timeout without progress, but not while paused; the idle time restarts after a pause', async () => {
    vi.useFakeTimers();
    let progress = 0;
    const watchdog = new StallWatchdog({ taskId: 't1', timeoutSeconds: 10, progress: () => progress });
    vi.advanceTimersByTime(9_000);
    progress += 1; // progress: the idle time starts again
    vi.advanceTimersByTime(9_000);
    expect(watchdog.fired).toBe(false);
    const resume = watchdog.pause();
    const nested = watchdog.pause();
    vi.advanceTimersByTime(60_000); // six timeouts waiting for a connection
    expect(watchdog.fired).toBe(false);
    nested();
    nested(); // a second call does nothing: the outer pause still holds
    vi.advanceTimersByTime(30_000);
    expect(watchdog.fired).toBe(false);
    resume();
    vi.advanceTimersByTime(9_000);
    expect(watchdog.fired).toBe(false);
    const guarded = watchdog.guard(new Promise(() => undefined));
    vi.advanceTimersByTime(2_000);
    expect(watchdog.fired).toBe(true);
    expect(watchdog.signal.aborted).toBe(true);
    await expect(guarded).rejects.toSatisfy((error) => TaskStalledError.isInstance(error));
    watchdog.stop();
  });
});
