import { describe, expect, it } from 'vitest';
import {
  InvalidSettingsError,
  NotFoundError,
  ProxyBoundError,
  ProxyBusyError,
} from '../errors/drkit-error.js';
import type { SyncProxy } from '../spec/v2/index.js';
import { SyncProxyRegistry } from './sync-proxy-registry.js';
import { resolveSyncProxySettings } from './sync-proxy-settings.js';

function proxy(id: string, maxMountedDisks: number): SyncProxy {
  return {
    id,
    name: id,
    settings: resolveSyncProxySettings({ maxMountedDisks }),
    run: () => Promise.reject(new Error('not used')),
  };
}

describe('Sync Proxy settings', () => {
  it('defaults to 600 s and 50 disks', () => {
    expect(resolveSyncProxySettings()).toEqual({ httpTimeoutSeconds: 600, maxMountedDisks: 50 });
  });
  it('refuses more than 150 disks, naming the field', () => {
    const error = (() => {
      try {
        resolveSyncProxySettings({ maxMountedDisks: 151 }, 'proxies[2].settings');
      } catch (e) {
        return e;
      }
    })();
    expect(InvalidSettingsError.isInstance(error)).toBe(true);
    expect((error as InvalidSettingsError).field).toBe('proxies[2].settings.maxMountedDisks');
    expect(resolveSyncProxySettings({ maxMountedDisks: 150 }).maxMountedDisks).toBe(150);
    expect(() => resolveSyncProxySettings({ maxMountedDisks: 0 })).toThrow(InvalidSettingsError);
    expect(() => resolveSyncProxySettings({ httpTimeoutSeconds: 1.5 })).toThrow(/httpTimeoutSeconds/);
  });
});

describe('SyncProxyRegistry', () => {
  it('balances tasks by load ratio across the proxies bound to the platform', () => {
    const registry = new SyncProxyRegistry();
    registry.register(proxy('a', 2));
    registry.register(proxy('b', 4));
    registry.register(proxy('c', 50)); // not bound to p1
    registry.bind('a', 'p1');
    registry.bind('b', 'p1');
    registry.bind('c', 'p2');
    const plan = registry.plan(Array.from({ length: 7 }, (_, i) => ({ id: `t${i}`, platformId: 'p1' })));
    expect(plan.map((p) => p.proxyId ?? p.decision)).toEqual(['a', 'b', 'b', 'a', 'b', 'b', 'waiting']);
    expect(plan[6]!.reason).toMatch(/mounted-disk limit/);
    expect(registry.plan([{ id: 'x', platformId: 'p9' }])[0]!.decision).toBe('unplaceable');
  });

  it('waits for a free slot and hands it over on release', async () => {
    const registry = new SyncProxyRegistry();
    registry.register(proxy('a', 1));
    registry.bind('a', 'p1');
    const first = await registry.acquire({ id: 't1', platformId: 'p1' });
    const waits: string[] = [];
    let secondGot = false;
    const second = registry.acquire(
      { id: 't2', platformId: 'p1' },
      { onWait: (p) => waits.push(p.decision) },
    );
    void second.then(() => {
      secondGot = true;
    });
    await new Promise((r) => setTimeout(r, 10));
    expect(secondGot).toBe(false);
    expect(waits).toEqual(['waiting']);
    first.release();
    first.release(); // idempotent
    const lease = await second;
    expect(lease.proxy.id).toBe('a');
    expect(registry.list()[0]!.running).toBe(1);
  });

  it('refuses to unbind a proxy that runs a task for the platform, and to delete a bound proxy', async () => {
    const registry = new SyncProxyRegistry();
    registry.register(proxy('a', 5));
    registry.bind('a', 'p1');
    registry.bind('a', 'p2');
    const lease = await registry.acquire({ id: 't1', platformId: 'p1' });
    expect(() => registry.unbind('a', 'p1')).toThrow(ProxyBusyError);
    registry.unbind('a', 'p2'); // no task for p2
    expect(() => registry.remove('a')).toThrow(ProxyBoundError);
    lease.release();
    registry.unbind('a', 'p1');
    registry.remove('a');
    expect(registry.list()).toEqual([]);
    expect(() => registry.bind('a', 'p1')).toThrow(NotFoundError);
  });

  it('fails at once when no proxy is bound, and rejects a waiting acquire with the abort reason', async () => {
    const registry = new SyncProxyRegistry();
    await expect(registry.acquire({ id: 't', platformId: 'p1' })).rejects.toThrow(NotFoundError);
    registry.register(proxy('a', 1));
    registry.bind('a', 'p1');
    await registry.acquire({ id: 't1', platformId: 'p1' });
    const controller = new AbortController();
    const reason = new Error('job cancelled');
    const waiting = registry.acquire({ id: 't2', platformId: 'p1' }, { signal: controller.signal });
    controller.abort(reason);
    await expect(waiting).rejects.toBe(reason);
  });
});
