import { InvalidSettingsError, sleep, ThrottledError } from '@drkit/core';
import { awsErrorFacts, isAwsThrottling, toDrkitError } from './aws-errors.js';

/**
 * The request rates an AWS platform keeps to, per second, and the clock it waits by. The defaults are the EBS
 * direct APIs' documented default quotas; an account whose quotas were raised can say so here. The limiter starts
 * at these rates, backs off when AWS throttles anyway (another client on the account, a lower quota) and creeps
 * back up to them.
 */
export interface AwsRateLimits {
  /** GetSnapshotBlock per snapshot (quota L-028ACFB9). Default 1000. */
  readonly getSnapshotBlockPerSnapshot?: number;
  /** GetSnapshotBlock per account and region (quota L-C125AE42), shared by every read of the platform. Default 1000. */
  readonly getSnapshotBlockPerAccount?: number;
  /** ListSnapshotBlocks, and separately ListChangedBlocks, per account (L-18E976AB, L-DB2FBAA1). Default 50. */
  readonly listCallsPerAccount?: number;
  /** PutSnapshotBlock (restore to EBS) per snapshot and per account (L-1774F84A, L-AFAE1BE8). Default 1000. */
  readonly putSnapshotBlockPerSnapshot?: number;
  readonly putSnapshotBlockPerAccount?: number;
  /**
   * The clock the limiter reads (milliseconds) and how it waits. Default the wall clock and a timer. Tests pass a
   * virtual clock (a sleep that moves it), so a throttling storm runs without waiting in real time.
   */
  readonly clock?: {
    now(): number;
    sleep(ms: number, signal?: AbortSignal): Promise<void>;
  };
}

/** Rates after validation. @internal */
export interface ResolvedAwsRateLimits {
  readonly getSnapshotBlockPerSnapshot: number;
  readonly getSnapshotBlockPerAccount: number;
  readonly listCallsPerAccount: number;
  readonly putSnapshotBlockPerSnapshot: number;
  readonly putSnapshotBlockPerAccount: number;
  readonly clock: { now(): number; sleep(ms: number, signal?: AbortSignal): Promise<void> };
}

/** Validates {@link AwsRateLimits}. @throws InvalidSettingsError naming the field. @internal */
export function resolveAwsRateLimits(limits: AwsRateLimits | undefined): ResolvedAwsRateLimits {
  const rate = (value: unknown, field: string, fallback: number): number => {
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 1 || value > 100_000) {
      throw new InvalidSettingsError(
        `rateLimits.${field}`,
        `must be a rate from 1 to 100000 per second, got ${String(value)}`,
      );
    }
    return value;
  };
  const clock = limits?.clock;
  if (clock !== undefined && (typeof clock.now !== 'function' || typeof clock.sleep !== 'function')) {
    throw new InvalidSettingsError('rateLimits.clock', 'must have now() and sleep(ms, signal)');
  }
  return {
    getSnapshotBlockPerSnapshot: rate(
      limits?.getSnapshotBlockPerSnapshot,
      'getSnapshotBlockPerSnapshot',
      1000,
    ),
    getSnapshotBlockPerAccount: rate(limits?.getSnapshotBlockPerAccount, 'getSnapshotBlockPerAccount', 1000),
    listCallsPerAccount: rate(limits?.listCallsPerAccount, 'listCallsPerAccount', 50),
    putSnapshotBlockPerSnapshot: rate(
      limits?.putSnapshotBlockPerSnapshot,
      'putSnapshotBlockPerSnapshot',
      1000,
    ),
    putSnapshotBlockPerAccount: rate(limits?.putSnapshotBlockPerAccount, 'putSnapshotBlockPerAccount', 1000),
    clock: clock ?? { now: () => Date.now(), sleep },
  };
}

/** The factor a rate is multiplied by when AWS throttles a request admitted at it. */
export const AWS_BACKOFF_FACTOR = 0.8;
/** The lowest rate backed off to, as a share of the configured rate. */
const FLOOR_SHARE = 1 / 50;
/**
 * The share of the configured rate won back per second without throttling (additive, by the limiter's clock):
 * from a back-off to 80 %, the full rate is back in 0.4 s, whatever the quota's size.
 */
const INCREASE_PER_SECOND = 0.5;
/** Throttled answers one request takes (waiting in the limiter each time) before it is a `ThrottledError`. */
export const AWS_MAX_THROTTLED_ATTEMPTS = 50;

/**
 * One adaptive token bucket, kept as a schedule: a request is admitted at the next free slot, and the slot after
 * it is `1000 / rate` ms later (a burst of at most {@link CATCH_UP} requests, so drkit never counts on a burst AWS
 * does not document). Throttling multiplies the rate by {@link AWS_BACKOFF_FACTOR}, once per epoch: the requests already
 * admitted at the old rate do not back it off again. Each success adds back {@link INCREASE_PER_SECOND} of the configured rate per second since the last change,
 * up to the configured rate.
 */
class AdaptiveBucket {
  readonly ceiling: number;
  rate: number;
  next = Number.NEGATIVE_INFINITY;
  epoch = 0;
  throttles = 0;
  /** When the rate last grew (or was backed off): growth is by the time since. */
  increasedAt: number | undefined;
  constructor(ceiling: number) {
    this.ceiling = ceiling;
    this.rate = ceiling;
  }
  backOff(epoch: number, now: number): void {
    this.throttles++;
    if (epoch !== this.epoch) return;
    this.increasedAt = now;
    this.epoch++;
    this.rate = Math.max(this.ceiling * FLOOR_SHARE, this.rate * AWS_BACKOFF_FACTOR);
  }
  creepUp(now: number): void {
    const since = this.increasedAt === undefined ? 0 : Math.max(0, now - this.increasedAt);
    this.increasedAt = now;
    this.rate = Math.min(this.ceiling, this.rate + (this.ceiling * INCREASE_PER_SECOND * since) / 1000);
  }
}

/** What a lane's buckets looked like when a request was admitted. */
interface Permit {
  readonly buckets: readonly AdaptiveBucket[];
  readonly epochs: readonly number[];
}

/** Requests a bucket's schedule may lag behind and catch up on (timers fire late): a burst of at most this many. */
const CATCH_UP = 4;

/**
 * The waiting line of one lane (a snapshot's reads, or one list operation): its requests are admitted one by one,
 * first come first served, each when every bucket of the lane has a slot. A slot is computed when the request is
 * admitted, at the bucket's rate then, so a back-off slows every request still waiting, not only later ones.
 */
class AdmissionQueue {
  readonly #buckets: readonly AdaptiveBucket[];
  readonly #clock: ResolvedAwsRateLimits['clock'];
  readonly #waiting: {
    resolve: (permit: Permit) => void;
    reject: (error: unknown) => void;
    signal: AbortSignal | undefined;
    onAbort: (() => void) | undefined;
  }[] = [];
  #pumping = false;

  constructor(buckets: readonly AdaptiveBucket[], clock: ResolvedAwsRateLimits['clock']) {
    this.#buckets = buckets;
    this.#clock = clock;
  }

  admit(signal: AbortSignal | undefined): Promise<Permit> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<Permit>((resolve, reject) => {
      const waiter = { resolve, reject, signal, onAbort: undefined as (() => void) | undefined };
      if (signal) {
        waiter.onAbort = () => {
          const at = this.#waiting.indexOf(waiter);
          if (at !== -1) this.#waiting.splice(at, 1);
          reject(signal.reason);
        };
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.#waiting.push(waiter);
      if (!this.#pumping) void this.#pump();
    });
  }

  async #pump(): Promise<void> {
    this.#pumping = true;
    try {
      while (this.#waiting.length > 0) {
        const now = this.#clock.now();
        let due = Number.NEGATIVE_INFINITY;
        for (const bucket of this.#buckets) due = Math.max(due, bucket.next);
        if (due > now) {
          await this.#clock.sleep(due - now);
          continue;
        }
        const waiter = this.#waiting.shift()!;
        for (const bucket of this.#buckets) {
          const interval = 1000 / bucket.rate;
          bucket.next = Math.max(bucket.next, now - CATCH_UP * interval) + interval;
        }
        if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
        waiter.resolve({ buckets: this.#buckets, epochs: this.#buckets.map((b) => b.epoch) });
      }
    } catch (error) {
      for (const waiter of this.#waiting.splice(0)) {
        if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
        waiter.reject(error);
      }
    } finally {
      this.#pumping = false;
    }
  }
}

/** A snapshot's bucket, held while a session of the snapshot is open. @internal */
export interface SnapshotLane extends Disposable {
  /** Runs one GetSnapshotBlock attempt in the snapshot's and the account's buckets. */
  run<T>(call: () => Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T>;
}

/** What a test or a log can see of the limiter. */
export interface AwsRateLimiterState {
  /** The current GetSnapshotBlock rate per account, and per open snapshot. */
  readonly getSnapshotBlockPerAccount: number;
  readonly getSnapshotBlockPerSnapshot: Readonly<Record<string, number>>;
  readonly listCalls: Readonly<Record<'ListSnapshotBlocks' | 'ListChangedBlocks', number>>;
  /** Throttled answers seen, all buckets. */
  readonly throttles: number;
}

/**
 * The adaptive rate limiter of one platform: every read session and listing of the platform goes through it. A
 * throttled request waits in the limiter and is sent again (up to {@link AWS_MAX_THROTTLED_ATTEMPTS} times), so a
 * throttling storm slows reads down instead of failing disk tasks through the engine's few attempts.
 *
 * @internal
 */
export class AwsRateLimiter {
  readonly #limits: ResolvedAwsRateLimits;
  readonly #account: AdaptiveBucket;
  readonly #putAccount: AdaptiveBucket;
  readonly #lists: Record<'ListSnapshotBlocks' | 'ListChangedBlocks', AdaptiveBucket>;
  readonly #listQueues: Record<'ListSnapshotBlocks' | 'ListChangedBlocks', AdmissionQueue>;
  readonly #snapshots = new Map<string, { bucket: AdaptiveBucket; queue: AdmissionQueue; holders: number }>();
  #throttles = 0;

  constructor(limits: ResolvedAwsRateLimits) {
    this.#limits = limits;
    this.#account = new AdaptiveBucket(limits.getSnapshotBlockPerAccount);
    this.#putAccount = new AdaptiveBucket(limits.putSnapshotBlockPerAccount);
    this.#lists = {
      ListSnapshotBlocks: new AdaptiveBucket(limits.listCallsPerAccount),
      ListChangedBlocks: new AdaptiveBucket(limits.listCallsPerAccount),
    };
    this.#listQueues = {
      ListSnapshotBlocks: new AdmissionQueue([this.#lists.ListSnapshotBlocks], limits.clock),
      ListChangedBlocks: new AdmissionQueue([this.#lists.ListChangedBlocks], limits.clock),
    };
  }

  /**
   * Holds the bucket of a snapshot until disposed (sessions of one snapshot share it): its GetSnapshotBlock
   * bucket, or its PutSnapshotBlock bucket for a restore.
   */
  snapshot(
    snapshotId: string,
    operation: 'GetSnapshotBlock' | 'PutSnapshotBlock' = 'GetSnapshotBlock',
  ): SnapshotLane {
    const key = operation === 'GetSnapshotBlock' ? snapshotId : `${operation}:${snapshotId}`;
    const account = operation === 'GetSnapshotBlock' ? this.#account : this.#putAccount;
    let entry = this.#snapshots.get(key);
    if (!entry) {
      const bucket = new AdaptiveBucket(
        operation === 'GetSnapshotBlock'
          ? this.#limits.getSnapshotBlockPerSnapshot
          : this.#limits.putSnapshotBlockPerSnapshot,
      );
      entry = { bucket, queue: new AdmissionQueue([bucket, account], this.#limits.clock), holders: 0 };
      this.#snapshots.set(key, entry);
    }
    entry.holders++;
    const held = entry;
    let disposed = false;
    return {
      run: (call, signal, what) =>
        this.#run(held.queue, (error) => this.#blamed(error, held.bucket, account), call, signal, what),
      [Symbol.dispose]: () => {
        if (disposed) return;
        disposed = true;
        if (--held.holders === 0 && this.#snapshots.get(key) === held) this.#snapshots.delete(key);
      },
    };
  }

  /** Runs one list call attempt in its operation's bucket. */
  list<T>(
    operation: 'ListSnapshotBlocks' | 'ListChangedBlocks',
    call: () => Promise<T>,
    signal: AbortSignal | undefined,
    what: string,
  ): Promise<T> {
    const bucket = this.#lists[operation];
    return this.#run(this.#listQueues[operation], () => bucket, call, signal, what);
  }

  state(): AwsRateLimiterState {
    return {
      getSnapshotBlockPerAccount: this.#account.rate,
      getSnapshotBlockPerSnapshot: Object.fromEntries(
        [...this.#snapshots].filter(([id]) => !id.includes(':')).map(([id, { bucket }]) => [id, bucket.rate]),
      ),
      listCalls: {
        ListSnapshotBlocks: this.#lists.ListSnapshotBlocks.rate,
        ListChangedBlocks: this.#lists.ListChangedBlocks.rate,
      },
      throttles: this.#throttles,
    };
  }

  /** The bucket a throttle is about: the snapshot's for `RESOURCE_LEVEL_THROTTLE`, the account's otherwise. */
  #blamed(error: unknown, snapshot: AdaptiveBucket, account: AdaptiveBucket): AdaptiveBucket {
    const facts = awsErrorFacts(error);
    return facts.reason === 'RESOURCE_LEVEL_THROTTLE' || facts.name === 'RequestThrottledException'
      ? snapshot
      : account;
  }

  async #run<T>(
    queue: AdmissionQueue,
    blamed: (error: unknown) => AdaptiveBucket,
    call: () => Promise<T>,
    signal: AbortSignal | undefined,
    what: string,
  ): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const permit = await queue.admit(signal);
      try {
        const result = await call();
        const now = this.#limits.clock.now();
        for (const bucket of permit.buckets) bucket.creepUp(now);
        return result;
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        if (!isAwsThrottling(error)) throw error;
        this.#throttles++;
        const bucket = blamed(error);
        const index = permit.buckets.indexOf(bucket);
        bucket.backOff(index === -1 ? bucket.epoch : permit.epochs[index]!, this.#limits.clock.now());
        if (attempt >= AWS_MAX_THROTTLED_ATTEMPTS) {
          const typed = toDrkitError(error, 'ebs', what);
          throw ThrottledError.isInstance(typed)
            ? new ThrottledError(
                `${what}: AWS throttled it ${attempt} times, the limiter backed off to ${bucket.rate.toFixed(1)}/s`,
                { cause: typed },
              )
            : typed;
        }
      }
    }
  }
}
