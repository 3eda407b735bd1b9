import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  AuthenticationError,
  ThrottledError,
  TimeoutError,
  UnreachableError,
} from '../errors/drkit-error.js';
import { retry } from './retry.js';
import { waitUntil } from './wait-until.js';

// No test here waits in real time: the waits of retry go through an injected `sleep` that records them, and the
// polls of waitUntil run on vitest's fake clock (its timers and Date), so the outcome never depends on how fast the
// machine is.
afterEach(() => {
  vi.useRealTimers();
});

/** A `sleep` for retry that records each delay and resolves at once. */
function recordingSleep(): { waits: number[]; sleep: (ms: number) => Promise<void> } {
  const waits: number[] = [];
  return {
    waits,
    sleep: async (ms) => {
      waits.push(ms);
    },
  };
}

describe('retry', () => {
  it('retries retryable drkit errors and returns the first success', async () => {
    let calls = 0;
    const { waits, sleep } = recordingSleep();
    const value = await retry(
      async ({ attempt }) => {
        calls++;
        if (attempt < 3) throw new UnreachableError('down');
        return 'ok';
      },
      { baseDelayMs: 1, sleep },
    );
    expect(value).toBe('ok');
    expect(calls).toBe(3);
    expect(waits).toHaveLength(2);
  });

  it('does not retry a non-retryable error and rethrows it unchanged', async () => {
    const error = new AuthenticationError('bad password');
    let calls = 0;
    await expect(
      retry(
        async () => {
          calls++;
          throw error;
        },
        { baseDelayMs: 1, sleep: recordingSleep().sleep },
      ),
    ).rejects.toBe(error);
    expect(calls).toBe(1);
  });

  it('gives up after the attempts and rethrows the last error', async () => {
    let calls = 0;
    await expect(
      retry(
        async () => {
          calls++;
          throw new UnreachableError(`try ${calls}`);
        },
        { attempts: 4, baseDelayMs: 1, sleep: recordingSleep().sleep },
      ),
    ).rejects.toThrow('try 4');
    expect(calls).toBe(4);
  });

  it('waits at least Retry-After for a throttled error', async () => {
    const delays: number[] = [];
    const { waits, sleep } = recordingSleep();
    let calls = 0;
    await retry(
      async () => {
        if (calls++ === 0) throw new ThrottledError('slow down', { retryAfterMs: 40 });
        return 1;
      },
      { baseDelayMs: 1, random: () => 0, onRetry: ({ delayMs }) => delays.push(delayMs), sleep },
    );
    expect(delays).toEqual([40]);
    // What it announced is what it waited.
    expect(waits).toEqual([40]);
  });

  it('backs off exponentially under the cap, with jitter', async () => {
    const delays: number[] = [];
    const { waits, sleep } = recordingSleep();
    await expect(
      retry(
        async () => {
          throw new UnreachableError('x');
        },
        {
          attempts: 5,
          baseDelayMs: 10,
          maxDelayMs: 50,
          random: () => 0.999,
          onRetry: (i) => delays.push(i.delayMs),
          sleep,
        },
      ),
    ).rejects.toThrow();
    expect(delays).toEqual([9, 19, 39, 49]);
    expect(waits).toEqual([9, 19, 39, 49]);
  });

  it('rejects with the abort reason, not a wrapped error, and stops retrying', async () => {
    // The real sleep of core, on the fake clock: the abort comes 19 ms into a wait of 5 s.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const controller = new AbortController();
    const reason = new Error('stop');
    let calls = 0;
    const promise = retry(
      async () => {
        calls++;
        throw new UnreachableError('x');
      },
      { baseDelayMs: 10_000, signal: controller.signal, random: () => 0.5 },
    );
    const outcome = promise.catch((error: unknown) => error);
    await vi.advanceTimersByTimeAsync(19);
    expect(calls).toBe(1);
    controller.abort(reason);
    expect(await outcome).toBe(reason);
    expect(calls).toBe(1);
    // The pending wait was cleared, not left to run out.
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe('waitUntil (on the fake clock)', () => {
  it('polls until the check returns a value, doubling the delay', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const started = Date.now();
    const polledAt: number[] = [];
    const promise = waitUntil(
      async () => {
        polledAt.push(Date.now() - started);
        return polledAt.length >= 3 ? polledAt.length : undefined;
      },
      { timeoutMs: 5000, minDelayMs: 1 },
    );
    await vi.runAllTimersAsync();
    expect(await promise).toBe(3);
    expect(polledAt).toEqual([0, 1, 3]);
  });

  it('throws a TimeoutError naming what it waited for, after a last poll at the deadline', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const started = Date.now();
    const polledAt: number[] = [];
    const outcome = waitUntil(
      async () => {
        polledAt.push(Date.now() - started);
        return undefined;
      },
      { timeoutMs: 30, minDelayMs: 5, what: 'snapshot s1' },
    ).catch((e: unknown) => e);
    await vi.runAllTimersAsync();
    const error = await outcome;
    expect(TimeoutError.isInstance(error)).toBe(true);
    expect(String(error)).toMatch(/timed out after 30 ms waiting for snapshot s1/);
    // Delays 5 and 10, then the 15 ms left (not the next 20): the last poll is at the deadline.
    expect(polledAt).toEqual([0, 5, 15, 30]);
  });

  it('rejects with the abort reason', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const controller = new AbortController();
    const reason = new Error('cancelled');
    let polls = 0;
    const outcome = waitUntil(
      async () => {
        polls++;
        return undefined;
      },
      { timeoutMs: 60_000, minDelayMs: 1000, signal: controller.signal },
    ).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(10);
    controller.abort(reason);
    expect(await outcome).toBe(reason);
    expect(polls).toBe(1);
    expect(vi.getTimerCount()).toBe(0);
  });
});
