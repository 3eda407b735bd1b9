/**
 * A free list of equal-sized buffers, each owning its whole ArrayBuffer (so it can be transferred to a worker
 * thread). Reusing them keeps a backup's memory flat: per-chunk buffers that became garbage would pile up until
 * V8 collects them, tens of MiB per isolate.
 */
export class BufferPool {
  private readonly free: Uint8Array[] = [];

  /**
   * @param size - Byte length of every buffer.
   * @param capacity - How many idle buffers to keep at most; more are left to the garbage collector.
   */
  constructor(
    readonly size: number,
    private readonly capacity: number,
  ) {}

  /** A buffer of `size` bytes, with undefined content (not zeroed). */
  take(): Uint8Array {
    return this.free.pop() ?? new Uint8Array(this.size);
  }

  /** Returns a buffer for reuse; buffers of another size, views and detached buffers are ignored. */
  give(buffer: Uint8Array | undefined): void {
    if (!buffer || buffer.byteLength !== this.size || buffer.byteOffset !== 0) return;
    if (buffer.buffer.byteLength !== this.size || this.free.length >= this.capacity) return;
    this.free.push(buffer);
  }
}
