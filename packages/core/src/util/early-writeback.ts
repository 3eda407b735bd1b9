/**
 * Starts write-back of dirty pages while a writer is still producing them, so that the flush a commit (or the end
 * of a restore) must wait for finds little left to write: the disk works during the backup instead of after it.
 *
 * Each time `wrote` has counted `everyBytes` since the last flush, one flush starts in the background (never two
 * at once; bytes written meanwhile count towards the next). A flush's failure is kept: `settle` (and every later
 * `settle`) rethrows it. Sticky on purpose: a write-back error is reported once by the kernel (errseq), so a later
 * flush that succeeds does not mean that the bytes of the failed one reached the disk.
 *
 * @internal
 */
export class EarlyWriteback {
  #unflushed = 0;
  #running: Promise<void> | undefined;
  #failure: { readonly error: unknown } | undefined;
  /** Flushes started in the background. */
  started = 0;

  constructor(
    private readonly flush: () => Promise<void>,
    private readonly everyBytes: number,
  ) {
    if (!Number.isSafeInteger(everyBytes) || everyBytes < 0) {
      throw new RangeError(`everyBytes must be a non-negative safe integer, got ${everyBytes}`);
    }
  }

  /** Counts `bytes` written and not flushed; starts a background flush when enough are (never with 0). */
  wrote(bytes: number): void {
    if (this.everyBytes === 0 || this.#failure !== undefined) return;
    this.#unflushed += bytes;
    if (this.#unflushed < this.everyBytes || this.#running !== undefined) return;
    this.#unflushed = 0;
    this.started += 1;
    this.#running = this.flush().then(
      () => {
        this.#running = undefined;
      },
      (error: unknown) => {
        this.#failure ??= { error };
        this.#running = undefined;
      },
    );
  }

  /**
   * Waits for the background flush in progress, then rethrows the first failure any of them had. Call it before
   * the writer's own flush; `failed` records that flush's failure too, so that it stays sticky as well.
   */
  async settle(): Promise<void> {
    await this.#running;
    if (this.#failure !== undefined) throw this.#failure.error;
    this.#unflushed = 0;
  }

  /** Records the failure of the writer's own flush: every later `settle` rethrows the first one kept. */
  failed(error: unknown): void {
    this.#failure ??= { error };
  }
}
