import { createHash } from 'node:crypto';
import { ChecksumMismatchError, SourceProtocolError } from '../errors/drkit-error.js';
import type { Change, ChangedExtent, ExtentReadSession, Logger, ReadRequest } from '../spec/v2/index.js';
import { deadlineAfter } from '../util/call-deadline.js';
import { isRetryableError, retry } from '../util/retry.js';

/** What {@link orderedExtentReads} needs. */
export interface ExtentReadsOptions {
  readonly session: ExtentReadSession;
  readonly diskId: string;
  readonly chunkSize: number;
  readonly blockSize: number;
  /** Reads in flight at most (the reader's `maxConcurrentReads`, at least 1). */
  readonly concurrency: number;
  /**
   * Bytes the reads may hold at most: those of reads in flight plus those of reads answered but not yet taken by
   * the consumer (answered ahead of an earlier, slower read, or while the consumer is busy). Each listed extent
   * and each read counts at least {@link MIN_ENTRY_BYTES}, so the budget also bounds how far the listing runs
   * ahead. Default `concurrency × chunkSize` (no read waits for the budget before it waits for a place in
   * flight); at least one chunk.
   */
  readonly bufferBytes?: number;
  readonly signal: AbortSignal;
  /** Bounds each `read` call (`deadline`), the proxy's HTTP communication timeout. */
  readonly requestTimeoutSeconds?: number;
  readonly logger?: Logger;
  /** Waits between attempts of a throttled or failed read; a test passes one that does not wait. */
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Told the length of each answer as it arrives, before its turn comes (the stall watchdog counts it). */
  readonly onAnswer?: (bytes: number) => void;
  /** Filled in as the reads go: what they held at most. */
  readonly stats?: ExtentReadStats;
}

/** What {@link orderedExtentReads} held at most (for tests and benchmarks). */
export interface ExtentReadStats {
  /** Reads in flight at most. */
  maxInFlight: number;
  /** Bytes of answers held at most: in flight plus answered and not yet taken. */
  maxBufferedBytes: number;
  /** Answers that arrived while an earlier read was still in flight (completed out of order). */
  answeredOutOfOrder: number;
}

/** The least one listed extent or read counts against the budget: its bookkeeping, whatever its length. */
export const MIN_ENTRY_BYTES = 4096;

/** Attempts of one read that fails with a retryable error or returns bytes that do not match their checksum. */
const READ_ATTEMPTS = 4;

/**
 * A read worth another attempt: a drkit error that says it is retryable (throttled, timed out, unreachable for a
 * moment) or bytes that did not match their checksum (damaged on the way). A provider that retries on its own
 * should then give up with a non-retryable error, or attempts multiply.
 */
function isTransientReadError(error: unknown): boolean {
  return isRetryableError(error) || ChecksumMismatchError.isInstance(error);
}

/** One listed zero extent or one read, in order of offset, until the consumer takes it. */
interface Entry {
  /** What it counts against the budget. */
  readonly cost: number;
  /** Bytes of data it holds (0 for a zero extent). */
  readonly bytes: number;
  state: 'pending' | 'done' | 'failed';
  change?: Change;
  error?: unknown;
}

/**
 * Drives a list-then-read session as an ordered change stream: lists the extents, cuts each `data` extent at
 * chunk boundaries, issues the reads in order of offset with at most `concurrency` in flight, and yields their
 * answers in order of offset, so the chunk assembler sees what a stream source would give it. Reads complete in
 * any order: a read that is answered frees its place in flight at once, and its answer waits for its turn within
 * `bufferBytes`, so a slow read (or a busy consumer) does not stop the others. The listing and the reads go on
 * while the consumer works on earlier answers. The budget, not the disk, bounds the bytes held. Every answer's
 * length is checked and its source checksum verified. A failed read stops new reads; its error is thrown when
 * its turn comes (errors surface in order of offset, as the changes do). Stopping early (a failure, a break)
 * aborts the reads still in flight.
 *
 * @throws {@link SourceProtocolError} for an unsorted, unaligned or out-of-bounds listing, or a read answered with
 * the wrong length or an unknown checksum algorithm; {@link ChecksumMismatchError} when the bytes keep failing
 * their checksum; the source's errors.
 */
export async function* orderedExtentReads(
  capacityBytes: number,
  o: ExtentReadsOptions,
): AsyncGenerator<Change> {
  const stop = new AbortController();
  const signal = AbortSignal.any([o.signal, stop.signal]);
  const concurrency = Math.max(1, Math.floor(o.concurrency));
  const budget = Math.max(o.chunkSize, Math.floor(o.bufferBytes ?? concurrency * o.chunkSize));
  const stats = o.stats;
  const queue: Entry[] = [];
  let head = 0; // queue[head] is the next entry the consumer takes
  let inFlight = 0;
  let held = 0; // cost of the entries not yet taken
  let heldBytes = 0;
  /** No new reads: one failed, the listing ended or failed, or the consumer stopped. */
  let halted = false;
  let listed = false;
  let waiters: (() => void)[] = [];
  const changed = () => new Promise<void>((resolve) => waiters.push(resolve));
  const notify = () => {
    const woken = waiters;
    waiters = [];
    for (const wake of woken) wake();
  };
  const push = (entry: Entry) => {
    queue.push(entry);
    held += entry.cost;
    heldBytes += entry.bytes;
    if (stats && heldBytes > stats.maxBufferedBytes) stats.maxBufferedBytes = heldBytes;
    notify();
  };
  /** Waits until an entry of `cost` fits: a place in flight (for a read) and room in the budget. */
  const admit = async (cost: number, read: boolean) => {
    while (!halted && ((read && inFlight >= concurrency) || (queue.length > head && held + cost > budget))) {
      await changed();
    }
  };

  const producing = (async () => {
    let end = 0;
    try {
      for await (const extent of o.session.extents({ signal })) {
        if (halted) return;
        checkExtent(extent, end, capacityBytes, o);
        end = extent.offset + extent.length;
        if (extent.kind === 'zero') {
          await admit(MIN_ENTRY_BYTES, false);
          if (halted) return;
          push({
            cost: MIN_ENTRY_BYTES,
            bytes: 0,
            state: 'done',
            change: { kind: 'zero', offset: extent.offset, length: extent.length },
          });
          continue;
        }
        for (let offset = extent.offset; offset < end; ) {
          const pieceEnd = Math.min(end, (Math.floor(offset / o.chunkSize) + 1) * o.chunkSize);
          const length = pieceEnd - offset;
          const cost = Math.max(length, MIN_ENTRY_BYTES);
          await admit(cost, true);
          if (halted) return;
          const request: ReadRequest = {
            offset,
            length,
            ...(extent.token === undefined ? {} : { token: extent.token }),
          };
          const entry: Entry = { cost, bytes: length, state: 'pending' };
          inFlight += 1;
          if (stats && inFlight > stats.maxInFlight) stats.maxInFlight = inFlight;
          push(entry);
          readPiece(request, o, signal).then(
            (change) => {
              inFlight -= 1;
              entry.state = 'done';
              entry.change = change;
              const first = queue[head];
              if (stats && first !== entry && first?.state === 'pending') stats.answeredOutOfOrder += 1;
              o.onAnswer?.(length);
              notify();
            },
            (error: unknown) => {
              inFlight -= 1;
              entry.state = 'failed';
              entry.error = error;
              halted = true;
              notify();
            },
          );
          offset = pieceEnd;
        }
      }
    } catch (error) {
      // In its place in the order: the changes listed before it are still yielded first.
      halted = true;
      push({ cost: 0, bytes: 0, state: 'failed', error });
      return;
    } finally {
      listed = true;
      notify();
    }
  })();

  try {
    for (;;) {
      const entry = queue[head];
      if (entry === undefined) {
        if (listed) break;
        await changed();
        continue;
      }
      if (entry.state === 'pending') {
        await changed();
        continue;
      }
      queue[head] = undefined as unknown as Entry; // let the answer go once yielded
      head += 1;
      if (head > 1024 && head * 2 > queue.length) {
        queue.splice(0, head);
        head = 0;
      }
      held -= entry.cost;
      heldBytes -= entry.bytes;
      notify();
      if (entry.state === 'failed') throw entry.error;
      yield entry.change!;
    }
  } finally {
    halted = true;
    stop.abort(new Error('the extent reads were stopped'));
    notify();
    // The listing ends on its own (the signal is aborted; a hung one is the stall watchdog's): not waited for.
    void producing;
  }
}

function checkExtent(extent: ChangedExtent, end: number, capacity: number, o: ExtentReadsOptions): void {
  const { offset, length } = extent;
  const where = `the reader of disk ${o.diskId} listed an extent at offset ${offset} (length ${length})`;
  if (extent.kind !== 'data' && extent.kind !== 'zero') {
    throw new SourceProtocolError(`${where} of unknown kind ${String(extent.kind)}`);
  }
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || length <= 0 || offset < end) {
    throw new SourceProtocolError(`${where}: unsorted, overlapping or empty (previous end ${end})`);
  }
  if (offset + length > capacity) {
    throw new SourceProtocolError(`${where}: past the capacity ${capacity}`);
  }
  if (offset % o.blockSize !== 0 || ((offset + length) % o.blockSize !== 0 && offset + length !== capacity)) {
    throw new SourceProtocolError(`${where}: not aligned to the reader's block size ${o.blockSize}`);
  }
}

async function readPiece(request: ReadRequest, o: ExtentReadsOptions, signal: AbortSignal): Promise<Change> {
  const data = await retry(
    async () => {
      const result = await o.session.read(request, {
        signal,
        ...(o.requestTimeoutSeconds === undefined
          ? {}
          : { deadline: deadlineAfter(o.requestTimeoutSeconds) }),
        ...(o.logger === undefined ? {} : { logger: o.logger }),
      });
      const bytes = result?.data;
      if (!(bytes instanceof Uint8Array) || bytes.byteLength !== request.length) {
        // Padding a short answer with zeros or cutting a long one would store wrong bytes under a right hash.
        throw new SourceProtocolError(
          `the reader of disk ${o.diskId} answered the read at offset ${request.offset} with the wrong length: asked ${request.length} bytes, got ${bytes instanceof Uint8Array ? bytes.byteLength : 'no bytes'}`,
        );
      }
      if (result.checksum !== undefined) verifyChecksum(bytes, result.checksum, request, o.diskId);
      return bytes;
    },
    {
      attempts: READ_ATTEMPTS,
      isRetryable: isTransientReadError,
      signal,
      ...(o.sleep === undefined ? {} : { sleep: o.sleep }),
      onRetry: ({ error, attempt, delayMs }) =>
        o.logger?.warn(
          { diskId: o.diskId, offset: request.offset, attempt, delayMs, error: (error as Error).message },
          'read retried',
        ),
    },
  );
  return { kind: 'data', offset: request.offset, data };
}

function verifyChecksum(
  data: Uint8Array,
  checksum: { algorithm: string; base64: string },
  request: ReadRequest,
  diskId: string,
): void {
  if (checksum.algorithm !== 'sha256') {
    throw new SourceProtocolError(
      `the reader of disk ${diskId} returned a checksum of algorithm ${checksum.algorithm}, which drkit cannot verify (only sha256)`,
    );
  }
  const actual = createHash('sha256').update(data).digest('base64');
  if (actual !== checksum.base64) {
    throw new ChecksumMismatchError(
      `the bytes read from disk ${diskId} at offset ${request.offset} (${request.length} bytes) do not match the source's SHA-256: damaged on the way`,
    );
  }
}
