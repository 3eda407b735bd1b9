import type { EmulatorClock } from './emulator-clock.js';

/**
 * A token bucket: `ratePerSecond` tokens a second, holding at most `capacity` (the burst; the emulator uses one
 * second's worth, AWS does not document its burst). Refills by the emulator's clock.
 */
export class RateBucket {
  readonly #rate: number;
  readonly #capacity: number;
  readonly #clock: EmulatorClock;
  #tokens: number;
  #last: number;

  constructor(ratePerSecond: number, clock: EmulatorClock, capacity = ratePerSecond) {
    this.#rate = ratePerSecond;
    this.#capacity = capacity;
    this.#clock = clock;
    this.#tokens = capacity;
    this.#last = clock.now();
  }

  #refill(): void {
    const now = this.#clock.now();
    if (now > this.#last) {
      this.#tokens = Math.min(this.#capacity, this.#tokens + ((now - this.#last) / 1000) * this.#rate);
    }
    this.#last = Math.max(this.#last, now);
  }

  /** Whether a token is there now (without taking it). */
  available(): boolean {
    this.#refill();
    return this.#tokens >= 1;
  }

  /** Takes one token; false when the bucket is empty. */
  take(): boolean {
    this.#refill();
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}
