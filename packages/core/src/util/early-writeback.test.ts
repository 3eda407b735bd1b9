import { describe, expect, it } from 'vitest';
import { EarlyWriteback } from './early-writeback.js';

/** A flush the test completes by hand. */
function manualFlush() {
  const calls: { resolve: () => void; reject: (error: unknown) => void }[] = [];
  const flush = () =>
    new Promise<void>((resolve, reject) => {
      calls.push({ resolve, reject });
    });
  return { calls, flush };
}

describe('EarlyWriteback', () => {
  it('starts one flush per threshold of bytes, never two at once', async () => {
    const { calls, flush } = manualFlush();
    const early = new EarlyWriteback(flush, 100);
    early.wrote(60);
    expect(calls).toHaveLength(0);
    early.wrote(40);
    expect(calls).toHaveLength(1);
    // Written while the first flush runs: counted towards the next, but no second flush starts.
    early.wrote(250);
    expect(calls).toHaveLength(1);
    calls[0]!.resolve();
    await Promise.resolve();
    await Promise.resolve();
    early.wrote(1);
    expect(calls).toHaveLength(2);
    calls[1]!.resolve();
    await Promise.resolve();
    await Promise.resolve();
    early.wrote(99);
    expect(calls).toHaveLength(2);
    early.wrote(1);
    expect(calls).toHaveLength(3);
    expect(early.started).toBe(3);
    const settled = early.settle();
    calls[2]!.resolve();
    await settled;
  });

  it('keeps a failure: every later settle rethrows it, and no flush starts after it', async () => {
    const { calls, flush } = manualFlush();
    const early = new EarlyWriteback(flush, 10);
    early.wrote(10);
    const failure = Object.assign(new Error('write-back failed'), { code: 'EIO' });
    calls[0]!.reject(failure);
    await expect(early.settle()).rejects.toBe(failure);
    early.wrote(1000);
    expect(calls).toHaveLength(1);
    await expect(early.settle()).rejects.toBe(failure);
  });

  it("records the writer's own flush failure as sticky too", async () => {
    const early = new EarlyWriteback(async () => undefined, 10);
    const failure = new Error('syncfs failed');
    await early.settle();
    early.failed(failure);
    early.failed(new Error('a later one'));
    await expect(early.settle()).rejects.toBe(failure);
  });

  it('with 0 bytes never flushes in the background', async () => {
    let flushes = 0;
    const early = new EarlyWriteback(async () => {
      flushes += 1;
    }, 0);
    early.wrote(1e12);
    await early.settle();
    expect(flushes).toBe(0);
    expect(() => new EarlyWriteback(async () => undefined, -1)).toThrow(RangeError);
  });
});
