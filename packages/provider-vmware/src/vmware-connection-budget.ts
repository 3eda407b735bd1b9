import { type CallOptions, TimeoutError } from '@drkit/core';

const limitMarker = Symbol.for('drkit.vmware.connection-limit');

/**
 * A read session could not get one data connection to its ESXi host before its deadline: every connection the
 * per-host budget (`limits.connectionsPerHost`) or the platform's (`limits.connectionsPerVcenter`) allows was held
 * by other sessions for the whole wait. A {@link @drkit/core!TimeoutError} (code `TIMEOUT`), retryable: the
 * other sessions release their connections when they close.
 */
export class VmwareConnectionLimitError extends TimeoutError {
  /** The ESXi host's managed object id (`host-12`), the VM's `runtime.host`. */
  readonly esxiHost: string;
  /** The budget that was full: `connectionsPerHost` or `connectionsPerVcenter`. */
  readonly limit: 'connectionsPerHost' | 'connectionsPerVcenter';
  constructor(esxiHost: string, limit: 'connectionsPerHost' | 'connectionsPerVcenter', detail: string) {
    super(detail, { retryable: true });
    this.esxiHost = esxiHost;
    this.limit = limit;
    Object.defineProperty(this, limitMarker, { value: true });
  }
  static override isInstance(error: unknown): error is VmwareConnectionLimitError {
    return (
      TimeoutError.isInstance(error) && (error as unknown as Record<symbol, unknown>)[limitMarker] === true
    );
  }
}

/** Data connections a session holds against its host's budget; give them back with `release`. @internal */
export interface VmwareConnectionGrant {
  /** The ESXi host the connections are counted on. */
  readonly esxiHost: string;
  /** Connections held now (1 to what was wanted). */
  readonly connections: number;
  /** Gives back `count` of them (default: all). Idempotent once all are back. */
  release(count?: number): void;
}

/** The counting semaphore shared by every read session of one platform. @internal */
export interface VmwareConnectionBudget {
  readonly connectionsPerHost: number;
  readonly connectionsPerVcenter: number;
  /**
   * Waits (in arrival order per host) until the host and the platform each have one connection free, then takes
   * as many as are free, up to `wanted`.
   *
   * `waiting` is told when the call has to wait (the engine's stall watchdog then does not count the wait) and its
   * returned function called when the wait ends.
   *
   * @throws {@link VmwareConnectionLimitError} when not one was free by `deadline`; `signal.reason` when aborted.
   */
  acquire(
    esxiHost: string,
    wanted: number,
    options: CallOptions,
    waiting?: (resource: string) => () => void,
  ): Promise<VmwareConnectionGrant>;
  /** Connections held on a host now (all hosts when omitted). */
  inUse(esxiHost?: string): number;
  /** Sessions waiting for a connection. */
  waiting(): number;
}

interface Waiter {
  readonly esxiHost: string;
  readonly wanted: number;
  grant(connections: number): void;
}

/**
 * A per-ESXi-host counting semaphore of data connections (NBD connections of the nbdkit/VDDK export, each an NFC
 * connection of VDDK to the host; HTTPS range requests in flight, served by the host's file service), with a
 * platform-wide ceiling for vCenter's own limit.
 * @internal
 */
export function createConnectionBudget(limits: {
  readonly connectionsPerHost: number;
  readonly connectionsPerVcenter: number;
}): VmwareConnectionBudget {
  const held = new Map<string, number>();
  let total = 0;
  const queue: Waiter[] = [];

  const freeOn = (esxiHost: string) =>
    Math.min(limits.connectionsPerHost - (held.get(esxiHost) ?? 0), limits.connectionsPerVcenter - total);

  function take(esxiHost: string, count: number): VmwareConnectionGrant {
    held.set(esxiHost, (held.get(esxiHost) ?? 0) + count);
    total += count;
    let left = count;
    return {
      esxiHost,
      get connections() {
        return left;
      },
      release(n = left) {
        const back = Math.min(Math.max(0, Math.floor(n)), left);
        if (back === 0) return;
        left -= back;
        total -= back;
        const now = (held.get(esxiHost) ?? 0) - back;
        if (now > 0) held.set(esxiHost, now);
        else held.delete(esxiHost);
        serve();
      },
    };
  }

  /** Grants what is free to the waiters in order; a waiter whose host is full lets the later ones of other hosts by. */
  function serve(): void {
    const blocked = new Set<string>();
    for (let i = 0; i < queue.length; ) {
      const waiter = queue[i]!;
      const free = blocked.has(waiter.esxiHost) ? 0 : freeOn(waiter.esxiHost);
      if (free <= 0) {
        blocked.add(waiter.esxiHost); // the later waiters of this host stay behind it
        i += 1;
        continue;
      }
      queue.splice(i, 1);
      waiter.grant(Math.min(free, waiter.wanted));
    }
  }

  return {
    connectionsPerHost: limits.connectionsPerHost,
    connectionsPerVcenter: limits.connectionsPerVcenter,
    inUse: (esxiHost) => (esxiHost === undefined ? total : (held.get(esxiHost) ?? 0)),
    waiting: () => queue.length,
    acquire(esxiHost, wanted, options, waiting) {
      options.signal?.throwIfAborted();
      const want = Math.max(1, Math.floor(wanted));
      const free = freeOn(esxiHost);
      if (free > 0 && !queue.some((w) => w.esxiHost === esxiHost)) {
        return Promise.resolve(take(esxiHost, Math.min(free, want)));
      }
      const limit =
        limits.connectionsPerHost - (held.get(esxiHost) ?? 0) <= 0
          ? 'connectionsPerHost'
          : 'connectionsPerVcenter';
      const deadline = options.deadline;
      if (deadline !== undefined && deadline <= Date.now()) {
        return Promise.reject(limitError(esxiHost, limit, deadline));
      }
      return new Promise<VmwareConnectionGrant>((resolve, reject) => {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const waited = waiting?.(`a data connection to ESXi host ${esxiHost} (${limit})`);
        const done = () => {
          waited?.();
          if (timer !== undefined) clearTimeout(timer);
          options.signal?.removeEventListener('abort', onAbort);
          const at = queue.indexOf(waiter);
          if (at >= 0) queue.splice(at, 1);
        };
        const waiter: Waiter = {
          esxiHost,
          wanted: want,
          grant(connections) {
            done();
            resolve(take(esxiHost, connections));
          },
        };
        const onAbort = () => {
          done();
          reject(options.signal?.reason);
          serve(); // a waiter that leaves may unblock the ones behind it
        };
        queue.push(waiter);
        options.signal?.addEventListener('abort', onAbort, { once: true });
        if (deadline !== undefined && Number.isFinite(deadline)) {
          // Timers hold at most 2^31 - 1 ms: a later deadline is waited for in steps.
          const arm = () => {
            const left = deadline - Date.now();
            timer = setTimeout(
              () => {
                if (Date.now() < deadline) return arm();
                done();
                reject(limitError(esxiHost, limit, deadline));
                serve();
              },
              Math.min(Math.max(0, left), 2_147_483_647),
            );
          };
          arm();
        }
      });
    },
  };

  function limitError(
    esxiHost: string,
    limit: 'connectionsPerHost' | 'connectionsPerVcenter',
    deadline: number,
  ): VmwareConnectionLimitError {
    const detail =
      limit === 'connectionsPerHost'
        ? `all ${limits.connectionsPerHost} data connections to ESXi host ${esxiHost} (limits.connectionsPerHost)`
        : `all ${limits.connectionsPerVcenter} data connections of the platform (limits.connectionsPerVcenter)`;
    return new VmwareConnectionLimitError(
      esxiHost,
      limit,
      `no data connection to ESXi host ${esxiHost} was free by the deadline ${new Date(deadline).toISOString()}: ` +
        `${detail} were held by other read sessions; retry when they close`,
    );
  }
}
