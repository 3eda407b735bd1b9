// The per-ESXi-host budget of data connections on its own: grants, waits in order, the platform-wide ceiling, a
// wait that ends with its deadline (a fake clock) or its signal. Sessions over NBD and HTTPS share it in
// vmware-nbd-transport.test.ts and vmware-changed-block-reader.test.ts.
import { TimeoutError } from '@drkit/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createConnectionBudget, VmwareConnectionLimitError } from './vmware-connection-budget.js';

afterEach(() => {
  vi.useRealTimers();
});

describe('the connection budget', () => {
  it('grants what is free up to what is wanted, at least one, and waits in order when the host is full', async () => {
    const budget = createConnectionBudget({ connectionsPerHost: 3, connectionsPerVcenter: 52 });
    const a = await budget.acquire('host-1', 2, {});
    const b = await budget.acquire('host-1', 2, {});
    expect([a.connections, b.connections, budget.inUse('host-1')]).toEqual([2, 1, 3]);
    const order: string[] = [];
    const c = budget.acquire('host-1', 2, {}).then((g) => {
      order.push('c');
      return g;
    });
    const d = budget.acquire('host-1', 1, {}).then((g) => {
      order.push('d');
      return g;
    });
    // Another host is not held up by host-1's queue.
    const other = await budget.acquire('host-2', 4, {});
    expect(other.connections).toBe(3);
    expect(budget.waiting()).toBe(2);
    b.release();
    const gotC = await c;
    expect(gotC.connections).toBe(1);
    expect(order).toEqual(['c']);
    a.release(1); // a partial release: d's turn
    expect(a.connections).toBe(1);
    const gotD = await d;
    expect(gotD.connections).toBe(1);
    expect(order).toEqual(['c', 'd']);
    a.release(5); // never more than held
    expect(a.connections).toBe(0);
    expect(budget.inUse('host-1')).toBe(2); // c's and d's
    a.release();
    gotC.release();
    gotD.release();
    gotD.release(); // idempotent
    other.release();
    expect([budget.inUse('host-1'), budget.inUse(), budget.waiting()]).toEqual([0, 0, 0]);
  });

  it('counts every host against connectionsPerVcenter', async () => {
    const budget = createConnectionBudget({ connectionsPerHost: 4, connectionsPerVcenter: 5 });
    const a = await budget.acquire('host-1', 4, {});
    const b = await budget.acquire('host-2', 4, {});
    expect(b.connections).toBe(1);
    const waiting = budget.acquire('host-3', 1, { deadline: Date.now() + 60_000 });
    expect(budget.waiting()).toBe(1);
    a.release(1);
    expect((await waiting).connections).toBe(1);
    a.release();
    b.release();
    expect(budget.inUse()).toBe(1);
  });

  it('a wait past its deadline fails with VmwareConnectionLimitError (retryable TimeoutError) and leaves the queue', async () => {
    vi.useFakeTimers();
    const budget = createConnectionBudget({ connectionsPerHost: 2, connectionsPerVcenter: 52 });
    const held = await budget.acquire('host-1', 2, {});
    const waiting = budget.acquire('host-1', 1, { deadline: Date.now() + 30_000 });
    const caught = waiting.catch((error: unknown) => error);
    await vi.advanceTimersByTimeAsync(29_999);
    expect(budget.waiting()).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    const error = await caught;
    expect(VmwareConnectionLimitError.isInstance(error)).toBe(true);
    expect(TimeoutError.isInstance(error)).toBe(true);
    expect(error).toMatchObject({ retryable: true, esxiHost: 'host-1', limit: 'connectionsPerHost' });
    expect(budget.waiting()).toBe(0);
    // A deadline already past (the epoch, no clock read) fails at once, without waiting.
    await expect(budget.acquire('host-1', 1, { deadline: 1 })).rejects.toSatisfy((e) =>
      VmwareConnectionLimitError.isInstance(e),
    );
    // A deadline past what one timer holds (about 24.8 days) is still waited for, not taken as already past.
    const far = budget.acquire('host-1', 1, { deadline: Date.now() + 30 * 24 * 3600_000 });
    const farCaught = far.catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(25 * 24 * 3600_000);
    expect(budget.waiting()).toBe(1);
    await vi.advanceTimersByTimeAsync(5 * 24 * 3600_000);
    expect(VmwareConnectionLimitError.isInstance(await farCaught)).toBe(true);
    held.release();
    expect(budget.inUse()).toBe(0);
  });

  it('an aborted wait rejects with the reason and lets the waiters behind it be served', async () => {
    const budget = createConnectionBudget({ connectionsPerHost: 1, connectionsPerVcenter: 52 });
    const held = await budget.acquire('host-1', 1, {});
    const controller = new AbortController();
    const first = budget.acquire('host-1', 1, { signal: controller.signal });
    const second = budget.acquire('host-1', 1, {});
    const reason = new Error('stopped');
    controller.abort(reason);
    await expect(first).rejects.toBe(reason);
    held.release();
    const got = await second;
    expect(got.connections).toBe(1);
    got.release();
    expect([budget.inUse(), budget.waiting()]).toEqual([0, 0]);
  });

  it('tells `waiting` only when a session has to wait, and ends it when the wait ends, however it ends', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const budget = createConnectionBudget({ connectionsPerHost: 1, connectionsPerVcenter: 52 });
    const told: string[] = [];
    const waiting = (resource: string) => {
      told.push(`wait ${resource}`);
      return () => told.push('done');
    };
    const held = await budget.acquire('host-1', 1, {}, waiting);
    expect(told).toEqual([]); // a free connection: no wait
    const granted = budget.acquire('host-1', 1, {}, waiting);
    const timedOut = budget.acquire('host-1', 1, { deadline: Date.now() + 5_000 }, waiting);
    const stop = new AbortController();
    const aborted = budget.acquire('host-1', 1, { signal: stop.signal }, waiting);
    expect(told).toEqual([
      'wait a data connection to ESXi host host-1 (connectionsPerHost)',
      'wait a data connection to ESXi host host-1 (connectionsPerHost)',
      'wait a data connection to ESXi host host-1 (connectionsPerHost)',
    ]);
    stop.abort(new Error('cancelled'));
    await expect(aborted).rejects.toThrow('cancelled');
    expect(told.filter((t) => t === 'done')).toHaveLength(1);
    held.release();
    const second = await granted;
    expect(told.filter((t) => t === 'done')).toHaveLength(2);
    vi.advanceTimersByTime(5_000);
    await expect(timedOut).rejects.toSatisfy((error) => VmwareConnectionLimitError.isInstance(error));
    expect(told.filter((t) => t === 'done')).toHaveLength(3);
    second.release();
  });
});
