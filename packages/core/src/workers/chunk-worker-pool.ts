import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/** Codec byte of a stored chunk: 0 = raw, 1 = zstd. */
export type ChunkCodec = 0 | 1;

/** What {@link ChunkWorkerPool.encode} returns for one chunk. */
export type EncodedChunk =
  | { readonly kind: 'zero' }
  | { readonly kind: 'unchanged'; readonly hash: Uint8Array }
  | {
      readonly kind: 'data';
      readonly hash: Uint8Array;
      readonly codec: ChunkCodec;
      readonly payload: Uint8Array;
    };

interface Pending {
  resolve(value: Record<string, unknown>): void;
  reject(error: Error): void;
}

interface PoolWorker {
  worker: Worker;
  inFlight: number;
}

const workerPath = createRequire(import.meta.url).resolve('@drkit/core/chunk-worker');

/**
 * A small pool of worker threads that hash (SHA-256), compress (zstd level 1) and decompress chunks, so the main
 * thread only moves bytes. Buffers are transferred, not copied: a buffer passed to `encode` is unusable after.
 */
export class ChunkWorkerPool {
  private readonly workers: PoolWorker[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;

  /** Starts `size` workers (default: one per available core, at most 8). */
  constructor(size = Math.min(8, Math.max(1, availableParallelism()))) {
    for (let i = 0; i < size; i++) this.workers.push(this.spawn());
  }

  /** Number of worker threads. */
  get size(): number {
    return this.workers.length;
  }

  private spawn(): PoolWorker {
    const worker = new Worker(workerPath);
    const entry: PoolWorker = { worker, inFlight: 0 };
    worker.on('message', (message: Record<string, unknown> & { id: number; error?: string }) => {
      const pending = this.pending.get(message.id);
      if (!pending) return;
      this.pending.delete(message.id);
      // An idle worker must not keep the process alive; a busy one must (its answer is awaited).
      if (--entry.inFlight === 0) worker.unref();
      if (message.error !== undefined) pending.reject(new Error(message.error));
      else pending.resolve(message);
    });
    worker.on('error', (error) => this.failAll(error));
    worker.unref();
    return entry;
  }

  private failAll(error: Error): void {
    for (const pending of this.pending.values()) pending.reject(error);
    this.pending.clear();
  }

  private call(message: Record<string, unknown>, transfer: ArrayBuffer[]): Promise<Record<string, unknown>> {
    if (this.closed) return Promise.reject(new Error('chunk worker pool is closed'));
    let target = this.workers[0]!;
    for (const w of this.workers) if (w.inFlight < target.inFlight) target = w;
    const id = this.nextId++;
    if (target.inFlight++ === 0) target.worker.ref();
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      target.worker.postMessage({ ...message, id }, transfer);
    });
  }

  /**
   * Hashes a chunk and, unless it is all zeros or equal to `parentHash`, compresses it (keeping it raw when
   * compression does not shrink it). `data` is transferred to the worker.
   */
  async encode(data: Uint8Array, parentHash?: Uint8Array): Promise<EncodedChunk> {
    const transfer =
      data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? [data.buffer as ArrayBuffer] : [];
    const reply = await this.call({ op: 'encode', data, parentId: parentHash }, transfer);
    if (reply.zero) return { kind: 'zero' };
    const hash = reply.hash as Uint8Array;
    if (reply.unchanged) return { kind: 'unchanged', hash };
    return { kind: 'data', hash, codec: reply.codec as ChunkCodec, payload: reply.payload as Uint8Array };
  }

  /**
   * Decompresses a stored payload and returns the plain bytes with their SHA-256. With `transfer`, the payload's
   * whole underlying buffer moves to the worker (no copy) and is unusable after the call.
   */
  async decode(
    payload: Uint8Array,
    codec: ChunkCodec,
    plainLength: number,
    transfer = false,
  ): Promise<{ plain: Uint8Array; hash: Uint8Array }> {
    const reply = await this.call(
      { op: 'decode', payload, codec, plainLength },
      transfer ? [payload.buffer as ArrayBuffer] : [],
    );
    return { plain: reply.plain as Uint8Array, hash: reply.hash as Uint8Array };
  }

  /** SHA-256 of `data` (copied to the worker; `data` stays usable). */
  async hash(data: Uint8Array): Promise<Uint8Array> {
    const reply = await this.call({ op: 'hash', data }, []);
    return reply.hash as Uint8Array;
  }

  /** Stops the workers; calls still pending reject. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.failAll(new Error('chunk worker pool closed'));
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
  }
}
