import type { DiskTaskCounters, DiskTaskProgress, DiskTaskState } from '../spec/v2/index.js';

type MutableCounters = { -readonly [K in keyof DiskTaskCounters]: DiskTaskCounters[K] };

/** Counts bytes of one disk task and reports progress at most every `intervalMs`. */
export class ProgressTracker {
  readonly counters: MutableCounters = {
    bytesRead: 0,
    bytesWritten: 0,
    bytesSkippedUnchanged: 0,
    bytesDeduplicated: 0,
    bytesZero: 0,
    bytesDone: 0,
  };
  state: DiskTaskState = 'waiting';
  totalBytes = 0;
  private startedAt = 0;
  private lastReport = 0;

  constructor(
    private readonly ids: { taskId: string; hostId: string; diskId: string },
    private readonly onProgress: ((progress: DiskTaskProgress) => void) | undefined,
    private readonly intervalMs = 250,
  ) {}

  /** Moves to a new state and reports at once. */
  setState(state: DiskTaskState): void {
    this.state = state;
    if (state === 'reading' && this.startedAt === 0) this.startedAt = performance.now();
    this.report(true);
  }

  /** Reports if the interval has passed (or `force`). */
  report(force = false): void {
    if (!this.onProgress) return;
    const now = performance.now();
    if (!force && now - this.lastReport < this.intervalMs) return;
    this.lastReport = now;
    this.onProgress(this.snapshot(now));
  }

  /** The current progress as a plain object. */
  snapshot(now = performance.now()): DiskTaskProgress {
    const seconds = this.startedAt === 0 ? 0 : (now - this.startedAt) / 1000;
    const throughput = seconds > 0 ? this.counters.bytesDone / seconds : 0;
    const remaining = Math.max(0, this.totalBytes - this.counters.bytesDone);
    return {
      ...this.ids,
      ...this.counters,
      state: this.state,
      totalBytes: this.totalBytes,
      throughputBytesPerSecond: throughput,
      etaSeconds: throughput > 0 ? remaining / throughput : undefined,
    };
  }
}
