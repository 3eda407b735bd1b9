import {
  InvalidArgumentError,
  NotFoundError,
  ProxyBoundError,
  ProxyBusyError,
} from '../errors/drkit-error.js';
import type { SyncProxy } from '../spec/v2/index.js';

/** Why a disk task went to a proxy, or why it waits: the scheduler's decision in words and numbers. */
export interface Placement {
  readonly taskId: string;
  readonly platformId: string;
  /** The chosen proxy, or undefined when the task has to wait or cannot run. */
  readonly proxyId: string | undefined;
  /** `placed`, `waiting` (every bound proxy is at its mounted-disk limit) or `unplaceable` (no proxy bound). */
  readonly decision: 'placed' | 'waiting' | 'unplaceable';
  /** Load of every candidate proxy when the decision was made. */
  readonly candidates: readonly { proxyId: string; running: number; maxMountedDisks: number }[];
  /** The decision in one sentence. */
  readonly reason: string;
}

/** A view of one registered proxy. */
export interface SyncProxyInfo {
  readonly id: string;
  readonly name: string;
  readonly maxMountedDisks: number;
  /** The proxy's setting, for display: it bounds no call today (see {@link SyncProxySettings.httpTimeoutSeconds}). */
  readonly httpTimeoutSeconds: number;
  /** Platforms the proxy is bound to. */
  readonly platformIds: readonly string[];
  /** Disk tasks the proxy runs now. */
  readonly running: number;
}

/** A slot on a proxy held by one running disk task; release it exactly once when the task ends. */
export interface ProxyLease {
  readonly proxy: SyncProxy;
  readonly placement: Placement;
  release(): void;
}

interface Entry {
  proxy: SyncProxy;
  platforms: Set<string>;
  /** Running tasks per platform id. */
  running: Map<string, number>;
}

/**
 * The console's view of its Sync Proxies: registration, bindings to platforms, and the placement of disk tasks.
 * A proxy may bind to many platforms and a platform to many proxies. A task goes to the least loaded proxy
 * bound to its platform (running / maxMountedDisks, then fewest running, then id) and waits while all are full.
 * Unbinding is refused while the proxy runs a task for that platform; removing while it has any binding.
 *
 * @example
 * ```ts
 * const registry = new SyncProxyRegistry();
 * registry.register(proxyA);
 * registry.bind(proxyA.id, platform.id);
 * registry.plan([{ id: 't1', platformId: platform.id }]); // dry run
 * ```
 */
export class SyncProxyRegistry {
  private readonly entries = new Map<string, Entry>();
  private waiters: (() => void)[] = [];

  /**
   * Adds a proxy (as a proxy registering with the console).
   *
   * @throws {@link InvalidArgumentError} when a proxy with the same id is registered.
   */
  register(proxy: SyncProxy): void {
    if (this.entries.has(proxy.id))
      throw new InvalidArgumentError(`Sync Proxy ${proxy.id} is already registered`);
    this.entries.set(proxy.id, { proxy, platforms: new Set(), running: new Map() });
  }

  /** Binds a proxy to a platform (idempotent). @throws {@link NotFoundError} for an unknown proxy. */
  bind(proxyId: string, platformId: string): void {
    this.entry(proxyId).platforms.add(platformId);
    this.wake();
  }

  /**
   * Unbinds a proxy from a platform.
   *
   * @throws {@link ProxyBusyError} while the proxy runs a task for that platform; {@link NotFoundError}.
   */
  unbind(proxyId: string, platformId: string): void {
    const entry = this.entry(proxyId);
    const running = entry.running.get(platformId) ?? 0;
    if (running > 0) {
      throw new ProxyBusyError(
        `Sync Proxy ${proxyId} runs ${running} disk task(s) for platform ${platformId}: wait for them to end, then unbind`,
      );
    }
    entry.platforms.delete(platformId);
  }

  /**
   * Deletes a proxy.
   *
   * @throws {@link ProxyBoundError} while it is bound to any platform; {@link NotFoundError}.
   */
  remove(proxyId: string): void {
    const entry = this.entry(proxyId);
    if (entry.platforms.size > 0) {
      throw new ProxyBoundError(
        `Sync Proxy ${proxyId} is bound to ${[...entry.platforms].join(', ')}: unbind it from every platform first`,
      );
    }
    this.entries.delete(proxyId);
  }

  /** Every registered proxy with its bindings and load. */
  list(): SyncProxyInfo[] {
    return [...this.entries.values()].map((e) => ({
      id: e.proxy.id,
      name: e.proxy.name,
      maxMountedDisks: e.proxy.settings.maxMountedDisks,
      httpTimeoutSeconds: e.proxy.settings.httpTimeoutSeconds,
      platformIds: [...e.platforms],
      running: total(e),
    }));
  }

  /**
   * Dry run: where each task would go if all were submitted now, in order, with the same algorithm the
   * scheduler uses. Nothing is reserved.
   */
  plan(tasks: readonly { id: string; platformId: string }[]): Placement[] {
    const extra = new Map<string, number>();
    return tasks.map((task) => {
      const placement = this.decide(task, extra);
      if (placement.proxyId) extra.set(placement.proxyId, (extra.get(placement.proxyId) ?? 0) + 1);
      return placement;
    });
  }

  /**
   * Reserves a slot for a task on the least loaded bound proxy, waiting while all are full.
   *
   * @throws {@link NotFoundError} when no proxy is bound to the task's platform; `signal.reason` when aborted.
   */
  async acquire(
    task: { id: string; platformId: string },
    options: { signal?: AbortSignal; onWait?: (placement: Placement) => void } = {},
  ): Promise<ProxyLease> {
    for (;;) {
      options.signal?.throwIfAborted();
      const placement = this.decide(task, new Map());
      if (placement.decision === 'unplaceable') throw new NotFoundError(placement.reason);
      if (placement.proxyId) {
        const entry = this.entry(placement.proxyId);
        entry.running.set(task.platformId, (entry.running.get(task.platformId) ?? 0) + 1);
        let released = false;
        return {
          proxy: entry.proxy,
          placement,
          release: () => {
            if (released) return;
            released = true;
            entry.running.set(task.platformId, (entry.running.get(task.platformId) ?? 1) - 1);
            this.wake();
          },
        };
      }
      options.onWait?.(placement);
      await this.waitForChange(options.signal);
    }
  }

  private decide(task: { id: string; platformId: string }, extra: Map<string, number>): Placement {
    const bound = [...this.entries.values()].filter((e) => e.platforms.has(task.platformId));
    const candidates = bound.map((e) => ({
      proxyId: e.proxy.id,
      running: total(e) + (extra.get(e.proxy.id) ?? 0),
      maxMountedDisks: e.proxy.settings.maxMountedDisks,
    }));
    const base = { taskId: task.id, platformId: task.platformId, candidates };
    if (candidates.length === 0) {
      return {
        ...base,
        proxyId: undefined,
        decision: 'unplaceable',
        reason: `no Sync Proxy is bound to platform ${task.platformId}: bind one`,
      };
    }
    const free = candidates
      .filter((c) => c.running < c.maxMountedDisks)
      .sort(
        (a, b) =>
          a.running / a.maxMountedDisks - b.running / b.maxMountedDisks ||
          a.running - b.running ||
          a.proxyId.localeCompare(b.proxyId),
      );
    const best = free[0];
    if (!best) {
      return {
        ...base,
        proxyId: undefined,
        decision: 'waiting',
        reason: `all ${candidates.length} Sync Proxies bound to ${task.platformId} are at their mounted-disk limit`,
      };
    }
    return {
      ...base,
      proxyId: best.proxyId,
      decision: 'placed',
      reason: `${best.proxyId} is the least loaded of ${candidates.length} bound proxies (${best.running}/${best.maxMountedDisks} disks)`,
    };
  }

  private entry(proxyId: string): Entry {
    const entry = this.entries.get(proxyId);
    if (!entry) throw new NotFoundError(`no Sync Proxy ${proxyId} is registered`);
    return entry;
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private waitForChange(signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.waiters = this.waiters.filter((w) => w !== done);
        reject(signal?.reason);
      };
      const done = () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(done);
    });
  }
}

function total(entry: Entry): number {
  let sum = 0;
  for (const n of entry.running.values()) sum += n;
  return sum;
}
