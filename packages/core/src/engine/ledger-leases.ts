import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { InvalidSettingsError, NotFoundError } from '../errors/drkit-error.js';
import type { LedgerEntry, LedgerEntryOwner, Repository } from '../repository/types.js';
import { resolveSecondsSetting } from '../util/seconds-setting.js';
import { withDeadline } from './side-effects.js';

/** Default lease of a ledger entry a running job holds, in seconds: renewed every third of it. */
export const DEFAULT_LEDGER_LEASE_SECONDS = 600;

/**
 * Seconds past an entry's `leaseExpiresAt` before another engine's `reconcile()` treats the entry as abandoned:
 * the tolerated disagreement between the clocks of engines sharing a repository.
 */
export const LEDGER_LEASE_MARGIN_SECONDS = 60;

const ENGINE_ID = /^[\x21-\x7e]{1,128}$/;

/**
 * Validates an engine id (1-128 printable ASCII characters, no space); default a random UUID.
 *
 * @throws {@link InvalidSettingsError} naming `field`.
 * @internal
 */
export function resolveEngineId(value: string | undefined, field: string): string {
  const id = value ?? randomUUID();
  if (typeof id !== 'string' || !ENGINE_ID.test(id)) {
    throw new InvalidSettingsError(
      field,
      `must be 1-128 printable ASCII characters without spaces, got ${JSON.stringify(id)}`,
    );
  }
  return id;
}

/**
 * Validates a ledger lease: seconds above 0, at most 86400 (fractions allowed).
 *
 * @throws {@link InvalidSettingsError} naming `field`.
 * @internal
 */
export function resolveLedgerLeaseSeconds(value: number | undefined, field: string): number {
  return resolveSecondsSetting(value, DEFAULT_LEDGER_LEASE_SECONDS, field);
}

/**
 * The ledger entries one engine holds, and the timer (unref'd) that renews their leases every third of the
 * lease. Every write of a held entry goes through one queue, so a renewal never overwrites a newer write of the
 * same entry and never runs after {@link LedgerLeases.drop} resolved (it would recreate a removed entry).
 *
 * @internal
 */
export class LedgerLeases {
  readonly owner: LedgerEntryOwner;
  private readonly held = new Map<string, LedgerEntry>();
  private queue: Promise<void> = Promise.resolve();
  private timer: ReturnType<typeof setInterval> | undefined;
  private renewing = false;

  constructor(
    private readonly repository: Repository,
    engineId: string,
    private readonly leaseSeconds: number,
    readonly now: () => Date,
  ) {
    this.owner = { engineId, hostname: hostname(), pid: process.pid };
  }

  /** Whether this engine wrote the entry. */
  owns(entry: LedgerEntry): boolean {
    return entry.owner?.engineId === this.owner.engineId;
  }

  /** The entry with this engine as its owner and a lease from now. */
  stamp(entry: LedgerEntry): LedgerEntry {
    const leaseExpiresAt = new Date(this.now().getTime() + this.leaseSeconds * 1000).toISOString();
    return { ...entry, owner: this.owner, leaseExpiresAt };
  }

  /** Starts renewing a recorded entry's lease. */
  hold(entry: LedgerEntry): void {
    this.held.set(entry.id, entry);
    if (this.timer === undefined) {
      this.timer = setInterval(() => this.renew(), (this.leaseSeconds * 1000) / 3);
      this.timer.unref();
    }
  }

  /** Writes a new version of a held entry (with a fresh lease), after any renewal under way. */
  rewrite(entry: LedgerEntry, signal?: AbortSignal): Promise<void> {
    return this.enqueue(async () => {
      const next = this.stamp(entry);
      await this.repository.ledger.update(next, { signal });
      if (this.held.has(entry.id)) this.held.set(entry.id, next);
    });
  }

  /** Stops renewing an entry; resolves once no renewal of it is under way. */
  drop(id: string): Promise<void> {
    return this.enqueue(async () => {
      this.held.delete(id);
      if (this.held.size === 0) this.stop();
    });
  }

  /** Stops the timer (the entries stay recorded; their leases run out). */
  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private renew(): void {
    if (this.renewing) return; // the last renewal is still being written
    this.renewing = true;
    this.enqueue(async () => {
      for (const [id, entry] of this.held) {
        const next = this.stamp(entry);
        try {
          // Bounded, so a hung store cannot hold the queue (and the job's settling) forever.
          await withDeadline(this.leaseSeconds / 3, `renewing the lease of ledger entry ${id}`, (signal) =>
            this.repository.ledger.update(next, { signal }),
          );
          if (this.held.has(id)) this.held.set(id, next);
        } catch (error) {
          // Removed by someone else: not recreated. Any other failure is retried at the next tick.
          if (NotFoundError.isInstance(error)) this.held.delete(id);
        }
      }
    }).finally(() => {
      this.renewing = false;
    });
  }

  private enqueue(step: () => Promise<void>): Promise<void> {
    const run = this.queue.then(step);
    this.queue = run.catch(() => undefined);
    return run;
  }
}
