/**
 * Runs at most `limit` tasks at once. `add` waits for a free slot; the first failure is kept and thrown by the
 * next `add` or by `drain`, and no rejection is ever left unhandled.
 *
 * @internal
 */
export class TaskWindow {
  private readonly running = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;

  constructor(private readonly limit: number) {}

  private rethrow(): void {
    if (this.failure !== undefined) throw this.failure.error;
  }

  /** Starts `task` once fewer than `limit` tasks run. */
  async add(task: () => Promise<void>): Promise<void> {
    this.rethrow();
    while (this.running.size >= this.limit) {
      await Promise.race(this.running);
      this.rethrow();
    }
    const promise: Promise<void> = task()
      .catch((error: unknown) => {
        this.failure ??= { error };
      })
      .finally(() => this.running.delete(promise));
    this.running.add(promise);
  }

  /** Waits for every task; throws the first failure. */
  async drain(): Promise<void> {
    while (this.running.size > 0) await Promise.race(this.running);
    this.rethrow();
  }
}
