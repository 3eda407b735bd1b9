import {
  InvalidSettingsError,
  NotFoundError,
  PermissionError,
  SourceProtocolError,
  UnreachableError,
} from '@drkit/core';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type FakeNbdServer,
  type FakeNbdServerOptions,
  OPT,
  pattern,
  REP,
  startFakeNbdServer,
} from '../../test/nbd/fake-nbd-server.js';
import { connectNbdExport } from './connect-nbd-export.js';

const servers: FakeNbdServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function fake(options: Partial<FakeNbdServerOptions> = {}): Promise<FakeNbdServer> {
  const server = await startFakeNbdServer({ content: pattern(64 * 1024), ...options });
  servers.push(server);
  return server;
}

function refuse(option: number, type: number, message = '') {
  return (sent: number) =>
    sent === option ? { replies: [{ type, data: Buffer.from(message) }] } : undefined;
}

describe('NBD handshake', () => {
  it('negotiates structured replies, base:allocation and NBD_OPT_GO with block sizes', async () => {
    const server = await fake({ blockSize: [512, 4096, 1024 * 1024] });
    await using disk = await connectNbdExport({ ...server.address, exportName: 'disk-1' });
    expect(disk.info).toMatchObject({
      exportName: 'disk-1',
      size: 64 * 1024,
      readOnly: true,
      canMultiConn: true,
      structuredReplies: true,
      allocation: true,
      blockSize: { minimum: 512, preferred: 4096, maximum: 1024 * 1024 },
      tls: false,
    });
    expect(server.options.map((option) => option.option)).toEqual([
      OPT.STRUCTURED_REPLY,
      OPT.SET_META_CONTEXT,
      OPT.GO,
    ]);
    // NBD_OPT_GO names the export and asks for NBD_INFO_BLOCK_SIZE (3).
    const go = server.options.at(-1)!.data;
    expect(go.subarray(4, 4 + go.readUInt32BE(0)).toString()).toBe('disk-1');
    expect(go.readUInt16BE(4 + 6)).toBe(1);
    expect(go.readUInt16BE(4 + 6 + 2)).toBe(3);
  });

  it('assumes the protocol defaults when the server sends no block sizes', async () => {
    const server = await fake();
    await using disk = await connectNbdExport({ ...server.address });
    expect(disk.info.blockSize).toEqual({ minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 });
  });

  it('maps option errors to typed errors', async () => {
    const cases: [number, number, (error: unknown) => boolean][] = [
      [OPT.GO, REP.ERR_UNKNOWN, NotFoundError.isInstance],
      [OPT.GO, REP.ERR_POLICY, PermissionError.isInstance],
      [OPT.GO, REP.ERR_SHUTDOWN, UnreachableError.isInstance],
      [OPT.GO, REP.ERR_INVALID, SourceProtocolError.isInstance],
      [OPT.STRUCTURED_REPLY, REP.ERR_TLS_REQD, InvalidSettingsError.isInstance],
    ];
    for (const [option, type, check] of cases) {
      const server = await fake({ onOption: refuse(option, type, 'said the server') });
      const error = await connectNbdExport({ ...server.address, exportName: 'x' }).catch((caught) => caught);
      expect(check(error), `${option}/${type.toString(16)}: ${error}`).toBe(true);
      expect(error.message).toContain('said the server');
      // A refusal ends with a soft disconnect.
      expect(server.options.at(-1)!.option).toBe(OPT.ABORT);
    }
  });

  it('refuses a server that requires TLS with an error naming the tls setting', async () => {
    const server = await fake({ onOption: () => ({ replies: [{ type: REP.ERR_TLS_REQD }] }) });
    const error = await connectNbdExport({ ...server.address }).catch((caught) => caught);
    expect(InvalidSettingsError.isInstance(error)).toBe(true);
    expect(error.field).toBe('tls');
    expect(error.message).toMatch(/requires TLS/);
  });

  it('uses simple replies and no block status when the server refuses structured replies', async () => {
    const server = await fake({ onOption: refuse(OPT.STRUCTURED_REPLY, REP.ERR_UNSUP) });
    await using disk = await connectNbdExport({ ...server.address });
    expect(disk.info).toMatchObject({ structuredReplies: false, allocation: false });
    expect(server.options.map((option) => option.option)).toEqual([OPT.STRUCTURED_REPLY, OPT.GO]);
    expect(Buffer.from(await disk.read({ offset: 8, length: 16 }))).toEqual(
      pattern(64 * 1024).subarray(8, 24),
    );
    const extents = [];
    for await (const extent of disk.extents()) extents.push(extent);
    expect(extents).toEqual([{ offset: 0, length: 64 * 1024, zero: false, hole: false }]);
  });

  it('falls back to NBD_OPT_EXPORT_NAME when the server has no NBD_OPT_GO', async () => {
    const server = await fake({ onOption: refuse(OPT.GO, REP.ERR_UNSUP) });
    await using disk = await connectNbdExport({ ...server.address });
    expect(server.options.at(-1)!.option).toBe(OPT.EXPORT_NAME);
    expect(disk.info).toMatchObject({ size: 64 * 1024, allocation: false, structuredReplies: true });
    expect(Buffer.from(await disk.read({ offset: 0, length: 1024 }))).toEqual(pattern(1024));
  });

  it('speaks to a server that is newstyle but not fixed newstyle (NBD_OPT_EXPORT_NAME only, with zeroes)', async () => {
    const server = await fake({ handshakeFlags: 0 });
    await using disk = await connectNbdExport({ ...server.address });
    expect(server.options.map((option) => option.option)).toEqual([OPT.EXPORT_NAME]);
    expect(disk.info).toMatchObject({ size: 64 * 1024, structuredReplies: false, allocation: false });
    expect(Buffer.from(await disk.read({ offset: 4096, length: 4096 }))).toEqual(
      pattern(64 * 1024).subarray(4096, 8192),
    );
  });

  it('rejects what is not a newstyle NBD server', async () => {
    const oldstyle = Buffer.alloc(152);
    oldstyle.writeBigUInt64BE(0x4e42444d41474943n, 0);
    oldstyle.writeBigUInt64BE(0x00420281861253n, 8);
    for (const [greeting, message] of [
      [oldstyle, /oldstyle/],
      [Buffer.from('SSH-2.0-OpenSSH_9.2\r\n'), /not an NBD server/],
    ] as const) {
      const server = await fake({ greeting });
      const error = await connectNbdExport({ ...server.address }).catch((caught) => caught);
      expect(SourceProtocolError.isInstance(error)).toBe(true);
      expect(error.message).toMatch(message);
    }
  });

  it('rejects sizes and block sizes that break the protocol', async () => {
    for (const [options, message] of [
      [{ advertisedSize: 1n << 60n }, /beyond 2\^53/],
      [{ blockSize: [3, 4096, 65536] as const }, /minimum block size of 3/],
      [{ blockSize: [512, 256, 65536] as const }, /preferred block size of 256/],
      [{ blockSize: [512, 4096, 1024] as const }, /maximum payload of 1024/],
      [{ transmissionFlags: 2 }, /NBD_FLAG_HAS_FLAGS/],
    ] as const) {
      const server = await fake(options);
      const error = await connectNbdExport({ ...server.address }).catch((caught) => caught);
      expect(SourceProtocolError.isInstance(error), String(error)).toBe(true);
      expect(error.message).toMatch(message);
    }
  });

  it('rejects an option reply that answers another option, or is far too long', async () => {
    const server = await fake({
      onOption: (option) =>
        option === OPT.GO ? { replies: [{ type: REP.ACK, data: Buffer.alloc(70_000) }] } : undefined,
    });
    const error = await connectNbdExport({ ...server.address }).catch((caught) => caught);
    expect(SourceProtocolError.isInstance(error)).toBe(true);
    expect(error.message).toMatch(/reply of 70000 bytes/);
  });

  it('says a server that does not listen is unreachable (retryable)', async () => {
    const server = await fake({ transport: 'tcp' });
    const address = server.address;
    await server.close();
    servers.length = 0;
    const error = await connectNbdExport({ ...address }).catch((caught) => caught);
    expect(UnreachableError.isInstance(error)).toBe(true);
    expect(error.retryable).toBe(true);
    const missing = await connectNbdExport({ socketPath: '/nonexistent/nbd.sock' }).catch((caught) => caught);
    expect(UnreachableError.isInstance(missing)).toBe(true);
  });

  it('validates its options, naming the field', async () => {
    const cases: [Parameters<typeof connectNbdExport>[0], string][] = [
      [{}, 'host'],
      [{ host: '127.0.0.1', socketPath: '/x' }, 'host'],
      [{ host: '127.0.0.1', port: 70000 }, 'port'],
      [{ socketPath: '/x', connections: 0 }, 'connections'],
      [{ socketPath: '/x', connections: 17 }, 'connections'],
      [{ socketPath: '/x', maxRequestsInFlight: 0 }, 'maxRequestsInFlight'],
      [{ socketPath: '/x', maxRequestBytes: 100 }, 'maxRequestBytes'],
      [{ socketPath: '/x', multiConn: 'sometimes' as 'always' }, 'multiConn'],
      [{ socketPath: '/x', exportName: 'x'.repeat(5000) }, 'exportName'],
      [{ socketPath: '/x', tls: { cert: 'only a cert' } }, 'tls.key'],
    ];
    for (const [options, field] of cases) {
      const error = await connectNbdExport(options).catch((caught) => caught);
      expect(InvalidSettingsError.isInstance(error), JSON.stringify(options)).toBe(true);
      expect(error.field).toBe(field);
    }
  });
});
