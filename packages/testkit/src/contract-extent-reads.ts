import { createHash } from 'node:crypto';
import type {
  CallOptions,
  Change,
  ChangedExtent,
  ExtentReadSession,
  ReadRequest,
  ReadResult,
} from '@drkit/core';

/**
 * What the contract suite's driver of a list-then-read session saw: counts only, so a failure can say how far
 * the read got.
 *
 * @internal exported for the suite's own tests.
 */
export interface ExtentReadStats {
  /** Extents listed, of each kind. */
  dataExtents: number;
  zeroExtents: number;
  /** `read()` calls issued. */
  reads: number;
  /** Bytes the reads answered. */
  bytesRead: number;
  /** Most reads issued and not yet settled at one time. */
  peakInFlight: number;
  /**
   * Reader calls (a `read`, the listing's next page) started after the caller's signal aborted that still
   * succeeded: a reader that honours its signal has none.
   */
  succeededAfterAbort: number;
}

/** What {@link readExtentsInOrder} needs: the reader's declarations and the chunk size of the read. */
export interface ExtentReadsDriverOptions {
  readonly capacityBytes: number;
  /** The reader's `blockSize`: every listed extent starts on it. */
  readonly blockSize: number;
  /** Where data extents are cut into reads (the lineage's chunk size), a multiple of `blockSize`. */
  readonly chunkSize: number;
  /** The reader's `maxConcurrentReads`: the driver keeps exactly that many reads in flight when it can. */
  readonly maxConcurrentReads: number;
  /** Passed to `extents()` and every `read()`; the driver never checks it itself, so a reader must. */
  readonly signal?: AbortSignal;
  /** The deadline of each `read()`, in milliseconds from its start. */
  readonly readDeadlineMs?: number;
  /** Filled in as the read goes. */
  readonly stats?: ExtentReadStats;
}

/** A fresh, all-zero {@link ExtentReadStats}. @internal */
export function emptyExtentReadStats(): ExtentReadStats {
  return { dataExtents: 0, zeroExtents: 0, reads: 0, bytesRead: 0, peakInFlight: 0, succeededAfterAbort: 0 };
}

/**
 * How many zero extents may wait behind the reads in flight before the driver stops listing ahead: small objects,
 * and enough that the first reads of a listing are issued together even after a run of zero extents.
 */
const QUEUED_ZERO_EXTENTS = 1024;

/**
 * Reads a list-then-read session the way the engine does, independently of the engine's code, and yields its
 * change set in order of offset: lists the extents (checking each with an {@link ExtentListChecker}), cuts every
 * `data` extent at chunk boundaries, issues the pieces' reads in order of offset with `maxConcurrentReads` of
 * them in flight (the first ones issued together, so that many really are in flight at once) and checks each
 * answer: exactly the asked length, and its `sha256` checksum when the reader gives one. Stopping early (a
 * failure, a `break`) aborts the reads still in flight and waits for them to settle.
 *
 * @throws an `Error` naming the offending extent or read; the reader's own errors as they are.
 * @internal exported for the suite's own tests.
 */
export async function* readExtentsInOrder(
  session: ExtentReadSession,
  options: ExtentReadsDriverOptions,
): AsyncGenerator<Change> {
  const stats = options.stats ?? emptyExtentReadStats();
  const concurrency = options.maxConcurrentReads;
  const stop = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
  const callerAborted = () => options.signal?.aborted === true;
  const checker = new ExtentListChecker(options.capacityBytes, options.blockSize);
  type Item =
    | { readonly kind: 'zero'; readonly change: Change }
    | { readonly kind: 'read'; readonly request: ReadRequest; answer?: Promise<Change> };
  const queue: Item[] = [];
  const settling = new Set<Promise<unknown>>();
  let queuedReads = 0;
  let inFlight = 0;
  let cutting: { extent: ChangedExtent; offset: number } | undefined;
  let listed = false;
  const listing = session.extents({ signal })[Symbol.asyncIterator]();

  const issue = (item: Item & { kind: 'read' }) => {
    const { request } = item;
    const lateCall = callerAborted();
    const callOptions: CallOptions = {
      signal,
      ...(options.readDeadlineMs === undefined ? {} : { deadline: Date.now() + options.readDeadlineMs }),
    };
    let started: Promise<ReadResult>;
    try {
      started = Promise.resolve(session.read(request, callOptions));
    } catch (error) {
      started = Promise.reject(error);
    }
    stats.reads++;
    inFlight++;
    stats.peakInFlight = Math.max(stats.peakInFlight, inFlight);
    const answer = started
      .finally(() => {
        inFlight--;
      })
      .then((result) => {
        if (lateCall) stats.succeededAfterAbort++;
        const change = checkReadResult(result, request);
        stats.bytesRead += request.length;
        return change;
      });
    // Awaited in order below; one left behind by an earlier failure must not become an unhandled rejection.
    answer.catch(() => undefined);
    settling.add(answer);
    void answer.then(
      () => settling.delete(answer),
      () => settling.delete(answer),
    );
    item.answer = answer;
  };

  try {
    for (;;) {
      // List ahead until `concurrency` reads are queued (or the listing ends), then issue them all at once.
      while (queuedReads < concurrency && queue.length < concurrency + QUEUED_ZERO_EXTENTS) {
        if (cutting) {
          const { extent } = cutting;
          const end = extent.offset + extent.length;
          const pieceEnd = Math.min(
            end,
            (Math.floor(cutting.offset / options.chunkSize) + 1) * options.chunkSize,
          );
          queue.push({
            kind: 'read',
            request: {
              offset: cutting.offset,
              length: pieceEnd - cutting.offset,
              ...(extent.token === undefined ? {} : { token: extent.token }),
            },
          });
          queuedReads++;
          cutting = pieceEnd < end ? { extent, offset: pieceEnd } : undefined;
          continue;
        }
        if (listed) break;
        const lateCall = callerAborted();
        const next = await listing.next();
        if (next.done) {
          listed = true;
          break;
        }
        if (lateCall) stats.succeededAfterAbort++;
        const extent = next.value;
        checker.accept(extent);
        if (extent.kind === 'zero') {
          stats.zeroExtents++;
          queue.push({
            kind: 'zero',
            change: { kind: 'zero', offset: extent.offset, length: extent.length },
          });
        } else {
          stats.dataExtents++;
          cutting = { extent, offset: extent.offset };
        }
      }
      for (const item of queue) if (item.kind === 'read' && !item.answer) issue(item);
      const head = queue.shift();
      if (!head) break;
      if (head.kind === 'zero') {
        yield head.change;
      } else {
        queuedReads--;
        yield await head.answer!;
      }
    }
  } finally {
    stop.abort(new Error('the contract suite stopped reading'));
    await Promise.allSettled([...settling]);
    if (!listed) await listing.return?.();
  }
}

/**
 * Checks one answer of `read()`: an object with `data`, exactly the requested length, and a `sha256` checksum
 * that matches when one is given. Throws an `Error` naming the read.
 *
 * @internal exported for the suite's own tests.
 */
export function checkReadResult(result: ReadResult, request: ReadRequest): Change {
  const where = `read({ offset: ${request.offset}, length: ${request.length} })`;
  const data: unknown = (result as Partial<ReadResult> | undefined)?.data;
  if (!(data instanceof Uint8Array)) {
    throw new Error(`${where} resolved without a Uint8Array \`data\`: read() resolves with { data }`);
  }
  if (data.byteLength !== request.length) {
    throw new Error(
      `${where} answered ${data.byteLength} bytes, asked ${request.length}: a read answers exactly the ` +
        'requested length (the engine fails the task, it never pads or cuts)',
    );
  }
  const { checksum } = result;
  if (checksum !== undefined) {
    if (checksum.algorithm !== 'sha256') {
      throw new Error(
        `${where} gave a checksum of algorithm ${String(checksum.algorithm)}: the engine verifies only sha256 and fails the task on another`,
      );
    }
    const actual = createHash('sha256').update(data).digest('base64');
    if (actual !== checksum.base64) {
      throw new Error(
        `${where} answered bytes whose SHA-256 is ${actual}, but its checksum says ${checksum.base64}`,
      );
    }
  }
  return { kind: 'data', offset: request.offset, data };
}

/**
 * Checks a listing as it streams: every extent of a known kind, well formed, sorted, disjoint, inside the
 * capacity, aligned to the reader's block size (its end too, unless it ends at the capacity), and a `token`, when
 * given, a string. Throws an `Error` naming the offending extent.
 *
 * @internal exported for the suite's own tests.
 */
export class ExtentListChecker {
  readonly #capacity: number;
  readonly #blockSize: number;
  #index = 0;
  #end = 0;

  constructor(capacityBytes: number, blockSize: number) {
    this.#capacity = capacityBytes;
    this.#blockSize = blockSize;
  }

  accept(extent: ChangedExtent): void {
    const index = this.#index++;
    const { offset, length } = extent;
    const where = `listed extent #${index} (${describeExtent(extent)})`;
    if (extent.kind !== 'data' && extent.kind !== 'zero') throw new Error(`${where}: unknown kind`);
    if (!Number.isSafeInteger(offset) || offset < 0) throw new Error(`${where}: malformed offset`);
    if (!Number.isSafeInteger(length) || length <= 0) throw new Error(`${where}: length must be positive`);
    if (offset < this.#end) {
      throw new Error(
        `${where}: starts before the end of the previous extent (${this.#end}): unsorted or overlapping`,
      );
    }
    const end = offset + length;
    if (end > this.#capacity)
      throw new Error(`${where}: ends at ${end}, past the capacity ${this.#capacity}`);
    if (offset % this.#blockSize !== 0 || (end % this.#blockSize !== 0 && end !== this.#capacity)) {
      throw new Error(
        `${where}: not aligned to the reader's block size ${this.#blockSize} (an extent starts on a block and ` +
          'ends on one, or at the capacity)',
      );
    }
    if (extent.token !== undefined && typeof extent.token !== 'string') {
      throw new Error(`${where}: its token is not a string`);
    }
    this.#end = end;
  }
}

function describeExtent(extent: ChangedExtent): string {
  if (extent.kind === 'data' || extent.kind === 'zero') {
    return `${extent.kind} at ${extent.offset}, ${extent.length} bytes`;
  }
  return JSON.stringify(extent);
}
