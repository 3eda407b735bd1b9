// The HTTPS datastore range reader against a fake file service in the test (a Node HTTPS server on 127.0.0.1,
// port 0, with a certificate made by openssl for this run): what a 206 must look like, and how every other answer
// maps to a typed error. vcsim's own file service is exercised by the integration tests.
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AuthenticationError,
  NotFoundError,
  PermissionError,
  SourceProtocolError,
  ThrottledError,
  TimeoutError,
  UnreachableError,
} from '@drkit/core';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createVimSoapClient, type VimSoapClient } from './soap/vim-soap-client.js';
import { resolveTls } from './soap/vmware-tls.js';
import {
  createDatastoreRangeReader,
  type DatastoreRangeReader,
  flatFileOf,
} from './vmware-datastore-ranges.js';
import type { VmwareSession } from './vmware-session.js';

const FILE = Buffer.alloc(1 << 20);
for (let i = 0; i < FILE.length; i += 1) FILE[i] = (i * 7 + (i >> 8)) % 256;

type Behaviour = (range: { start: number; end: number }, res: ServerResponse, cookie: string) => void;

let dir: string;
let server: Server;
let client: VimSoapClient;
let reader: DatastoreRangeReader;
let behaviour: Behaviour;
let requests: { url: string; cookie: string; range: string }[];
let cookie = 'first';
let renewals = 0;
let connections = 0;
let certificatePem = '';
let sdkUrlOfServer: URL;

const honest: Behaviour = ({ start, end }, res) => {
  res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${FILE.length}` });
  res.end(FILE.subarray(start, end + 1));
};

function run(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile(command, args, { cwd: dir }, (error, _out, stderr) =>
      error ? reject(new Error(`${command}: ${stderr}`)) : resolve(),
    ),
  );
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drkit-vmware-ranges-'));
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-days',
    '1',
    '-subj',
    '/CN=127.0.0.1',
    '-addext',
    'subjectAltName=IP:127.0.0.1',
    '-keyout',
    'key.pem',
    '-out',
    'cert.pem',
  ]);
  const cert = await readFile(join(dir, 'cert.pem'), 'utf8');
  certificatePem = cert;
  const key = await readFile(join(dir, 'key.pem'), 'utf8');
  server = createServer({ cert, key }, (req, res) => {
    const range = req.headers.range ?? '';
    const sent = /vmware_soap_session=([^;]*)/.exec(req.headers.cookie ?? '')?.[1] ?? '';
    requests.push({ url: req.url ?? '', cookie: sent, range });
    const match = /^bytes=(\d+)-(\d+)$/.exec(range);
    behaviour({ start: Number(match?.[1]), end: Number(match?.[2]) }, res, sent);
  });
  server.on('secureConnection', () => {
    connections += 1;
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const sdkUrl = new URL(`https://127.0.0.1:${port}/sdk`);
  sdkUrlOfServer = sdkUrl;
  client = createVimSoapClient({
    sdkUrl,
    tls: resolveTls({ ca: cert }),
    requestTimeoutMs: 10_000,
    soapAction: 'urn:vim25/6.7',
  });
  const session = {
    cookie: async () => cookie,
    renew: async () => {
      renewals += 1;
      cookie = `renewed-${renewals}`;
    },
  } as unknown as VmwareSession;
  reader = createDatastoreRangeReader({
    client,
    session,
    sdkUrl,
    datacenterPath: 'Folder A/DC 1',
    file: { datastore: 'datastore 1', path: 'vm 1/disk1-flat.vmdk' },
    requestTimeoutSeconds: 10,
  });
});

afterAll(async () => {
  client?.close();
  server?.closeAllConnections();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  await rm(dir, { recursive: true, force: true });
});

beforeEach(() => {
  behaviour = honest;
  requests = [];
  cookie = 'first';
  renewals = 0;
});

describe('datastore ranges', () => {
  it('GETs the file with the datacenter, datastore, range and cookie, into the allocated buffer', async () => {
    const target = new Uint8Array(4096).fill(0xdb);
    const data = await reader.read(65_536, 4096, { allocate: () => target });
    expect(data).toBe(target);
    expect(Buffer.from(data).equals(FILE.subarray(65_536, 65_536 + 4096))).toBe(true);
    expect(requests).toEqual([
      {
        url: '/folder/vm%201/disk1-flat.vmdk?dcPath=Folder+A%2FDC+1&dsName=datastore+1',
        cookie: 'first',
        range: 'bytes=65536-69631',
      },
    ]);
  });

  it('refuses a 200, another Content-Range, a short and a long body', async () => {
    const answers: Behaviour[] = [
      (_r, res) => res.writeHead(200).end(FILE),
      ({ start, end }, res) => {
        res.writeHead(206, { 'content-range': `bytes ${start + 512}-${end + 512}/${FILE.length}` });
        res.end(FILE.subarray(start + 512, end + 513));
      },
      ({ start, end }, res) => {
        res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${FILE.length}` });
        res.end(FILE.subarray(start, end));
      },
      ({ start, end }, res) => {
        res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${FILE.length}` });
        res.end(FILE.subarray(start, end + 100));
      },
    ];
    for (const answer of answers) {
      behaviour = answer;
      const error = await reader.read(0, 1024, {}).catch((e: unknown) => e);
      expect(SourceProtocolError.isInstance(error), String(error)).toBe(true);
    }
  });

  it('logs in again once on 401, then says AuthenticationError', async () => {
    behaviour = (range, res, sent) =>
      sent === 'renewed-1' ? honest(range, res, sent) : res.writeHead(401).end();
    const data = await reader.read(0, 512, {});
    expect(Buffer.from(data).equals(FILE.subarray(0, 512))).toBe(true);
    expect(requests.map((r) => r.cookie)).toEqual(['first', 'renewed-1']);
    behaviour = (_r, res) => res.writeHead(401).end();
    const error = await reader.read(0, 512, {}).catch((e: unknown) => e);
    expect(AuthenticationError.isInstance(error)).toBe(true);
  });

  it('maps 403, 404, 429, 500 and 503 to typed errors', async () => {
    const expected = [
      [403, PermissionError.isInstance, false],
      [404, NotFoundError.isInstance, false],
      [429, ThrottledError.isInstance, true],
      [500, SourceProtocolError.isInstance, false],
      [503, UnreachableError.isInstance, true],
    ] as const;
    for (const [status, isInstance, retryable] of expected) {
      behaviour = (_r, res) => res.writeHead(status, { 'retry-after': '2' }).end('no');
      const error = await reader.read(0, 512, {}).catch((e: unknown) => e);
      expect(isInstance(error), `${status}: ${String(error)}`).toBe(true);
      expect((error as { retryable: boolean }).retryable, `${status} retryable`).toBe(retryable);
    }
  });

  it('rejects with the signal reason when aborted, and with a TimeoutError past the deadline', async () => {
    behaviour = ({ start }, res) => {
      // Headers and a part of the body, then nothing more.
      res.writeHead(206, { 'content-range': `bytes ${start}-${start + 65_535}/${FILE.length}` });
      res.write(FILE.subarray(start, start + 100));
    };
    const controller = new AbortController();
    const reason = { why: 'aborted on purpose' };
    const reading = reader.read(0, 65_536, { signal: controller.signal });
    setTimeout(() => controller.abort(reason), 100);
    await expect(reading).rejects.toBe(reason);
    const late = await reader.read(0, 65_536, { deadline: Date.now() + 200 }).catch((e: unknown) => e);
    expect(TimeoutError.isInstance(late), String(late)).toBe(true);
    const before = AbortSignal.abort(reason);
    await expect(reader.read(0, 512, { signal: before })).rejects.toBe(reason);
  });
});

describe('datastore ranges: the HTTP/1.1 connections', () => {
  it('keeps one connection alive across reads, in order', async () => {
    server.closeAllConnections();
    await new Promise((resolve) => setTimeout(resolve, 20));
    const before = connections;
    for (const offset of [0, 4096, 8192, 12_288]) {
      const data = await reader.read(offset, 4096, {});
      expect(Buffer.from(data).equals(FILE.subarray(offset, offset + 4096))).toBe(true);
    }
    expect(connections - before).toBe(1);
  });

  it('reads a chunked 206 answer (no Content-Length), and a long body across many TLS records', async () => {
    behaviour = ({ start, end }, res) => {
      res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${FILE.length}` });
      const body = FILE.subarray(start, end + 1);
      for (let at = 0; at < body.length; at += 3000) res.write(body.subarray(at, at + 3000));
      res.end();
    };
    const data = await reader.read(1000, 200_000, {});
    expect(Buffer.from(data).equals(FILE.subarray(1000, 201_000))).toBe(true);
    behaviour = honest;
    const whole = await reader.read(0, FILE.length, {});
    expect(Buffer.from(whole).equals(FILE)).toBe(true);
  });

  it('opens a new connection when the server closed the idle one, and after Connection: close', async () => {
    await reader.read(0, 512, {});
    const before = connections;
    server.closeAllConnections();
    await new Promise((resolve) => setTimeout(resolve, 20));
    const data = await reader.read(512, 512, {});
    expect(Buffer.from(data).equals(FILE.subarray(512, 1024))).toBe(true);
    expect(connections - before).toBe(1);
    behaviour = ({ start, end }, res) => {
      res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${FILE.length}`, connection: 'close' });
      res.end(FILE.subarray(start, end + 1));
    };
    await reader.read(0, 512, {});
    behaviour = honest;
    await reader.read(0, 512, {});
    expect(connections - before).toBe(2);
  });

  it('fails a read whose connection drops mid-answer with a retryable UnreachableError', async () => {
    behaviour = ({ start, end }, res) => {
      res.writeHead(206, {
        'content-range': `bytes ${start}-${end}/${FILE.length}`,
        'content-length': String(end - start + 1),
      });
      res.write(FILE.subarray(start, start + 100), () => res.socket?.destroy());
    };
    const error = await reader.read(0, 65_536, {}).catch((e: unknown) => e);
    expect(UnreachableError.isInstance(error), String(error)).toBe(true);
    expect((error as { retryable: boolean }).retryable).toBe(true);
    behaviour = honest;
    const data = await reader.read(0, 512, {});
    expect(Buffer.from(data).equals(FILE.subarray(0, 512))).toBe(true);
  });
});

describe('datastore ranges: TLS trust', () => {
  function readerWith(tls: Parameters<typeof resolveTls>[0]) {
    const other = createVimSoapClient({
      sdkUrl: sdkUrlOfServer,
      tls: resolveTls(tls),
      requestTimeoutMs: 10_000,
      soapAction: 'urn:vim25/6.7',
    });
    const session = { cookie: async () => 'c', renew: async () => undefined } as unknown as VmwareSession;
    return {
      other,
      reader: createDatastoreRangeReader({
        client: other,
        session,
        sdkUrl: sdkUrlOfServer,
        datacenterPath: 'DC',
        file: { datastore: 'ds', path: 'vm/disk1-flat.vmdk' },
        requestTimeoutSeconds: 10,
      }),
    };
  }

  it('reads with the certificate pinned by its SHA-256 thumbprint', async () => {
    const thumbprint = new X509Certificate(certificatePem).fingerprint256;
    const { other, reader: pinned } = readerWith({ thumbprint });
    try {
      const data = await pinned.read(4096, 4096, {});
      expect(Buffer.from(data).equals(FILE.subarray(4096, 8192))).toBe(true);
    } finally {
      other.close();
    }
  });

  it('refuses a certificate nothing trusts, not retryable, naming the options', async () => {
    const { other, reader: untrusted } = readerWith(undefined);
    try {
      const error = await untrusted.read(0, 512, {}).catch((e: unknown) => e);
      expect(UnreachableError.isInstance(error), String(error)).toBe(true);
      expect((error as { retryable: boolean }).retryable).toBe(false);
      expect(String((error as Error).message)).toMatch(/tls\.ca.*tls\.thumbprint/);
    } finally {
      other.close();
    }
  });
});

describe('flatFileOf', () => {
  it('names the -flat.vmdk of a flat disk and refuses a delta of a snapshot chain', () => {
    expect(flatFileOf('[LocalDS_0] DC0_H0_VM0/disk1.vmdk')).toEqual({
      file: { datastore: 'LocalDS_0', path: 'DC0_H0_VM0/disk1-flat.vmdk' },
    });
    expect(flatFileOf('[ds 1] vm/disk1-000002.vmdk')).toMatchObject({
      problem: expect.stringContaining('delta disk'),
    });
    expect(flatFileOf(undefined)).toHaveProperty('problem');
    expect(flatFileOf('/vmfs/volumes/x/disk.vmdk')).toHaveProperty('problem');
  });
});
