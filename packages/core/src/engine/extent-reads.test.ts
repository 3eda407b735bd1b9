// The engine's read loop of list-then-read sessions against a scripted reader: the test decides when each read
// answers, so completion order, the reads started, the bytes held and the errors are exact, whatever the load.
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, SourceProtocolError } from '../errors/drkit-error.js';
import type { Change, ChangedExtent, ExtentReadSession, ReadRequest } from '../spec/v2/index.js';
import { type ExtentReadStats, MIN_ENTRY_BYTES, orderedExtentReads } from './extent-reads.js';

const CHUNK = 64 * 1024;

/** A read the test answers when it wants. */
interface HeldRead {
  readonly request: ReadRequest;
  readonly signal: AbortSignal | undefined;
  answer(): void;
  fail(error: unknown): void;
}

/** The byte at `offset` of the scripted disk. */
const byteAt = (offset: number) => (offset * 7 + 3) & 0xff;
const bytesOf = (offset: number, length: number) => Uint8Array.from({ length }, (_, i) => byteAt(offset + i));

/** A session listing `extents` (then failing with `listingError`, if given), each read held until answered. */
function scriptedSession(
  extents: ChangedExtent[],
  listingError?: unknown,
): { session: ExtentReadSession; reads: HeldRead[]; byOffset(offset: number): HeldRead } {
  const reads: HeldRead[] = [];
  const session: ExtentReadSession = {
    mode: 'extents',
    capacityBytes: 64 * CHUNK,
    validity: { kind: 'full', reason: 'first-backup' },
    async *extents() {
      yield* extents;
      if (listingError !== undefined) throw listingError;
    },
    read(request, options) {
      return new Promise((resolve, reject) => {
        reads.push({
          request,
          signal: options?.signal,
          answer: () => resolve({ data: bytesOf(request.offset, request.length) }),
          fail: reject,
        });
      });
    },
    checkpoint: () => ({ diskId: 'd1', token: 't', capacityBytes: 64 * CHUNK, createdAt: '' }),
    async commit() {},
    async abandon() {},
    async close() {},
    async [Symbol.asyncDispose]() {},
  };
  return {
    session,
    reads,
    byOffset(offset) {
      const read = reads.find((r) => r.request.offset === offset);
      if (!read) throw new Error(`no read at ${offset} was started`);
      return read;
    },
  };
}

/** Lets every promise chain that can move move (a bounded number of event-loop turns, no timers). */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
}

function stats(): ExtentReadStats {
  return { maxInFlight: 0, maxBufferedBytes: 0, answeredOutOfOrder: 0 };
}

/** Consumes the changes in the background; `changes` fills as they come. */
function consume(generator: AsyncGenerator<Change>): { changes: Change[]; done: Promise<unknown> } {
  const changes: Change[] = [];
  const done = (async () => {
    for await (const change of generator) changes.push(change);
  })().then(
    () => undefined,
    (error: unknown) => error,
  );
  return { changes, done };
}

const data = (offset: number, length: number): ChangedExtent => ({ kind: 'data', offset, length });

describe('orderedExtentReads', () => {
  it('starts the next reads while an earlier one is slow, within the budget, and yields in order of offset', async () => {
    const scripted = scriptedSession([data(0, 8 * CHUNK)]);
    const s = stats();
    const run = consume(
      orderedExtentReads(64 * CHUNK, {
        session: scripted.session,
        diskId: 'd1',
        chunkSize: CHUNK,
        blockSize: 512,
        concurrency: 2,
        bufferBytes: 4 * CHUNK,
        signal: new AbortController().signal,
        stats: s,
      }),
    );
    await settle();
    expect(scripted.reads.map((r) => r.request.offset)).toEqual([0, CHUNK]);
    // The second answers first: its place in flight is free at once, the third read starts.
    scripted.byOffset(CHUNK).answer();
    await settle();
    expect(scripted.reads.map((r) => r.request.offset)).toEqual([0, CHUNK, 2 * CHUNK]);
    scripted.byOffset(2 * CHUNK).answer();
    await settle();
    // Four chunks held (one slow, two answered, one in flight): the budget stops a fifth.
    expect(scripted.reads.map((r) => r.request.offset)).toEqual([0, CHUNK, 2 * CHUNK, 3 * CHUNK]);
    scripted.byOffset(3 * CHUNK).answer();
    await settle();
    expect(scripted.reads).toHaveLength(4);
    expect(run.changes).toEqual([]);
    scripted.byOffset(0).answer();
    await settle();
    for (let i = 4; i < 8; i++) {
      scripted.byOffset(i * CHUNK).answer();
      await settle();
    }
    expect(await run.done).toBeUndefined();
    expect(run.changes.map((c) => c.offset)).toEqual([0, 1, 2, 3, 4, 5, 6, 7].map((i) => i * CHUNK));
    for (const change of run.changes) {
      expect(change.kind).toBe('data');
      if (change.kind === 'data') expect(change.data).toEqual(bytesOf(change.offset, CHUNK));
    }
    expect(s.maxInFlight).toBe(2);
    expect(s.maxBufferedBytes).toBe(4 * CHUNK);
    expect(s.answeredOutOfOrder).toBe(3);
  });

  it('keeps reading while the consumer is busy, up to the budget and no further', async () => {
    const scripted = scriptedSession([data(0, 16 * CHUNK)]);
    const s = stats();
    const generator = orderedExtentReads(64 * CHUNK, {
      session: scripted.session,
      diskId: 'd1',
      chunkSize: CHUNK,
      blockSize: 512,
      concurrency: 3,
      bufferBytes: 6 * CHUNK,
      signal: new AbortController().signal,
      stats: s,
    });
    const first = generator.next();
    await settle();
    // Answer every read as it starts; the consumer took nothing yet after the first.
    for (let round = 0; round < 20; round++) {
      for (const read of scripted.reads) read.answer();
      await settle();
    }
    expect((await first).value).toMatchObject({ kind: 'data', offset: 0 });
    await settle();
    for (const read of scripted.reads) read.answer();
    await settle();
    // One change handed over, six chunks held: seven reads, however long the consumer waits.
    expect(scripted.reads).toHaveLength(7);
    expect(s.maxBufferedBytes).toBeLessThanOrEqual(6 * CHUNK);
    const rest: number[] = [];
    for (;;) {
      const next = generator.next();
      await settle();
      for (const read of scripted.reads) read.answer();
      const step = await next;
      if (step.done) break;
      rest.push(step.value.offset);
    }
    expect(rest).toEqual(Array.from({ length: 15 }, (_, i) => (i + 1) * CHUNK));
    expect(scripted.reads).toHaveLength(16);
    expect(s.maxBufferedBytes).toBeLessThanOrEqual(6 * CHUNK);
  });

  it('counts zero extents and small reads at least MIN_ENTRY_BYTES, so the listing cannot run far ahead', async () => {
    const extents: ChangedExtent[] = [];
    for (let i = 0; i < 40; i++) {
      extents.push({ kind: 'zero', offset: i * 1024, length: 512 });
      extents.push(data(i * 1024 + 512, 512));
    }
    const scripted = scriptedSession(extents);
    const s = stats();
    const run = consume(
      orderedExtentReads(64 * CHUNK, {
        session: scripted.session,
        diskId: 'd1',
        chunkSize: CHUNK,
        blockSize: 512,
        concurrency: 64,
        bufferBytes: 16 * MIN_ENTRY_BYTES,
        signal: new AbortController().signal,
        stats: s,
      }),
    );
    await settle();
    // 16 entries fit the budget (one zero extent, then one read, and so on): 8 reads started.
    expect(scripted.reads).toHaveLength(8);
    for (let round = 0; round < 60; round++) {
      for (const read of scripted.reads) read.answer();
      await settle();
    }
    expect(await run.done).toBeUndefined();
    expect(run.changes.map((c) => [c.kind, c.offset])).toEqual(extents.map((e) => [e.kind, e.offset]));
    expect(s.maxBufferedBytes).toBeLessThanOrEqual(16 * MIN_ENTRY_BYTES);
  });

  it('stops starting reads at the first failure and throws it in its turn, after the changes before it', async () => {
    const scripted = scriptedSession([data(0, 8 * CHUNK)]);
    const run = consume(
      orderedExtentReads(64 * CHUNK, {
        session: scripted.session,
        diskId: 'd1',
        chunkSize: CHUNK,
        blockSize: 512,
        concurrency: 3,
        bufferBytes: 8 * CHUNK,
        signal: new AbortController().signal,
      }),
    );
    await settle();
    const broken = new InvalidArgumentError('the source refused the read');
    scripted.byOffset(2 * CHUNK).fail(broken);
    await settle();
    scripted.byOffset(CHUNK).answer();
    await settle();
    expect(scripted.reads).toHaveLength(3); // nothing started after the failure
    scripted.byOffset(0).answer();
    expect(await run.done).toBe(broken);
    expect(run.changes.map((c) => c.offset)).toEqual([0, CHUNK]);
  });

  it('yields what was listed before a bad listing, then its SourceProtocolError', async () => {
    const scripted = scriptedSession([data(0, CHUNK), data(4 * CHUNK, CHUNK), data(2 * CHUNK, CHUNK)]);
    const run = consume(
      orderedExtentReads(64 * CHUNK, {
        session: scripted.session,
        diskId: 'd1',
        chunkSize: CHUNK,
        blockSize: 512,
        concurrency: 4,
        signal: new AbortController().signal,
      }),
    );
    await settle();
    for (const read of scripted.reads) read.answer();
    const error = await run.done;
    expect(SourceProtocolError.isInstance(error)).toBe(true);
    expect((error as Error).message).toMatch(/unsorted/);
    expect(run.changes.map((c) => c.offset)).toEqual([0, 4 * CHUNK]);
  });

  it('aborts the reads in flight when the consumer stops early', async () => {
    const scripted = scriptedSession([data(0, 6 * CHUNK)]);
    const generator = orderedExtentReads(64 * CHUNK, {
      session: scripted.session,
      diskId: 'd1',
      chunkSize: CHUNK,
      blockSize: 512,
      concurrency: 3,
      signal: new AbortController().signal,
    });
    const first = generator.next();
    await settle();
    scripted.byOffset(0).answer();
    expect((await first).value).toMatchObject({ offset: 0 });
    await generator.return(undefined);
    await settle();
    const open = scripted.reads.filter((r) => r.request.offset > 0);
    expect(open.length).toBeGreaterThan(0);
    expect(open.every((r) => r.signal?.aborted === true)).toBe(true);
    const count = scripted.reads.length;
    await settle();
    expect(scripted.reads).toHaveLength(count);
  });
});
