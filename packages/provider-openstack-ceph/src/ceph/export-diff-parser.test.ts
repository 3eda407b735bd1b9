import { SourceProtocolError } from '@drkit/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  encodeExportDiff as encode,
  type ExportDiffRecord as Record,
} from '../../test/export-diff-encoder.js';
import { type ExportDiffEvent, parseExportDiff } from './export-diff-parser.js';

/** Feeds bytes in chunks of the given sizes (cycled), as a pipe would. */
async function* chunked(bytes: Uint8Array, sizes: readonly number[] = [65536]): AsyncGenerator<Uint8Array> {
  let at = 0;
  let i = 0;
  while (at < bytes.length) {
    const size = Math.max(1, sizes[i++ % sizes.length]!);
    yield bytes.subarray(at, at + size);
    at += size;
  }
}

async function collect(source: AsyncIterable<Uint8Array>, pieceSize?: number): Promise<ExportDiffEvent[]> {
  const events: ExportDiffEvent[] = [];
  for await (const event of parseExportDiff(source, pieceSize === undefined ? {} : { pieceSize })) {
    events.push(event);
  }
  return events;
}

async function failure(bytes: Uint8Array, pieceSize = 1024): Promise<unknown> {
  return collect(chunked(bytes), pieceSize).then(
    () => undefined,
    (error: unknown) => error,
  );
}

const bytes = (length: number, seed = 1) => Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff);

describe('parseExportDiff', () => {
  it('parses snapshot names, size, data and zero records', async () => {
    const stream = encode([
      { tag: 'f', name: 'drkit-a' },
      { tag: 't', name: 'drkit-b' },
      { tag: 's', size: 10_000 },
      { tag: 'w', offset: 100, data: bytes(50) },
      { tag: 'z', offset: 4096, length: 4096 },
      { tag: 'w', offset: 9999, data: Uint8Array.of(7) },
      { tag: 'e' },
    ]);
    const events = await collect(chunked(stream, [3, 1, 7]));
    expect(events.map((e) => (e.kind === 'data' ? { ...e, data: [...e.data] } : e))).toEqual([
      { kind: 'from-snapshot', name: 'drkit-a' },
      { kind: 'to-snapshot', name: 'drkit-b' },
      { kind: 'size', sizeBytes: 10_000 },
      { kind: 'data', offset: 100, data: [...bytes(50)] },
      { kind: 'zero', offset: 4096, length: 4096 },
      { kind: 'data', offset: 9999, data: [7] },
    ]);
  });

  it('cuts data at multiples of the piece size, each piece in a buffer of its own', async () => {
    const data = bytes(3000);
    const stream = encode([{ tag: 's', size: 8192 }, { tag: 'w', offset: 1000, data }, { tag: 'e' }]);
    const events = await collect(chunked(stream, [4096]), 1024);
    const pieces = events.filter((e) => e.kind === 'data');
    expect(pieces.map((p) => [p.offset, p.data.length])).toEqual([
      [1000, 24],
      [1024, 1024],
      [2048, 1024],
      [3072, 928],
    ]);
    for (const piece of pieces) {
      expect(piece.data.byteOffset).toBe(0);
      expect(piece.data.buffer.byteLength).toBe(piece.data.length);
    }
    expect(Buffer.concat(pieces.map((p) => p.data)).equals(Buffer.from(data))).toBe(true);
  });

  it('takes data buffers from allocate() when given', async () => {
    const stream = encode([
      { tag: 's', size: 4096 },
      { tag: 'w', offset: 0, data: bytes(2048) },
      { tag: 'e' },
    ]);
    const lengths: number[] = [];
    const allocate = (length: number) => {
      lengths.push(length);
      return new Uint8Array(length);
    };
    for await (const _ of parseExportDiff(chunked(stream), { pieceSize: 1024, allocate }));
    expect(lengths).toEqual([1024, 1024]);
  });

  it.each([
    ['a wrong header', new TextEncoder().encode('rbd diff v2\ne'), /header "rbd diff v1\\n" at byte 0/],
    ['an empty stream', new Uint8Array(0), /header/],
    [
      'an unknown tag',
      encode([{ tag: 's', size: 10 }])
        .slice()
        .fill(0x71, 12, 13),
      /unknown record tag 'q' at byte 12/,
    ],
    [
      'no end record',
      encode([{ tag: 's', size: 10 }]),
      /truncated at byte 21: it ended before the end record/,
    ],
    [
      'a truncated size record',
      encode([{ tag: 's', size: 10 }]).subarray(0, 17),
      /truncated at byte 17: inside the 's' record at byte 12/,
    ],
    [
      'truncated data',
      encode([
        { tag: 's', size: 100 },
        { tag: 'w', offset: 0, data: bytes(50) },
      ]).subarray(0, 60),
      /truncated at byte 60: inside the data of the 'w' record at byte 21/,
    ],
    [
      'data past the size',
      encode([{ tag: 's', size: 10 }, { tag: 'w', offset: 5, data: bytes(6) }, { tag: 'e' }]),
      /'w' at byte 21 covers \[5, 11\), past the declared image size 10/,
    ],
    [
      'zeros past the size',
      encode([{ tag: 's', size: 10 }, { tag: 'z', offset: 10, length: 1 }, { tag: 'e' }]),
      /past the declared image size 10/,
    ],
    [
      'overlapping records',
      encode([
        { tag: 's', size: 100 },
        { tag: 'w', offset: 10, data: bytes(10) },
        { tag: 'z', offset: 15, length: 5 },
        { tag: 'e' },
      ]),
      /'z' at byte 48 starts at image offset 15, before the end of the previous record \(20\)/,
    ],
    [
      'unsorted records',
      encode([
        { tag: 's', size: 100 },
        { tag: 'z', offset: 50, length: 5 },
        { tag: 'z', offset: 10, length: 5 },
        { tag: 'e' },
      ]),
      /out of order/,
    ],
    [
      'an empty record',
      encode([{ tag: 's', size: 100 }, { tag: 'z', offset: 5, length: 0 }, { tag: 'e' }]),
      /is empty/,
    ],
    [
      'data before the size',
      encode([{ tag: 'z', offset: 5, length: 1 }, { tag: 'e' }]),
      /before the image size record/,
    ],
    [
      'two size records',
      encode([{ tag: 's', size: 100 }, { tag: 's', size: 100 }, { tag: 'e' }]),
      /second image size record 's' at byte 21/,
    ],
    ['no size at all', encode([{ tag: 'e' }]), /without an image size record/],
    [
      'a snapshot name after the size',
      encode([{ tag: 's', size: 1 }, { tag: 't', name: 'x' }, { tag: 'e' }]),
      /comes after the size or data records/,
    ],
    [
      'bytes after the end',
      Buffer.concat([encode([{ tag: 's', size: 1 }, { tag: 'e' }]), Uint8Array.of(0)]),
      /goes on after the end record 'e' at byte 21 \(byte 22\)/,
    ],
    [
      'a huge name',
      Buffer.concat([encode([]), Uint8Array.of(0x74, 0xff, 0xff, 0xff, 0x7f)]),
      /declares a name of 2147483647 bytes/,
    ],
    [
      'an offset of 2^53',
      Buffer.concat([
        encode([{ tag: 's', size: 1 }]),
        Uint8Array.of(0x7a, 0, 0, 0, 0, 0, 0, 0x20, 0, 1, 0, 0, 0, 0, 0, 0, 0),
      ]),
      /2\^53 bytes or more at byte 22/,
    ],
  ])('rejects %s with a SourceProtocolError naming the byte offset', async (_name, stream, message) => {
    const error = await failure(stream);
    expect(SourceProtocolError.isInstance(error), String(error)).toBe(true);
    expect((error as Error).message).toMatch(message);
  });

  it('ends the source when the consumer stops early', async () => {
    const stream = encode([
      { tag: 's', size: 1 << 20 },
      { tag: 'w', offset: 0, data: bytes(1 << 20) },
      { tag: 'e' },
    ]);
    let returned = false;
    const source: AsyncIterable<Uint8Array> = {
      [Symbol.asyncIterator]() {
        const inner = chunked(stream, [1000]);
        return {
          next: () => inner.next(),
          return: async () => {
            returned = true;
            return { done: true, value: undefined };
          },
        };
      },
    };
    for await (const event of parseExportDiff(source, { pieceSize: 4096 })) {
      if (event.kind === 'data') break;
    }
    expect(returned).toBe(true);
  });

  it('rejects with the signal reason when aborted', async () => {
    const stream = encode([
      { tag: 's', size: 1 << 20 },
      { tag: 'w', offset: 0, data: bytes(1 << 20) },
      { tag: 'e' },
    ]);
    const controller = new AbortController();
    const reason = { why: 'stop' };
    const run = (async () => {
      for await (const event of parseExportDiff(chunked(stream, [1000]), {
        pieceSize: 4096,
        signal: controller.signal,
      })) {
        if (event.kind === 'data') controller.abort(reason);
      }
    })();
    await expect(run).rejects.toBe(reason);
  });

  it('fuzz: random bytes only ever fail with a SourceProtocolError', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 200 }),
          fc.uint8Array({ maxLength: 200 }).map((tail) => Buffer.concat([encode([]), tail])),
        ),
        fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 4 }),
        async (stream, sizes) => {
          await checkNeverPastSize(chunked(stream, sizes));
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('fuzz: mutated valid streams only fail with a SourceProtocolError and never yield past the size', async () => {
    await fc.assert(
      fc.asyncProperty(
        validRecords(),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
        fc.option(fc.nat(), { nil: undefined }),
        async ({ records }, flips, cut) => {
          const stream = Buffer.from(encode(records));
          for (const [at, value] of flips) stream[at % stream.length] = value;
          const bytesToParse = cut === undefined ? stream : stream.subarray(0, cut % (stream.length + 1));
          await checkNeverPastSize(chunked(bytesToParse, [17, 5, 300]));
        },
      ),
      { numRuns: 1000 },
    );
  });

  it('round trip: what the encoder writes, the parser reads back', async () => {
    await fc.assert(
      fc.asyncProperty(
        validRecords(),
        fc.integer({ min: 1, max: 5000 }),
        async ({ records, size }, pieceSize) => {
          const events = await collect(chunked(encode(records), [1, 100, 4096]), pieceSize);
          const image = new Uint8Array(size).fill(0xaa);
          const expected = new Uint8Array(size).fill(0xaa);
          for (const r of records) {
            if (r.tag === 'w') expected.set(r.data, r.offset);
            if (r.tag === 'z') expected.fill(0, r.offset, r.offset + r.length);
          }
          // Checked in plain code and asserted once per run: an expect() per event (up to 20 000 of them in each
          // of 500 runs) made this property slow on a busy machine.
          let crossing: number | undefined;
          for (const e of events) {
            if (e.kind === 'data') {
              const first = Math.floor(e.offset / pieceSize);
              if (
                crossing === undefined &&
                first !== Math.floor((e.offset + e.data.length - 1) / pieceSize)
              ) {
                crossing = e.offset;
              }
              image.set(e.data, e.offset);
            }
            if (e.kind === 'zero') image.fill(0, e.offset, e.offset + e.length);
          }
          expect(crossing, 'offset of a data event that crosses a piece boundary').toBeUndefined();
          expect(events.find((e) => e.kind === 'size')).toEqual({ kind: 'size', sizeBytes: size });
          expect(Buffer.from(image).equals(Buffer.from(expected))).toBe(true);
        },
      ),
      { numRuns: 500 },
    );
  });
});

/**
 * Parses, asserting that it fails only with a SourceProtocolError and that no range passes the size. The ranges are
 * checked in plain code and asserted once: an expect() per event, thousands of runs, was slow on a busy machine.
 */
async function checkNeverPastSize(source: AsyncIterable<Uint8Array>): Promise<void> {
  let size: number | undefined;
  let pastSize: string | undefined;
  try {
    for await (const event of parseExportDiff(source, { pieceSize: 64 })) {
      if (event.kind === 'size') size = event.sizeBytes;
      if (event.kind === 'data' || event.kind === 'zero') {
        const end = event.offset + (event.kind === 'data' ? event.data.length : event.length);
        if (pastSize === undefined && (size === undefined || end > size)) {
          pastSize = `a ${event.kind} range ending at ${end} with the size ${size ?? 'not yet given'}`;
        }
      }
    }
  } catch (error) {
    if (!SourceProtocolError.isInstance(error)) throw error;
  }
  expect(pastSize).toBeUndefined();
}

/** Arbitrary valid record lists: optional names, a size, sorted disjoint data and zero ranges, the end. */
function validRecords(): fc.Arbitrary<{ records: Record[]; size: number }> {
  return fc
    .record({
      size: fc.integer({ min: 1, max: 20_000 }),
      from: fc.option(fc.string({ maxLength: 12 }), { nil: undefined }),
      to: fc.option(fc.string({ maxLength: 12 }), { nil: undefined }),
      cuts: fc.uniqueArray(fc.integer({ min: 0, max: 20_000 }), { maxLength: 12 }),
      kinds: fc.array(fc.constantFrom('w', 'z', 'gap'), { minLength: 12, maxLength: 12 }),
      seed: fc.nat(255),
    })
    .map(({ size, from, to, cuts, kinds, seed }) => {
      const points = [...new Set([0, ...cuts.filter((c) => c < size), size])].sort((a, b) => a - b);
      const records: Record[] = [];
      if (from !== undefined) records.push({ tag: 'f', name: from });
      if (to !== undefined) records.push({ tag: 't', name: to });
      records.push({ tag: 's', size });
      for (let i = 0; i + 1 < points.length; i++) {
        const offset = points[i]!;
        const length = points[i + 1]! - offset;
        const kind = kinds[i % kinds.length];
        if (kind === 'w') records.push({ tag: 'w', offset, data: bytes(length, seed + i) });
        if (kind === 'z') records.push({ tag: 'z', offset, length });
      }
      records.push({ tag: 'e' });
      return { records, size };
    });
}
