/**
 * The time the AWS emulator lives by, in milliseconds since the epoch. Token expiry, rate buckets and timestamps
 * read it; nothing in the emulator reads the wall clock unless it is given {@link systemClock}.
 */
export interface EmulatorClock {
  now(): number;
}

/** A clock that moves only when told: tests advance it past a token's expiry or refill a rate bucket. */
export interface ManualClock extends EmulatorClock {
  /** Moves the clock forward by `ms` milliseconds (not backwards). */
  advance(ms: number): void;
  /** Sets the clock; it may not go backwards. */
  set(ms: number): void;
}

/** 2026-01-01T00:00:00Z, the default start of a {@link ManualClock}. */
export const MANUAL_CLOCK_START = Date.UTC(2026, 0, 1);

/**
 * Creates a clock that stands still until advanced.
 *
 * @example
 * ```ts
 * const clock = createManualClock();
 * const emulator = await startAwsEmulator({ clock });
 * clock.advance(61 * 60_000); // page tokens have expired
 * ```
 */
export function createManualClock(startMs = MANUAL_CLOCK_START): ManualClock {
  let current = startMs;
  return {
    now: () => current,
    advance(ms: number) {
      if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`cannot advance the clock by ${ms} ms`);
      current += ms;
    },
    set(ms: number) {
      if (!Number.isFinite(ms) || ms < current) throw new RangeError(`cannot set the clock back to ${ms}`);
      current = ms;
    },
  };
}

/** The wall clock, for a bench that wants the emulator's rate buckets to refill in real time. */
export const systemClock: EmulatorClock = { now: () => Date.now() };
