import {
  InvalidArgumentError,
  PermissionError,
  SourceProtocolError,
  TimeoutError,
  UnreachableError,
} from '@drkit/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  CHUNK,
  CMD,
  DONE,
  dataChunk,
  EINVAL,
  EIO,
  ESHUTDOWN,
  errorChunk,
  type FakeConnection,
  type FakeNbdServer,
  type FakeNbdServerOptions,
  type FakeRequest,
  holeChunk,
  noneChunk,
  OPT,
  pattern,
  REP,
  simpleReply,
  startFakeNbdServer,
  statusChunk,
  structuredChunk,
} from '../../test/nbd/fake-nbd-server.js';
import { connectNbdExport } from './connect-nbd-export.js';
import type { NbdExtent } from './nbd-export.js';

const KiB = 1024;
const content = pattern(256 * KiB);
const servers: FakeNbdServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function fake(options: Partial<FakeNbdServerOptions> = {}): Promise<FakeNbdServer> {
  const server = await startFakeNbdServer({ content, ...options });
  servers.push(server);
  return server;
}

/** Collects requests until `count` arrived, then hands them over (to answer in any order). */
function gather(count: number): {
  onRequest: (request: FakeRequest, connection: FakeConnection) => void;
  all: Promise<{ request: FakeRequest; connection: FakeConnection }[]>;
} {
  const seen: { request: FakeRequest; connection: FakeConnection }[] = [];
  let resolve!: (value: typeof seen) => void;
  const all = new Promise<typeof seen>((done) => {
    resolve = done;
  });
  return {
    onRequest: (request, connection) => {
      seen.push({ request, connection });
      if (seen.length === count) resolve(seen);
    },
    all,
  };
}

async function collect(iterable: AsyncIterable<NbdExtent>): Promise<NbdExtent[]> {
  const extents: NbdExtent[] = [];
  for await (const extent of iterable) extents.push(extent);
  return extents;
}

/** Lets the event loop turn a bounded number of times until `condition` holds. */
async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !condition(); i++) await new Promise((resolve) => setImmediate(resolve));
  expect(condition()).toBe(true);
}

describe('NBD reads', () => {
  it('reassembles chunks sent out of order, interleaved across requests, with holes read as zeros', async () => {
    const gathered = gather(8);
    const server = await fake({ onRequest: gathered.onRequest });
    await using disk = await connectNbdExport({ ...server.address });
    const reads = Array.from({ length: 8 }, (_, index) =>
      disk.read(
        { offset: index * 16 * KiB, length: 16 * KiB },
        { allocate: (length) => new Uint8Array(length).fill(0xaa) },
      ),
    );
    const requests = await gathered.all;
    // Second halves first (holes for odd requests), in reverse order, then the first halves.
    for (const { request, connection } of [...requests].reverse()) {
      const half = request.offset + request.length / 2;
      const index = request.offset / (16 * KiB);
      connection.write(
        index % 2 === 1
          ? holeChunk(request.handle, half, request.length / 2, 0)
          : dataChunk(request.handle, half, content.subarray(half, request.offset + request.length), 0),
      );
    }
    for (const { request, connection } of requests) {
      connection.write(
        dataChunk(
          request.handle,
          request.offset,
          content.subarray(request.offset, request.offset + request.length / 2),
        ),
      );
    }
    const results = await Promise.all(reads);
    results.forEach((data, index) => {
      const expected = Buffer.from(content.subarray(index * 16 * KiB, (index + 1) * 16 * KiB));
      if (index % 2 === 1) expected.fill(0, 8 * KiB);
      expect(Buffer.from(data).equals(expected), `read ${index}`).toBe(true);
    });
  });

  it('keeps at most maxRequestsInFlight requests on a connection and splits reads by maxRequestBytes', async () => {
    const server = await fake({
      onRequest: (request, connection) => setImmediate(() => connection.answer(request)),
    });
    await using disk = await connectNbdExport({
      ...server.address,
      maxRequestsInFlight: 3,
      maxRequestBytes: 4096,
    });
    const data = await Promise.all([
      disk.read({ offset: 0, length: 64 * KiB }),
      disk.read({ offset: 64 * KiB, length: 64 * KiB }),
    ]);
    expect(Buffer.concat(data).equals(content.subarray(0, 128 * KiB))).toBe(true);
    expect(server.requests).toHaveLength(32);
    expect(server.requests.every((request) => request.length === 4096)).toBe(true);
    expect(server.maxOutstanding()).toBe(3);
    expect(disk.stats()).toMatchObject({ connectionsOpened: 1, requestsInFlight: 0 });
  });

  it('takes a buffer from allocate only when the read has a place on a connection, and checks its size', async () => {
    const held: { request: FakeRequest; connection: FakeConnection }[] = [];
    const server = await fake({
      onRequest: (request, connection) => void held.push({ request, connection }),
    });
    await using disk = await connectNbdExport({ ...server.address, maxRequestsInFlight: 1 });
    const allocate = vi.fn((length: number) => new Uint8Array(length));
    const reads = [0, 1, 2, 3].map((index) =>
      disk.read({ offset: index * 4096, length: 4096 }, { allocate }),
    );
    await until(() => held.length === 1);
    expect(allocate).toHaveBeenCalledTimes(1);
    for (let answered = 0; answered < 4; answered++) {
      await until(() => held.length > answered);
      held[answered]!.connection.answer(held[answered]!.request);
    }
    await Promise.all(reads);
    expect(allocate).toHaveBeenCalledTimes(4);
    const wrong = await disk
      .read({ offset: 0, length: 4096 }, { allocate: () => new Uint8Array(100) })
      .catch((caught) => caught);
    expect(InvalidArgumentError.isInstance(wrong)).toBe(true);
    expect(wrong.message).toMatch(/returned 100 bytes/);
  });

  it("honours the server's block sizes: splits by its maximum payload, refuses unaligned ranges", async () => {
    const server = await fake({ blockSize: [4096, 8192, 24 * KiB] });
    await using disk = await connectNbdExport({ ...server.address });
    const data = await disk.read({ offset: 8192, length: 64 * KiB });
    expect(Buffer.from(data).equals(content.subarray(8192, 8192 + 64 * KiB))).toBe(true);
    // 24 KiB is a multiple of the preferred 8 KiB: pieces of 24, 24, 16 KiB.
    expect(server.requests.map((request) => request.length)).toEqual([24 * KiB, 24 * KiB, 16 * KiB]);
    for (const range of [
      { offset: 512, length: 4096 },
      { offset: 0, length: 1000 },
      { offset: 0, length: 0 },
      { offset: 252 * KiB, length: 8 * KiB },
      { offset: -4096, length: 4096 },
    ]) {
      const error = await disk.read(range).catch((caught) => caught);
      expect(InvalidArgumentError.isInstance(error), JSON.stringify(range)).toBe(true);
    }
    expect(server.requests).toHaveLength(3);
  });

  it('fails a read the server fails, with its message, and keeps the connection', async () => {
    let fail: number | undefined = EIO;
    const server = await fake({
      onRequest: (request, connection) => {
        if (fail === undefined) return connection.answer(request);
        connection.write(errorChunk(request.handle, fail, 'disk said no'));
      },
    });
    await using disk = await connectNbdExport({ ...server.address });
    const eio = await disk.read({ offset: 0, length: 4096 }).catch((caught) => caught);
    expect(SourceProtocolError.isInstance(eio)).toBe(true);
    expect(eio.retryable).toBe(true);
    expect(eio.message).toMatch(/EIO.*disk said no/);
    fail = 1;
    expect(
      PermissionError.isInstance(await disk.read({ offset: 0, length: 4096 }).catch((caught) => caught)),
    ).toBe(true);
    fail = undefined;
    expect(Buffer.from(await disk.read({ offset: 0, length: 4096 })).equals(content.subarray(0, 4096))).toBe(
      true,
    );
    expect(disk.stats()).toMatchObject({ connectionsOpened: 1, connectionsLost: 0 });
  });

  it('reports an ERROR_OFFSET chunk at its offset', async () => {
    const server = await fake({
      onRequest: (request, connection) => {
        const text = Buffer.from('bad sector');
        const payload = Buffer.alloc(14 + text.length);
        payload.writeUInt32BE(EIO, 0);
        payload.writeUInt16BE(text.length, 4);
        text.copy(payload, 6);
        payload.writeBigUInt64BE(BigInt(request.offset + 512), 6 + text.length);
        connection.write(structuredChunk(0, CHUNK.ERROR_OFFSET, request.handle, payload));
        connection.write(noneChunk(request.handle));
      },
    });
    await using disk = await connectNbdExport({ ...server.address });
    const error = await disk.read({ offset: 4096, length: 4096 }).catch((caught) => caught);
    expect(SourceProtocolError.isInstance(error)).toBe(true);
    expect(error.message).toMatch(/at offset 4608.*bad sector/);
  });

  it('reads with simple replies when structured replies were refused', async () => {
    const server = await fake({
      onOption: (option) =>
        option === OPT.STRUCTURED_REPLY ? { replies: [{ type: REP.ERR_UNSUP }] } : undefined,
      onRequest: (request, connection) =>
        request.offset === 0
          ? connection.write(simpleReply(request.handle, EIO))
          : connection.answer(request),
    });
    await using disk = await connectNbdExport({ ...server.address });
    expect(
      Buffer.from(await disk.read({ offset: 4096, length: 8192 })).equals(content.subarray(4096, 12288)),
    ).toBe(true);
    const error = await disk.read({ offset: 0, length: 4096 }).catch((caught) => caught);
    expect(SourceProtocolError.isInstance(error)).toBe(true);
    expect(error.message).toMatch(/EIO/);
  });
});

describe('NBD servers that break the protocol', () => {
  const cases: [string, (request: FakeRequest, connection: FakeConnection) => void, RegExp][] = [
    ['a reply for an unknown handle', (r, c) => c.write(noneChunk(r.handle + 1000n)), /handle .* no request/],
    [
      'a data chunk outside the request',
      (r, c) => c.write(dataChunk(r.handle, r.offset + 4096, content.subarray(0, 4096))),
      /outside the read/,
    ],
    [
      'overlapping chunks',
      (r, c) => {
        c.write(dataChunk(r.handle, r.offset, content.subarray(r.offset, r.offset + 3000), 0));
        c.write(dataChunk(r.handle, r.offset + 2000, content.subarray(r.offset + 2000, r.offset + 4096)));
      },
      /overlaps/,
    ],
    [
      'done before all the data',
      (r, c) => c.write(dataChunk(r.handle, r.offset, content.subarray(r.offset, r.offset + 1000))),
      /marked done with 1000 bytes/,
    ],
    [
      'a hole chunk of the wrong length',
      (r, c) => c.write(structuredChunk(DONE, CHUNK.OFFSET_HOLE, r.handle, Buffer.alloc(13))),
      /OFFSET_HOLE chunk of 13 bytes/,
    ],
    [
      'a data chunk too short to hold an offset',
      (r, c) => c.write(structuredChunk(DONE, CHUNK.OFFSET_DATA, r.handle, Buffer.alloc(8))),
      /OFFSET_DATA chunk of 8 bytes/,
    ],
    [
      'a NONE chunk with a payload',
      (r, c) => c.write(structuredChunk(DONE, CHUNK.NONE, r.handle, Buffer.alloc(4))),
      /NONE chunk of 4 bytes/,
    ],
    [
      'an unknown chunk type',
      (r, c) => c.write(structuredChunk(DONE, 77, r.handle, Buffer.alloc(0))),
      /unknown type 77/,
    ],
    [
      'a simple reply to a read after structured replies',
      (r, c) => c.write(simpleReply(r.handle, 0, content.subarray(r.offset, r.offset + r.length))),
      /simple reply to NBD_CMD_READ/,
    ],
    [
      'an unknown magic',
      (_r, c) => c.write(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n')),
      /unknown magic/,
    ],
    [
      'an error message longer than its chunk',
      (r, c) => {
        const payload = Buffer.alloc(10);
        payload.writeUInt32BE(EIO, 0);
        payload.writeUInt16BE(100, 4);
        c.write(structuredChunk(DONE, CHUNK.ERROR, r.handle, payload));
      },
      /does not fit/,
    ],
  ];
  for (const [name, onRequest, message] of cases) {
    it(`drops the connection on ${name}, fails the reads in flight, and reconnects for the next read`, async () => {
      let broken = true;
      const server = await fake({
        onRequest: (request, connection) =>
          broken ? onRequest(request, connection) : connection.answer(request),
      });
      await using disk = await connectNbdExport({ ...server.address });
      const error = await disk.read({ offset: 8192, length: 4096 }).catch((caught) => caught);
      expect(SourceProtocolError.isInstance(error), String(error)).toBe(true);
      expect(error.message).toMatch(message);
      expect(error.retryable).toBe(false);
      broken = false;
      expect(
        Buffer.from(await disk.read({ offset: 0, length: 4096 })).equals(content.subarray(0, 4096)),
      ).toBe(true);
      expect(disk.stats()).toMatchObject({ connectionsOpened: 2, connectionsLost: 1 });
    });
  }

  it('fails every read in flight on the broken connection, not only the one the bad reply named', async () => {
    const gathered = gather(3);
    const server = await fake({ onRequest: gathered.onRequest });
    await using disk = await connectNbdExport({ ...server.address });
    const reads = [0, 1, 2].map((index) =>
      disk.read({ offset: index * 4096, length: 4096 }).catch((caught) => caught),
    );
    const [first] = await gathered.all;
    first!.connection.write(noneChunk(999n));
    for (const error of await Promise.all(reads)) expect(SourceProtocolError.isInstance(error)).toBe(true);
  });

  it('fails reads inside an advertised size the server cannot serve (an export size that lies)', async () => {
    const server = await fake({
      advertisedSize: BigInt(content.length * 2),
      onRequest: (request, connection) =>
        request.offset + request.length > content.length
          ? connection.write(errorChunk(request.handle, EINVAL, 'beyond end of file'))
          : connection.answer(request),
    });
    await using disk = await connectNbdExport({ ...server.address });
    expect(disk.info.size).toBe(content.length * 2);
    const error = await disk.read({ offset: content.length, length: 4096 }).catch((caught) => caught);
    expect(SourceProtocolError.isInstance(error)).toBe(true);
    expect(error.message).toMatch(/EINVAL.*inside the size/);
  });

  it('drops a connection that disappears mid-chunk with a retryable UnreachableError, then reconnects', async () => {
    let drop = true;
    const server = await fake({
      onRequest: (request, connection) => {
        if (!drop) return connection.answer(request);
        const chunk = dataChunk(
          request.handle,
          request.offset,
          content.subarray(request.offset, request.offset + 8192),
        );
        connection.socket.write(chunk.subarray(0, 5000));
        connection.socket.destroy();
      },
    });
    await using disk = await connectNbdExport({ ...server.address });
    const error = await disk.read({ offset: 0, length: 8192 }).catch((caught) => caught);
    expect(UnreachableError.isInstance(error)).toBe(true);
    expect(error.retryable).toBe(true);
    expect(error.message).toMatch(/closed the connection with 1 request in flight/);
    drop = false;
    expect(Buffer.from(await disk.read({ offset: 0, length: 8192 })).equals(content.subarray(0, 8192))).toBe(
      true,
    );
    expect(disk.stats()).toMatchObject({ connectionsOpened: 2, connectionsLost: 1, openConnections: 1 });
  });

  it('fails the waiting reads when no connection can be opened again, and recovers when the server is back', async () => {
    let refuse = false;
    const server = await fake({
      onOption: (option) =>
        refuse && option === OPT.GO ? { replies: [{ type: REP.ERR_SHUTDOWN }] } : undefined,
    });
    await using disk = await connectNbdExport({ ...server.address });
    refuse = true;
    server.dropAll();
    await until(() => disk.stats().openConnections === 0);
    const error = await disk.read({ offset: 0, length: 4096 }).catch((caught) => caught);
    expect(UnreachableError.isInstance(error)).toBe(true);
    expect(error.message).toMatch(/shutting down/);
    refuse = false;
    expect((await disk.read({ offset: 0, length: 4096 })).length).toBe(4096);
  });

  it('answers NBD_ESHUTDOWN with a soft disconnect and moves to a new connection', async () => {
    const server = await fake({
      onRequest: (request, connection) =>
        connection.id === 1
          ? connection.write(errorChunk(request.handle, ESHUTDOWN, 'going down'))
          : connection.answer(request),
    });
    await using disk = await connectNbdExport({ ...server.address });
    const error = await disk.read({ offset: 0, length: 4096 }).catch((caught) => caught);
    expect(UnreachableError.isInstance(error)).toBe(true);
    await until(() => server.disconnects() === 1);
    expect((await disk.read({ offset: 0, length: 4096 })).length).toBe(4096);
    expect(server.connections()).toBe(2);
  });
});

describe('NBD block status', () => {
  const holes = (offset: number, length: number): [number, number][] => {
    // 64 KiB of data, then 64 KiB of hole+zero, repeating; describes past the request (allowed) up to 64 KiB.
    const extents: [number, number][] = [];
    let at = offset;
    while (at < offset + length) {
      const end = Math.min(content.length, (Math.floor(at / (64 * KiB)) + 1) * 64 * KiB);
      extents.push([end - at, Math.floor(at / (64 * KiB)) % 2 === 1 ? 3 : 0]);
      at = end;
    }
    return extents;
  };

  it('pages over the export and merges neighbours with the same status', async () => {
    const server = await fake({ extents: holes });
    await using disk = await connectNbdExport({ ...server.address });
    const extents = await collect(disk.extents({ pageBytes: 48 * KiB }));
    expect(extents).toEqual([
      { offset: 0, length: 64 * KiB, zero: false, hole: false },
      { offset: 64 * KiB, length: 64 * KiB, zero: true, hole: true },
      { offset: 128 * KiB, length: 64 * KiB, zero: false, hole: false },
      { offset: 192 * KiB, length: 64 * KiB, zero: true, hole: true },
    ]);
    expect(server.requests.every((request) => request.command === CMD.BLOCK_STATUS)).toBe(true);
    expect(server.requests.length).toBeGreaterThan(4);
    const part = await collect(disk.extents({ offset: 32 * KiB, length: 64 * KiB }));
    expect(part).toEqual([
      { offset: 32 * KiB, length: 32 * KiB, zero: false, hole: false },
      { offset: 64 * KiB, length: 32 * KiB, zero: true, hole: true },
    ]);
  });

  for (const [name, extents, message] of [
    ['describes bytes past the export', () => [[content.length * 2, 0]], /past the export's size/],
    [
      'sends extents past the request',
      (_o: number, l: number) => [
        [l, 0],
        [l, 0],
      ],
      /past the .* bytes asked for/,
    ],
    ['sends a zero-length extent', () => [[0, 0]], /extent of 0 bytes/],
  ] as const) {
    it(`fails when the server ${name}`, async () => {
      const server = await fake({ extents: extents as (o: number, l: number) => [number, number][] });
      await using disk = await connectNbdExport({ ...server.address });
      const error = await collect(disk.extents({ pageBytes: 64 * KiB })).catch((caught) => caught);
      expect(SourceProtocolError.isInstance(error), String(error)).toBe(true);
      expect(error.message).toMatch(message);
    });
  }

  it('fails on a status chunk for a context it did not select, and on a reply with no status chunk', async () => {
    let answer: 'wrong-context' | 'none' = 'wrong-context';
    const server = await fake({
      onRequest: (request, connection) =>
        connection.write(
          answer === 'none'
            ? noneChunk(request.handle)
            : statusChunk(request.handle, 99, [[request.length, 0]]),
        ),
    });
    await using disk = await connectNbdExport({ ...server.address });
    const wrong = await collect(disk.extents()).catch((caught) => caught);
    expect(wrong.message).toMatch(/metadata context 99/);
    answer = 'none';
    const none = await collect(disk.extents()).catch((caught) => caught);
    expect(SourceProtocolError.isInstance(none)).toBe(true);
    expect(none.message).toMatch(/without a block status chunk/);
  });
});

describe('NBD signals, deadlines, pools and close', () => {
  it('rejects an aborted read with the reason at once; its late reply is read and dropped', async () => {
    const gathered = gather(1);
    const server = await fake({
      onRequest: (request, connection) =>
        request.offset === 0 ? gathered.onRequest(request, connection) : connection.answer(request),
    });
    await using disk = await connectNbdExport({ ...server.address });
    const controller = new AbortController();
    const read = disk.read({ offset: 0, length: 64 * KiB }, { signal: controller.signal });
    const [{ request, connection }] = (await gathered.all) as [
      { request: FakeRequest; connection: FakeConnection },
    ];
    const reason = new Error('the caller gave up');
    controller.abort(reason);
    await expect(read).rejects.toBe(reason);
    expect(disk.stats().requestsInFlight).toBe(1);
    connection.write(dataChunk(request.handle, 0, content.subarray(0, 64 * KiB)));
    await until(() => disk.stats().requestsInFlight === 0);
    // The connection goes on, in step with the server.
    const next = await disk.read({ offset: 64 * KiB, length: 64 * KiB });
    expect(Buffer.from(next).equals(content.subarray(64 * KiB, 128 * KiB))).toBe(true);
    expect(disk.stats()).toMatchObject({ connectionsOpened: 1, connectionsLost: 0 });
  });

  it('rejects with a TimeoutError past the deadline', async () => {
    const server = await fake({ onRequest: () => undefined });
    await using disk = await connectNbdExport({ ...server.address });
    const error = await disk
      .read({ offset: 0, length: 4096 }, { deadline: Date.now() + 20 })
      .catch((caught) => caught);
    expect(TimeoutError.isInstance(error)).toBe(true);
    const past = await collect(disk.extents({ deadline: Date.now() - 1 })).catch((caught) => caught);
    expect(TimeoutError.isInstance(past)).toBe(true);
  });

  it('opens the connections the caller asks for when the server sets NBD_FLAG_CAN_MULTI_CONN', async () => {
    const server = await fake({
      onRequest: (request, connection) => setImmediate(() => connection.answer(request)),
    });
    await using disk = await connectNbdExport({ ...server.address, connections: 3, maxRequestsInFlight: 2 });
    expect(disk.info.connections).toBe(3);
    const reads = Array.from({ length: 24 }, (_, index) => disk.read({ offset: index * 4096, length: 4096 }));
    const data = await Promise.all(reads);
    expect(Buffer.concat(data).equals(content.subarray(0, 24 * 4096))).toBe(true);
    expect(server.connections()).toBe(3);
    expect(server.maxOutstanding()).toBeLessThanOrEqual(2);
    expect(disk.stats()).toMatchObject({ openConnections: 3, connectionsOpened: 3 });
  });

  it('uses one connection when the server does not set NBD_FLAG_CAN_MULTI_CONN, unless multiConn is always', async () => {
    const logger = { debug: vi.fn(), info: vi.fn(), warn: vi.fn(), error: vi.fn() };
    const server = await fake({ transmissionFlags: 1 | 2 });
    await using single = await connectNbdExport({ ...server.address, connections: 4, logger });
    expect(single.info).toMatchObject({ canMultiConn: false, connections: 1 });
    expect(logger.info).toHaveBeenCalledWith(
      expect.objectContaining({ connections: 4 }),
      expect.stringMatching(/MULTI_CONN/),
    );
    await Promise.all(
      Array.from({ length: 40 }, (_, index) => single.read({ offset: index * 4096, length: 4096 })),
    );
    expect(server.connections()).toBe(1);
    await using forced = await connectNbdExport({ ...server.address, connections: 2, multiConn: 'always' });
    expect(forced.info.connections).toBe(2);
  });

  it('goes on with fewer connections when the server refuses another one', async () => {
    const logger = { debug: vi.fn(), info: vi.fn(), warn: vi.fn(), error: vi.fn() };
    const server = await fake({
      onOption: (option, _data, connection) =>
        connection > 1 && option === OPT.GO ? { replies: [{ type: REP.ERR_POLICY }] } : undefined,
      onRequest: (request, connection) => setImmediate(() => connection.answer(request)),
    });
    await using disk = await connectNbdExport({
      ...server.address,
      connections: 4,
      maxRequestsInFlight: 1,
      logger,
    });
    const data = await Promise.all(
      Array.from({ length: 8 }, (_, index) => disk.read({ offset: index * 4096, length: 4096 })),
    );
    expect(Buffer.concat(data).equals(content.subarray(0, 8 * 4096))).toBe(true);
    expect(logger.warn).toHaveBeenCalledWith(expect.any(Object), expect.stringMatching(/fewer/));
  });

  it('logs nothing without a logger, and no line per request with one', async () => {
    const spies = (['log', 'info', 'warn', 'error', 'debug'] as const).map((method) =>
      vi.spyOn(console, method).mockImplementation(() => undefined),
    );
    try {
      const server = await fake();
      const quiet = await connectNbdExport({ ...server.address });
      for (let index = 0; index < 20; index++) await quiet.read({ offset: index * 4096, length: 4096 });
      await quiet.close();
      for (const spy of spies) expect(spy).not.toHaveBeenCalled();
      const logger = { debug: vi.fn(), info: vi.fn(), warn: vi.fn(), error: vi.fn() };
      const loud = await connectNbdExport({ ...server.address, logger });
      for (let index = 0; index < 20; index++) await loud.read({ offset: index * 4096, length: 4096 });
      await collect(loud.extents({ pageBytes: 4096 }));
      await loud.close();
      const lines = [logger.debug, logger.info, logger.warn, logger.error].reduce(
        (sum, fn) => sum + fn.mock.calls.length,
        0,
      );
      expect(lines).toBeLessThanOrEqual(2);
    } finally {
      for (const spy of spies) spy.mockRestore();
    }
  });

  it('closes after the requests in flight with NBD_CMD_DISC on every connection; later calls reject', async () => {
    const gathered = gather(1);
    const server = await fake({ onRequest: gathered.onRequest });
    const disk = await connectNbdExport({ ...server.address });
    const read = disk.read({ offset: 0, length: 4096 });
    const [{ request, connection }] = (await gathered.all) as [
      { request: FakeRequest; connection: FakeConnection },
    ];
    const closed = disk.close();
    connection.answer(request);
    expect((await read).length).toBe(4096);
    await closed;
    expect(server.disconnects()).toBe(1);
    expect(
      InvalidArgumentError.isInstance(await disk.read({ offset: 0, length: 4096 }).catch((caught) => caught)),
    ).toBe(true);
    await disk.close();
  });
});
