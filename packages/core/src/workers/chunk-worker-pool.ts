import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { InvalidArgumentError, TimeoutError, WorkerCrashedError } from '../errors/drkit-error.js';

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
  /** With `probe`: hashed, neither zero nor unchanged, not compressed (the input is handed back). */
  | { readonly kind: 'probed'; readonly hash: Uint8Array }
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
  /** The id key of an encrypted repository: the hash is then HMAC-SHA-256 under it, not SHA-256. */
  readonly idKey?: Uint8Array;
  /**
   * Stop after the hash: a chunk that is neither zero nor unchanged comes back `probed`, uncompressed, so the
   * caller can ask its store whether the chunk is stored already before paying for compression.
   */
  readonly probe?: boolean;
  /**
   * The id of these bytes, from a `probe` of the same buffer: the worker then only compresses (no zero check, no
   * hash, no parent comparison) and answers `data` with this id. The caller vouches for it.
   */
  readonly knownHash?: Uint8Array;
}

/**
 * zstd's worst-case compressed size of `size` bytes (`ZSTD_COMPRESSBOUND`, what the workers' codec, addon or
 * built-in, needs as output room for one chunk).
 */
export function zstdCompressBound(size: number): number {
  const small = 128 * 1024;
  return size + (size >>> 8) + (size < small ? (small - size) >>> 11 : 0);
}

function positive(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new InvalidArgumentError(`ChunkWorkerPool ${name} must be a positive whole number, got ${value}`);
  }
  return value;
}

function describeError(error: Error): string {
  const code = (error as { code?: unknown }).code;
  return `${error.name}${typeof code === 'string' ? ` ${code}` : ''}: ${error.message}`;
}

function owns(view: Uint8Array): boolean {
  return view.byteOffset === 0 && view.byteLength === view.buffer.byteLength;
}

interface Pending {
  /** The worker operation, for messages. */
  readonly op: string;
  resolve(value: Record<string, unknown>): void;
  reject(error: Error): void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

interface PoolWorker {
  /** Its place in the pool (a replacement takes the place of the worker it replaces). */
  readonly slot: number;
  readonly worker: Worker;
  /** The calls it holds, by id. */
  readonly pending: Map<number, Pending>;
  dead: boolean;
}

/** How a worker was lost. */
interface Loss {
  /** What happened, for messages: `exited with code 3`, `threw Error: ...`. */
  readonly what: string;
  readonly exitCode?: number;
  readonly cause?: unknown;
}

/** Default time limit of one call: 120 s, far more than any chunk operation needs. */
export const DEFAULT_CHUNK_CALL_TIMEOUT_MS = 120_000;

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
  /**
   * Time limit of one call (hash, encode or decode of one chunk), in milliseconds. A call that takes longer
   * rejects with {@link TimeoutError}; its worker is stopped and replaced. Default 120 000 (120 s).
   */
  readonly callTimeoutMs?: number;
  /**
   * Worker deaths in a row, with no call answered in between, after which the pool stops replacing them (a
   * worker that dies at startup would otherwise be restarted in a loop); calls then reject with a
   * {@link WorkerCrashedError} that is not retryable. Default: the pool's size plus 2.
   */
  readonly maxConsecutiveCrashes?: number;
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
 *
 * A worker that dies (exits, throws an uncaught exception, runs out of memory under its resource limits, is
 * terminated) fails the calls it held, and only those, with a {@link WorkerCrashedError}, and is replaced at
 * once. A call that gets no answer within `callTimeoutMs` rejects with a {@link TimeoutError}; its worker is
 * stopped and replaced (the other calls it held fail as crashed). After `maxConsecutiveCrashes` deaths without an
 * answer in between, the pool stops replacing workers and refuses calls.
 *
 * @example
 * ```ts
 * const pool = new ChunkWorkerPool({ size: 2, callTimeoutMs: 60_000 });
 * const hash = await pool.hash(new TextEncoder().encode('hello'));
 * await pool.close();
 * ```
 */
export class ChunkWorkerPool {
  private readonly workers: PoolWorker[] = [];
  private nextId = 1;
  private closed = false;
  private readonly workerPath: string | URL;
  private readonly workerData: unknown;
  private readonly callTimeoutMs: number;
  private readonly maxConsecutiveCrashes: number;
  /** Workers lost since a call was last answered. */
  private consecutiveCrashes = 0;
  /** Set once the pool stopped replacing workers: why. */
  private broken: (Loss & { readonly message: string }) | undefined;

  /**
   * Starts the workers: `options.size` of them, or `options` itself when it is a number.
   *
   * @throws {@link InvalidArgumentError} for a size, timeout or crash limit that is not a positive whole number.
   */
  constructor(options: number | ChunkWorkerPoolOptions = {}) {
    const o = typeof options === 'number' ? { size: options } : options;
    const size = positive('size', o.size ?? Math.min(8, Math.max(1, availableParallelism())));
    this.workerPath = o.workerPath ?? defaultWorkerPath;
    this.workerData = o.workerData;
    this.callTimeoutMs = positive('callTimeoutMs', o.callTimeoutMs ?? DEFAULT_CHUNK_CALL_TIMEOUT_MS);
    this.maxConsecutiveCrashes = positive('maxConsecutiveCrashes', o.maxConsecutiveCrashes ?? size + 2);
    for (let slot = 0; slot < size; slot++) this.workers.push(this.spawn(slot));
  }

  /** Number of worker threads. */
  get size(): number {
    return this.workers.length;
  }

  private spawn(slot: number): PoolWorker {
    const worker = new Worker(this.workerPath, { workerData: this.workerData });
    const entry: PoolWorker = { slot, worker, pending: new Map(), dead: false };
    worker.on(
      'message',
      (message: Record<string, unknown> & { id: number; error?: string; warning?: WorkerWarning }) => {
        if (message.warning !== undefined) {
          emitWorkerWarning(message.warning);
          return;
        }
        const pending = entry.pending.get(message.id);
        if (!pending) return;
        entry.pending.delete(message.id);
        clearTimeout(pending.timer);
        this.consecutiveCrashes = 0; // an answer, even an error, shows workers can work
        // An idle worker must not keep the process alive; a busy one must (its answer is awaited).
        if (entry.pending.size === 0) worker.unref();
        if (message.error !== undefined) pending.reject(new Error(message.error));
        else pending.resolve(message);
      },
    );
    worker.on('error', (error) => this.lose(entry, { what: `threw ${describeError(error)}`, cause: error }));
    worker.on('exit', (exitCode) => this.lose(entry, { what: `exited with code ${exitCode}`, exitCode }));
    worker.unref();
    return entry;
  }

  /** A worker died or was stopped: fail its calls, replace it (or give up). */
  private lose(entry: PoolWorker, loss: Loss): void {
    if (entry.dead) return; // 'exit' follows 'error'; a stopped worker exits too
    entry.dead = true;
    if (this.closed) return;
    this.consecutiveCrashes++;
    const replace = this.broken === undefined && this.consecutiveCrashes < this.maxConsecutiveCrashes;
    if (replace) this.workers[entry.slot] = this.spawn(entry.slot);
    const failed = [...entry.pending.values()];
    entry.pending.clear();
    for (const pending of failed) {
      clearTimeout(pending.timer);
      pending.reject(
        new WorkerCrashedError(
          `chunk worker ${entry.slot} ${loss.what} during a ${pending.op} call; it was replaced, the call can be tried again`,
          { operation: pending.op, exitCode: loss.exitCode, cause: loss.cause },
        ),
      );
    }
    if (!replace && this.broken === undefined) this.giveUp(entry, loss);
  }

  /** Too many deaths in a row: stop every worker and refuse calls from now on. */
  private giveUp(entry: PoolWorker, loss: Loss): void {
    this.broken = {
      ...loss,
      message:
        `the chunk workers died ${this.consecutiveCrashes} times in a row without answering a call ` +
        `(last: worker ${entry.slot} ${loss.what}); the pool stopped replacing them: check the workers' memory ` +
        'limits and the zstd codec, then open a new pool',
    };
    for (const other of this.workers) {
      if (other.dead) continue;
      other.dead = true;
      for (const pending of other.pending.values()) {
        clearTimeout(pending.timer);
        pending.reject(this.brokenError(pending.op));
      }
      other.pending.clear();
      void other.worker.terminate().catch(() => undefined);
    }
  }

  private brokenError(op: string): WorkerCrashedError {
    const broken = this.broken!;
    return new WorkerCrashedError(`${op} call refused: ${broken.message}`, {
      operation: op,
      exitCode: broken.exitCode,
      cause: broken.cause,
      retryable: false,
    });
  }

  /** A call got no answer in time: reject it, then stop and replace its worker. */
  private timeOut(entry: PoolWorker, id: number): void {
    const pending = entry.pending.get(id);
    if (!pending) return;
    entry.pending.delete(id);
    const seconds = this.callTimeoutMs / 1000;
    pending.reject(
      new TimeoutError(
        `chunk worker ${entry.slot} did not answer a ${pending.op} call within ${seconds} s; it was stopped and replaced`,
      ),
    );
    this.lose(entry, { what: `was stopped after a ${pending.op} call timed out (${seconds} s)` });
    void entry.worker.terminate().catch(() => undefined);
  }

  private call(message: Record<string, unknown>, transfer: ArrayBuffer[]): Promise<Record<string, unknown>> {
    const op = String(message.op);
    if (this.closed) return Promise.reject(new Error('chunk worker pool is closed'));
    if (this.broken) return Promise.reject(this.brokenError(op));
    let target = this.workers[0]!;
    for (const w of this.workers) if (w.pending.size < target.pending.size) target = w;
    const entry = target;
    const id = this.nextId++;
    if (entry.pending.size === 0) entry.worker.ref();
    return new Promise((resolve, reject) => {
      const pending: Pending = { op, resolve, reject, timer: undefined };
      entry.pending.set(id, pending);
      pending.timer = setTimeout(() => this.timeOut(entry, id), this.callTimeoutMs);
      pending.timer.unref?.();
      entry.worker.postMessage({ ...message, id }, transfer);
    });
  }

  /**
   * Hashes a chunk (SHA-256, or HMAC-SHA-256 under `options.idKey`) and, unless it is all zeros or equal to `parentHash`, compresses it (keeping it raw when
   * compression does not shrink it) into the output buffer (or one the worker allocates). With `probe` it stops
   * after the hash (`probed`); a second call with `knownHash` then only compresses. `data` and `output` are
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
        idKey: options.idKey,
        probe: options.probe === true,
        knownId: options.knownHash,
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
    if (reply.probed) return { kind: 'probed', hash, returned };
    const out = reply.out as Uint8Array;
    const start = reply.payloadOffset as number;
    const payload = out.subarray(start, start + (reply.payloadLength as number));
    return { kind: 'data', hash, codec: reply.codec as ChunkCodec, payload, returned };
  }

  /**
   * Decompresses a stored payload and returns the plain bytes with their SHA-256 (HMAC-SHA-256 under `idKey`,
   * when given). With `transfer`, the payload's whole underlying buffer moves to the worker (no copy) and is
   * unusable after the call. With `output` (a buffer of its own, at least `plainLength` bytes, transferred too), a
   * zstd payload is decompressed into it, so a caller that reuses its buffers allocates none per chunk: `plain` is
   * then a view of it; a raw payload leaves it unused and it comes back as `spare`.
   *
   * @throws {@link InvalidArgumentError} when `output` is a view into a larger buffer or shares the payload's.
   */
  async decode(
    payload: Uint8Array,
    codec: ChunkCodec,
    plainLength: number,
    transfer = false,
    idKey?: Uint8Array,
    output?: Uint8Array,
  ): Promise<{ plain: Uint8Array; hash: Uint8Array; spare?: Uint8Array }> {
    const buffers: ArrayBuffer[] = transfer ? [payload.buffer as ArrayBuffer] : [];
    if (output !== undefined) {
      if (!owns(output) || output.buffer === payload.buffer) {
        throw new InvalidArgumentError('the output of decode must be a buffer of its own');
      }
      buffers.push(output.buffer as ArrayBuffer);
    }
    const reply = await this.call({ op: 'decode', payload, codec, plainLength, idKey, out: output }, buffers);
    return {
      plain: reply.plain as Uint8Array,
      hash: reply.hash as Uint8Array,
      ...(reply.spare === undefined ? {} : { spare: reply.spare as Uint8Array }),
    };
  }

  /** SHA-256 of `data` (HMAC-SHA-256 under `idKey`, when given; copied to the worker, `data` stays usable). */
  async hash(data: Uint8Array, idKey?: Uint8Array): Promise<Uint8Array> {
    const reply = await this.call({ op: 'hash', data, idKey }, []);
    return reply.hash as Uint8Array;
  }

  /** Stops the workers; calls still pending reject. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const entry of this.workers) {
      for (const pending of entry.pending.values()) {
        clearTimeout(pending.timer);
        pending.reject(new Error('chunk worker pool closed'));
      }
      entry.pending.clear();
    }
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
  }
}
