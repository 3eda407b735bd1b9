// The NBD client against nbdkit from Debian (1.32 on Debian 12): memory and file plugins, on Unix sockets and on
// 127.0.0.1, with nbdkit's own filters for block sizes, delays and errors, its flags for simple replies and the
// plain newstyle handshake, and a server killed mid-read.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AuthenticationError,
  InvalidArgumentError,
  InvalidSettingsError,
  SourceProtocolError,
  TimeoutError,
  UnreachableError,
} from '@drkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectNbdExport, type NbdExtent } from '../../../src/nbd/index.js';
import { requireNbdPeers, run, type StartedNbdServer, startNbdkit } from './nbd-servers.js';
import { expectedExtents, makeSparseImage, type SparseImage } from './sparse-image.js';

const KiB = 1024;
const MiB = 1024 * KiB;

let work: string;
let image: SparseImage;
const servers: StartedNbdServer[] = [];

async function nbdkit(options: Parameters<typeof startNbdkit>[0]): Promise<StartedNbdServer> {
  const server = await startNbdkit(options);
  servers.push(server);
  return server;
}

async function collect(iterable: AsyncIterable<NbdExtent>): Promise<NbdExtent[]> {
  const extents: NbdExtent[] = [];
  for await (const extent of iterable) extents.push(extent);
  return extents;
}

/** Lets the event loop turn, a bounded number of times, until `condition` holds. */
async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000 && !condition(); i++) await new Promise((resolve) => setImmediate(resolve));
  expect(condition()).toBe(true);
}

beforeAll(async () => {
  requireNbdPeers();
  work = await mkdtemp(join(tmpdir(), 'drkit-nbdkit-it-'));
  // 24 MiB + 12 KiB (not a multiple of 64 KiB): data at the start, in the middle and in the last bytes, holes
  // around, and explicit zeros (allocated) in between.
  image = await makeSparseImage(
    join(work, 'disk.raw'),
    24 * MiB + 12 * KiB,
    [
      [0, 192 * KiB],
      [3 * MiB, 5 * MiB],
      [17 * MiB + 64 * KiB, 64 * KiB],
      [24 * MiB, 12 * KiB],
    ],
    [[12 * MiB, 1 * MiB]],
  );
});

afterAll(async () => {
  await Promise.all(servers.splice(0).map((server) => server.stop()));
  if (work) await rm(work, { recursive: true, force: true });
});

describe('nbdkit', () => {
  it('handshakes over a Unix socket: structured replies, base:allocation, size and flags', async () => {
    const server = await nbdkit({ plugin: ['memory', 'size=8M'] });
    await using disk = await connectNbdExport({ ...server.address, exportName: 'any' });
    expect(disk.info).toMatchObject({
      exportName: 'any',
      size: 8 * MiB,
      readOnly: false,
      canMultiConn: true,
      structuredReplies: true,
      allocation: true,
      tls: false,
    });
    // A fresh memory disk is one hole that reads as zeros.
    expect(await collect(disk.extents())).toEqual([{ offset: 0, length: 8 * MiB, zero: true, hole: true }]);
    expect(
      Buffer.from(await disk.read({ offset: 4 * MiB, length: 64 * KiB })).equals(Buffer.alloc(64 * KiB)),
    ).toBe(true);
  });

  it('reads a sparse file byte for byte (file plugin, TCP on 127.0.0.1), in pieces of every size', async () => {
    const server = await nbdkit({ plugin: ['file', image.path], flags: ['-r'], transport: 'tcp' });
    await using disk = await connectNbdExport({ ...server.address, maxRequestBytes: 1 * MiB });
    expect(disk.info).toMatchObject({ size: image.size, readOnly: true });
    const pieces = [4096, 1 * MiB, 3 * MiB + 4096, 64 * KiB, 5 * MiB];
    const out = Buffer.alloc(image.size);
    let at = 0;
    for (let index = 0; at < image.size; index++) {
      const length = Math.min(pieces[index % pieces.length]!, image.size - at);
      out.set(await disk.read({ offset: at, length }), at);
      at += length;
    }
    expect(out.equals(image.content)).toBe(true);
    // The last bytes: the export's size is not a multiple of 64 KiB.
    const tail = await disk.read({ offset: image.size - 12 * KiB, length: 12 * KiB });
    expect(Buffer.from(tail).equals(image.content.subarray(image.size - 12 * KiB))).toBe(true);
  });

  it("reports the file's holes as base:allocation does, and as nbdinfo --map sees them", async () => {
    const server = await nbdkit({ plugin: ['file', image.path], flags: ['-r'] });
    await using disk = await connectNbdExport({ ...server.address });
    const extents = await collect(disk.extents({ pageBytes: 4 * MiB }));
    expect(extents).toEqual(expectedExtents(image));
    const map = JSON.parse(await run('nbdinfo', ['--map', '--json', server.uri])) as {
      offset: number;
      length: number;
      type: number;
    }[];
    const reference: NbdExtent[] = [];
    for (const entry of map) {
      const next = {
        offset: entry.offset,
        length: entry.length,
        hole: (entry.type & 1) !== 0,
        zero: (entry.type & 2) !== 0,
      };
      const last = reference.at(-1);
      if (last && last.hole === next.hole && last.zero === next.zero) {
        reference[reference.length - 1] = { ...last, length: last.length + next.length };
      } else reference.push(next);
    }
    expect(extents).toEqual(reference);
    // A range inside the export, not aligned to the extents.
    const part = await collect(disk.extents({ offset: 2 * MiB, length: 2 * MiB }));
    expect(part).toEqual([
      { offset: 2 * MiB, length: 1 * MiB, zero: true, hole: true },
      { offset: 3 * MiB, length: 1 * MiB, zero: false, hole: false },
    ]);
  });

  it('reads in parallel over several connections, and nbdkit sees them', async () => {
    const log = join(work, 'parallel.log');
    const server = await nbdkit({
      plugin: ['file', image.path, `logfile=${log}`],
      filters: ['log'],
      flags: ['-r'],
    });
    const disk = await connectNbdExport({ ...server.address, connections: 4, maxRequestsInFlight: 4 });
    expect(disk.info.connections).toBe(4);
    const reads = [];
    for (let at = 0; at < 16 * MiB; at += 256 * KiB) {
      reads.push(disk.read({ offset: at, length: 256 * KiB }).then((data) => ({ at, data })));
    }
    for (const { at, data } of await Promise.all(reads)) {
      expect(Buffer.from(data).equals(image.content.subarray(at, at + 256 * KiB)), `read at ${at}`).toBe(
        true,
      );
    }
    expect(disk.stats()).toMatchObject({ openConnections: 4, connectionsOpened: 4, connectionsLost: 0 });
    await disk.close();
    const text = await readFile(log, 'utf8');
    expect(text.match(/ Connect /g)).toHaveLength(4);
    expect(text.match(/ Disconnect /g)).toHaveLength(4);
    const reads4 = new Set([...text.matchAll(/connection=(\d+) Read /g)].map((match) => match[1]));
    expect(reads4.size).toBe(4);
  });

  it("honours nbdkit's advertised block sizes (blocksize-policy filter)", async () => {
    const log = join(work, 'blocksize.log');
    const server = await nbdkit({
      plugin: [
        'file',
        image.path,
        'blocksize-minimum=4096',
        'blocksize-preferred=65536',
        'blocksize-maximum=262144',
        'blocksize-error-policy=error',
        `logfile=${log}`,
      ],
      filters: ['log', 'blocksize-policy'],
      flags: ['-r'],
    });
    await using disk = await connectNbdExport({ ...server.address });
    expect(disk.info.blockSize).toEqual({ minimum: 4096, preferred: 65536, maximum: 262144 });
    const data = await disk.read({ offset: 3 * MiB - 4096, length: 1 * MiB + 8192 });
    expect(Buffer.from(data).equals(image.content.subarray(3 * MiB - 4096, 4 * MiB + 4096))).toBe(true);
    const counts = [
      ...(await readFile(log, 'utf8')).matchAll(/ Read id=\d+ offset=0x[0-9a-f]+ count=0x([0-9a-f]+)/g),
    ].map((match) => Number.parseInt(match[1]!, 16));
    // nbdkit serves them in parallel: the log's order is not the requests' order.
    expect(counts.sort((a, b) => a - b)).toEqual([8192, 262144, 262144, 262144, 262144]);
    const error = await disk.read({ offset: 512, length: 4096 }).catch((caught) => caught);
    expect(InvalidArgumentError.isInstance(error)).toBe(true);
  });

  it("reads large data chunks straight into the reads' buffers on a Unix socket: no byte copied", async () => {
    const server = await nbdkit({ plugin: ['file', image.path], flags: ['-r'] });
    await using disk = await connectNbdExport({
      ...server.address,
      connections: 4,
      multiConn: 'always',
      maxRequestBytes: 256 * KiB,
    });
    // 1 MiB reads (4 requests of 256 KiB each), 4 at a time, into buffers the caller allocates.
    const buffers: Uint8Array[] = [];
    let next = 0;
    const worker = async () => {
      for (let at = next; at < 16 * MiB; at = next) {
        next += 1 * MiB;
        const buffer = new Uint8Array(1 * MiB);
        const data = await disk.read({ offset: at, length: 1 * MiB }, { allocate: () => buffer });
        expect(data).toBe(buffer);
        buffers[at / MiB] = data;
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    expect(Buffer.concat(buffers).equals(image.content.subarray(0, 16 * MiB))).toBe(true);
    // Each reply's header and offset are read alone, so its data never lands in the socket's own buffer.
    expect(disk.stats()).toMatchObject({ dataBytesDirect: 16 * MiB, dataBytesCopied: 0 });
  });

  it('reads with simple replies from nbdkit --no-sr (no block status then)', async () => {
    const server = await nbdkit({ plugin: ['file', image.path], flags: ['-r', '--no-sr'] });
    await using disk = await connectNbdExport({ ...server.address });
    expect(disk.info).toMatchObject({ structuredReplies: false, allocation: false });
    const data = await disk.read({ offset: 3 * MiB, length: 2 * MiB });
    expect(Buffer.from(data).equals(image.content.subarray(3 * MiB, 5 * MiB))).toBe(true);
    // A simple reply's start is read with at most 12 bytes of its data (what follows its 16-byte header in the
    // 28 bytes of a structured one's start); the rest goes straight into the read's buffer.
    const { dataBytesDirect, dataBytesCopied } = disk.stats();
    expect(dataBytesDirect + dataBytesCopied).toBe(2 * MiB);
    expect(dataBytesCopied).toBeLessThanOrEqual(12);
    expect(await collect(disk.extents())).toEqual([
      { offset: 0, length: image.size, zero: false, hole: false },
    ]);
  });

  it('speaks the plain newstyle handshake (nbdkit --mask-handshake=0)', async () => {
    const server = await nbdkit({ plugin: ['file', image.path], flags: ['-r', '--mask-handshake=0'] });
    await using disk = await connectNbdExport({ ...server.address });
    expect(disk.info).toMatchObject({ size: image.size, structuredReplies: false, allocation: false });
    expect(
      Buffer.from(await disk.read({ offset: 0, length: 192 * KiB })).equals(
        image.content.subarray(0, 192 * KiB),
      ),
    ).toBe(true);
  });

  it('refuses the oldstyle handshake (nbdkit -o) with a SourceProtocolError', async () => {
    const server = await nbdkit({ plugin: ['memory', 'size=1M'], flags: ['-o'] });
    const error = await connectNbdExport({ ...server.address }).catch((caught) => caught);
    expect(SourceProtocolError.isInstance(error)).toBe(true);
    expect(error.message).toMatch(/oldstyle/);
  });

  it('turns EIO from the server (error filter) into a retryable SourceProtocolError and keeps the connection', async () => {
    const trigger = join(work, 'fail-reads');
    const server = await nbdkit({
      plugin: ['file', image.path, 'error-pread=EIO', 'error-pread-rate=100%', `error-pread-file=${trigger}`],
      filters: ['error'],
      flags: ['-r'],
    });
    await using disk = await connectNbdExport({ ...server.address });
    expect((await disk.read({ offset: 0, length: 4096 })).length).toBe(4096);
    await run('touch', [trigger]);
    const error = await disk.read({ offset: 0, length: 4096 }).catch((caught) => caught);
    expect(SourceProtocolError.isInstance(error)).toBe(true);
    expect(error.retryable).toBe(true);
    expect(error.message).toMatch(/EIO/);
    await rm(trigger);
    expect(
      Buffer.from(await disk.read({ offset: 0, length: 4096 })).equals(image.content.subarray(0, 4096)),
    ).toBe(true);
    expect(disk.stats()).toMatchObject({ connectionsOpened: 1, connectionsLost: 0 });
  });

  it('fails reads in flight on a killed server with a retryable UnreachableError, then reconnects', async () => {
    // Reads take 60 s on this server (delay filter): they are surely in flight when it is killed.
    const dir = await mkdtemp(join(work, 'killed-'));
    const slow = await nbdkit({
      plugin: ['file', image.path, 'rdelay=60'],
      filters: ['delay'],
      flags: ['-r'],
      dir,
    });
    const disk = await connectNbdExport({ ...slow.address, connections: 2, maxRequestsInFlight: 2 });
    const reads = [0, 1, 2, 3].map((index) =>
      disk.read({ offset: index * MiB, length: MiB }).catch((caught) => caught),
    );
    await until(() => disk.stats().requestsInFlight === 4);
    await slow.kill();
    for (const error of await Promise.all(reads)) {
      expect(UnreachableError.isInstance(error), String(error)).toBe(true);
      expect(error.retryable).toBe(true);
    }
    // While nothing listens, a read fails at once, typed.
    const refused = await disk.read({ offset: 0, length: 4096 }).catch((caught) => caught);
    expect(UnreachableError.isInstance(refused)).toBe(true);
    // A new server at the same socket: the next read reconnects.
    await nbdkit({ plugin: ['file', image.path], flags: ['-r'], address: slow.address, dir });
    const data = await disk.read({ offset: 3 * MiB, length: MiB });
    expect(Buffer.from(data).equals(image.content.subarray(3 * MiB, 4 * MiB))).toBe(true);
    expect(disk.stats().connectionsLost).toBe(2);
    await disk.close();
  });

  it('honours deadline and signal on a server that does not answer', async () => {
    const server = await nbdkit({
      plugin: ['memory', 'size=1M', 'rdelay=60', 'delay-extents=60'],
      filters: ['delay'],
    });
    await using disk = await connectNbdExport({ ...server.address });
    const late = await disk
      .read({ offset: 0, length: 4096 }, { deadline: Date.now() + 50 })
      .catch((caught) => caught);
    expect(TimeoutError.isInstance(late)).toBe(true);
    const controller = new AbortController();
    const pending = collect(disk.extents({ signal: controller.signal })).catch((caught) => caught);
    await until(() => disk.stats().requestsInFlight === 2);
    controller.abort(new Error('stop'));
    expect((await pending).message).toBe('stop');
  });

  it('refuses a server that requires TLS when none is configured, and verifies its certificate when it is', async () => {
    const pki = join(work, 'pki');
    await makeTestPki(pki);
    const server = await nbdkit({
      plugin: ['memory', 'size=1M'],
      flags: ['--tls=require', `--tls-certificates=${pki}`],
      transport: 'tcp',
    });
    const plain = await connectNbdExport({ ...server.address }).catch((caught) => caught);
    expect(InvalidSettingsError.isInstance(plain)).toBe(true);
    expect(plain.field).toBe('tls');
    const untrusted = await connectNbdExport({ ...server.address, tls: {} }).catch((caught) => caught);
    expect(AuthenticationError.isInstance(untrusted), String(untrusted)).toBe(true);
    const ca = await readFile(join(pki, 'ca-cert.pem'));
    const wrongName = await connectNbdExport({
      ...server.address,
      tls: { ca, servername: 'elsewhere.example' },
    }).catch((caught) => caught);
    expect(AuthenticationError.isInstance(wrongName), String(wrongName)).toBe(true);
    await using disk = await connectNbdExport({ ...server.address, tls: { ca }, connections: 2 });
    expect(disk.info).toMatchObject({ tls: true, structuredReplies: true, allocation: true, size: 1 * MiB });
    const reads = await Promise.all(
      [0, 1, 2, 3].map((index) => disk.read({ offset: index * 256 * KiB, length: 256 * KiB })),
    );
    expect(reads.every((data) => data.every((byte) => byte === 0))).toBe(true);
  });
});

/** A CA and a server certificate for localhost and 127.0.0.1, as nbdkit's --tls-certificates wants them. */
async function makeTestPki(dir: string): Promise<void> {
  await run('mkdir', ['-p', dir]);
  const openssl = (args: string[]) =>
    new Promise<void>((resolve, reject) =>
      execFile('openssl', args, { cwd: dir }, (error, _out, stderr) =>
        error ? reject(new Error(`openssl ${args.join(' ')}: ${stderr}`)) : resolve(),
      ),
    );
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await openssl([
    'req',
    '-x509',
    ...ec,
    '-keyout',
    'ca-key.pem',
    '-out',
    'ca-cert.pem',
    '-days',
    '2',
    '-subj',
    '/CN=drkit test CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign',
  ]);
  await openssl(['req', ...ec, '-keyout', 'server-key.pem', '-out', 'server.csr', '-subj', '/CN=localhost']);
  await run('sh', [
    '-c',
    `printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > '${dir}/ext.cnf'`,
  ]);
  await openssl([
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca-cert.pem',
    '-CAkey',
    'ca-key.pem',
    '-CAcreateserial',
    '-out',
    'server-cert.pem',
    '-days',
    '2',
    '-extfile',
    'ext.cnf',
  ]);
}
