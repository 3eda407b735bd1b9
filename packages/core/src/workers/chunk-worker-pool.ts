import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/** Codec byte of a stored chunk: 0 = raw, 1 = zstd. */
export type ChunkCodec = 0 | 1;

/** Buffers an encode hands back for reuse: the input, and the output buffer. */
export interface ReturnedBuffers {
  /** The input chunk, usable again (undefined if it could not be transferred back). */
  readonly input: Uint8Array | undefined;
  /** The output buffer; for a `data` result it holds the payload until the caller is done with it. */
  readonly output: Uint8Array | undefined;
}

/** What {@link ChunkWorkerPool.encode} returns for one chunk. */
export type EncodedChunk = (
  | { readonly kind: 'zero' }
  | { readonly kind: 'unchanged'; readonly hash: Uint8Array }
  | {
      readonly kind: 'data';
      readonly hash: Uint8Array;
      readonly codec: ChunkCodec;
      /** The stored bytes: a view into `returned.output`, with `headroom` free bytes before it. */
      readonly payload: Uint8Array;
    }
) & { readonly returned: ReturnedBuffers };

/** Options of {@link ChunkWorkerPool.encode}. */
export interface EncodeOptions {
  /** The parent point's id at the same position: an equal hash means `unchanged`, nothing compressed. */
  readonly parentHash?: Uint8Array;
  /** A buffer to compress into (transferred), at least `headroom + zstdCompressBound(length)` bytes. */
  readonly output?: Uint8Array;
  /** Bytes to leave free before the payload in the output buffer (room for a blob header). */
  readonly headroom?: number;
}

/**
 * zstd's worst-case compressed size of `size` bytes (`ZSTD_COMPRESSBOUND`, what the workers' codec, addon or
 * built-in, needs as output room for one chunk).
 */
export function zstdCompressBound(size: number): number {
  const small = 128 * 1024;
  return size + (size >>> 8) + (size < small ? (small - size) >>> 11 : 0);
}

function owns(view: Uint8Array): boolean {
  return view.byteOffset === 0 && view.byteLength === view.buffer.byteLength;
}

interface Pending {
  resolve(value: Record<string, unknown>): void;
  reject(error: Error): void;
}

interface PoolWorker {
  worker: Worker;
  inFlight: number;
}

const defaultWorkerPath = createRequire(import.meta.url).resolve('@drkit/core/chunk-worker');

/** Options of {@link ChunkWorkerPool}. */
export interface ChunkWorkerPoolOptions {
  /** Worker threads. Default: one per available core, at most 8. */
  readonly size?: number;
  /**
   * The worker's entry module. Default: the package's own (`@drkit/core/chunk-worker`). Another module must speak
   * the same messages; the package's tests use one that fails on purpose.
   */
  readonly workerPath?: string | URL;
  /** Given to every worker as its `workerData` (for a custom {@link ChunkWorkerPoolOptions.workerPath}). */
  readonly workerData?: unknown;
}

/** A process warning a worker asks the pool to emit (the `DRKIT_ZSTD_ADDON_UNAVAILABLE` one of its codec). */
interface WorkerWarning {
  readonly message: string;
  readonly code: string;
}

/** Codes of the worker warnings this process has emitted: each once, however many workers send it. */
const emittedWarnings = new Set<string>();

function emitWorkerWarning(warning: WorkerWarning): void {
  if (emittedWarnings.has(warning.code)) return;
  emittedWarnings.add(warning.code);
  process.emitWarning(warning.message, { type: 'DrkitWarning', code: warning.code });
}

/**
 * A small pool of worker threads that hash (SHA-256), compress (zstd level 1) and decompress chunks, so the main
 * thread only moves bytes. Buffers are transferred, not copied: a buffer passed to `encode` is unusable after.
 *
 * The workers' zstd is the package's prebuilt addon, or Node's built-in zstd where the addon does not load (the
 * same frames, more memory); then the pool emits, once per process, a `DrkitWarning` with code
 * `DRKIT_ZSTD_ADDON_UNAVAILABLE` that says why. `DRKIT_ZSTD_CODEC=zlib` in the environment forces the built-in one.
 */
export class ChunkWorkerPool {
  private readonly workers: PoolWorker[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;

  private readonly workerPath: string | URL;
  private readonly workerData: unknown;

  /** Starts the workers: `options.size` of them, or `options` itself when it is a number. */
  constructor(options: number | ChunkWorkerPoolOptions = {}) {
    const o = typeof options === 'number' ? { size: options } : options;
    const size = o.size ?? Math.min(8, Math.max(1, availableParallelism()));
    this.workerPath = o.workerPath ?? defaultWorkerPath;
    this.workerData = o.workerData;
    for (let i = 0; i < size; i++) this.workers.push(this.spawn());
  }

  /** Number of worker threads. */
  get size(): number {
    return this.workers.length;
  }

  private spawn(): PoolWorker {
    const worker = new Worker(this.workerPath, { workerData: this.workerData });
    const entry: PoolWorker = { worker, inFlight: 0 };
    worker.on(
      'message',
      (message: Record<string, unknown> & { id: number; error?: string; warning?: WorkerWarning }) => {
        if (message.warning !== undefined) {
          emitWorkerWarning(message.warning);
          return;
        }
        const pending = this.pending.get(message.id);
        if (!pending) return;
        this.pending.delete(message.id);
        // An idle worker must not keep the process alive; a busy one must (its answer is awaited).
        if (--entry.inFlight === 0) worker.unref();
        if (message.error !== undefined) pending.reject(new Error(message.error));
        else pending.resolve(message);
      },
    );
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
   * compression does not shrink it) into the output buffer (or one the worker allocates). `data` and `output` are
   * transferred to the worker and come back in `returned`, so a caller can reuse them rather than allocate (and
   * leave to the garbage collector) buffers for every chunk.
   */
  async encode(data: Uint8Array, options: EncodeOptions = {}): Promise<EncodedChunk> {
    const transfer: ArrayBuffer[] = [];
    if (owns(data)) transfer.push(data.buffer as ArrayBuffer);
    if (options.output && owns(options.output)) transfer.push(options.output.buffer as ArrayBuffer);
    const reply = await this.call(
      {
        op: 'encode',
        data,
        parentId: options.parentHash,
        out: options.output,
        headroom: options.headroom ?? 0,
      },
      transfer,
    );
    const returned = {
      input: reply.returned as Uint8Array | undefined,
      output: reply.out as Uint8Array | undefined,
    };
    if (reply.zero) return { kind: 'zero', returned };
    const hash = reply.hash as Uint8Array;
    if (reply.unchanged) return { kind: 'unchanged', hash, returned };
    const out = reply.out as Uint8Array;
    const start = reply.payloadOffset as number;
    const payload = out.subarray(start, start + (reply.payloadLength as number));
    return { kind: 'data', hash, codec: reply.codec as ChunkCodec, payload, returned };
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
