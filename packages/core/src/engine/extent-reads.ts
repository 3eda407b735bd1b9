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
  readonly signal: AbortSignal;
  /** Bounds each `read` call (`deadline`), the proxy's HTTP communication timeout. */
  readonly requestTimeoutSeconds?: number;
  readonly logger?: Logger;
  /** Waits between attempts of a throttled or failed read; a test passes one that does not wait. */
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

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

/**
 * Drives a list-then-read session as an ordered change stream: lists the extents, cuts each `data` extent at
 * chunk boundaries, keeps at most `concurrency` reads in flight (issued in order of offset) and yields their
 * answers in order of offset, so the chunk assembler sees what a stream source would give it. At most
 * `concurrency` answers are held, whatever the disk's size. Every answer's length is checked and its source
 * checksum verified. Stopping early (a failure, a break) aborts the reads still in flight.
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
  const inFlight: Promise<Change>[] = [];
  const concurrency = Math.max(1, Math.floor(o.concurrency));
  try {
    let end = 0;
    for await (const extent of o.session.extents({ signal })) {
      checkExtent(extent, end, capacityBytes, o);
      end = extent.offset + extent.length;
      if (extent.kind === 'zero') {
        while (inFlight.length > 0) yield await inFlight.shift()!;
        yield { kind: 'zero', offset: extent.offset, length: extent.length };
        continue;
      }
      for (let offset = extent.offset; offset < end; ) {
        const pieceEnd = Math.min(end, (Math.floor(offset / o.chunkSize) + 1) * o.chunkSize);
        while (inFlight.length >= concurrency) yield await inFlight.shift()!;
        const request: ReadRequest = {
          offset,
          length: pieceEnd - offset,
          ...(extent.token === undefined ? {} : { token: extent.token }),
        };
        const reading = readPiece(request, o, signal);
        reading.catch(() => undefined); // awaited in order below; an earlier failure may leave it unawaited
        inFlight.push(reading);
        offset = pieceEnd;
      }
    }
    while (inFlight.length > 0) yield await inFlight.shift()!;
  } finally {
    stop.abort(new Error('the extent reads were stopped'));
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
