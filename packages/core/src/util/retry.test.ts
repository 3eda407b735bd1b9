import { describe, expect, it } from 'vitest';
import {
  AuthenticationError,
  ThrottledError,
  TimeoutError,
  UnreachableError,
} from '../errors/drkit-error.js';
import { retry } from './retry.js';
import { waitUntil } from './wait-until.js';

describe('retry', () => {
  it('retries retryable drkit errors and returns the first success', async () => {
    let calls = 0;
    const value = await retry(
      async ({ attempt }) => {
        calls++;
        if (attempt < 3) throw new UnreachableError('down');
        return 'ok';
      },
      { baseDelayMs: 1 },
    );
    expect(value).toBe('ok');
    expect(calls).toBe(3);
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
        { baseDelayMs: 1 },
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
        { attempts: 4, baseDelayMs: 1 },
      ),
    ).rejects.toThrow('try 4');
    expect(calls).toBe(4);
  });

  it('waits at least Retry-After for a throttled error', async () => {
    const delays: number[] = [];
    let calls = 0;
    await retry(
      async () => {
        if (calls++ === 0) throw new ThrottledError('slow down', { retryAfterMs: 40 });
        return 1;
      },
      { baseDelayMs: 1, random: () => 0, onRetry: ({ delayMs }) => delays.push(delayMs) },
    );
    expect(delays).toEqual([40]);
  });

  it('backs off exponentially under the cap, with jitter', async () => {
    const delays: number[] = [];
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
        },
      ),
    ).rejects.toThrow();
    expect(delays).toEqual([9, 19, 39, 49]);
  });

  it('rejects with the abort reason, not a wrapped error, and stops retrying', async () => {
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
    setTimeout(() => controller.abort(reason), 20);
    await expect(promise).rejects.toBe(reason);
    expect(calls).toBe(1);
  });
});

describe('waitUntil', () => {
  it('polls until the check returns a value', async () => {
    let n = 0;
    const value = await waitUntil(async () => (++n >= 3 ? n : undefined), { timeoutMs: 5000, minDelayMs: 1 });
    expect(value).toBe(3);
  });

  it('throws a TimeoutError naming what it waited for', async () => {
    const error = await waitUntil(async () => undefined, {
      timeoutMs: 30,
      minDelayMs: 5,
      what: 'snapshot s1',
    }).catch((e: unknown) => e);
    expect(TimeoutError.isInstance(error)).toBe(true);
    expect(String(error)).toMatch(/snapshot s1/);
  });

  it('rejects with the abort reason', async () => {
    const controller = new AbortController();
    const reason = new Error('cancelled');
    const promise = waitUntil(async () => undefined, {
      timeoutMs: 60_000,
      minDelayMs: 1000,
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(reason), 10);
    await expect(promise).rejects.toBe(reason);
  });
});
