// The NBD client against qemu-nbd from Debian (QEMU 7.2 on Debian 12) serving a sparse raw image: a named export
// (`-x`), read-only or not, `--allocation-depth`, on a Unix socket and on 127.0.0.1.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NotFoundError } from '@drkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectNbdExport, type NbdExtent } from '../../../src/nbd/index.js';
import { requireNbdPeers, run, type StartedNbdServer, startQemuNbd } from './nbd-servers.js';
import { expectedExtents, makeSparseImage, type SparseImage } from './sparse-image.js';

const KiB = 1024;
const MiB = 1024 * KiB;

let work: string;
let image: SparseImage;
const servers: StartedNbdServer[] = [];

async function qemuNbd(options: Omit<Parameters<typeof startQemuNbd>[0], 'file'>): Promise<StartedNbdServer> {
  const server = await startQemuNbd({ file: image.path, ...options });
  servers.push(server);
  return server;
}

async function collect(iterable: AsyncIterable<NbdExtent>): Promise<NbdExtent[]> {
  const extents: NbdExtent[] = [];
  for await (const extent of iterable) extents.push(extent);
  return extents;
}

beforeAll(async () => {
  requireNbdPeers();
  work = await mkdtemp(join(tmpdir(), 'drkit-qemu-nbd-it-'));
  image = await makeSparseImage(join(work, 'disk.raw'), 32 * MiB, [
    [64 * KiB, 64 * KiB],
    [1 * MiB, 7 * MiB],
    [20 * MiB, 128 * KiB],
    [32 * MiB - 64 * KiB, 64 * KiB],
  ]);
});

afterAll(async () => {
  await Promise.all(servers.splice(0).map((server) => server.stop()));
  if (work) await rm(work, { recursive: true, force: true });
});

describe('qemu-nbd', () => {
  it('handshakes with a named, read-only export and its block sizes', async () => {
    const server = await qemuNbd({ exportName: 'disk-0', readOnly: true, allocationDepth: true });
    await using disk = await connectNbdExport({ ...server.address, exportName: 'disk-0' });
    expect(disk.info).toMatchObject({
      exportName: 'disk-0',
      size: 32 * MiB,
      readOnly: true,
      // qemu-nbd sets NBD_FLAG_CAN_MULTI_CONN when it serves several clients (-e 8 here).
      canMultiConn: true,
      structuredReplies: true,
      allocation: true,
    });
    expect(disk.info.blockSize.minimum).toBeGreaterThanOrEqual(1);
    expect(disk.info.blockSize.maximum).toBeGreaterThanOrEqual(1 * MiB);
    const reference = JSON.parse(
      await run('nbdinfo', ['--json', `${server.uri.replace('/?', '/disk-0?')}`]),
    ) as {
      exports: { block_size_minimum?: number; block_size_preferred?: number; block_size_maximum?: number }[];
    };
    const advertised = reference.exports[0]!;
    if (advertised.block_size_minimum !== undefined) {
      expect(disk.info.blockSize).toEqual({
        minimum: advertised.block_size_minimum,
        preferred: advertised.block_size_preferred,
        maximum: advertised.block_size_maximum,
      });
    }
  });

  it('says NotFoundError for an export it does not serve', async () => {
    const server = await qemuNbd({ exportName: 'disk-0', readOnly: true });
    const error = await connectNbdExport({ ...server.address, exportName: 'disk-9' }).catch(
      (caught) => caught,
    );
    expect(NotFoundError.isInstance(error), String(error)).toBe(true);
    expect(error.message).toMatch(/disk-9/);
  });

  it('reads the image byte for byte over 127.0.0.1 with four connections', async () => {
    const server = await qemuNbd({ exportName: 'disk-0', readOnly: true, transport: 'tcp' });
    await using disk = await connectNbdExport({
      ...server.address,
      exportName: 'disk-0',
      connections: 4,
      maxRequestsInFlight: 4,
      maxRequestBytes: 512 * KiB,
    });
    expect(disk.info.connections).toBe(4);
    const reads = [];
    for (let at = 0; at < image.size; at += 2 * MiB) reads.push(disk.read({ offset: at, length: 2 * MiB }));
    const out = Buffer.concat(await Promise.all(reads));
    expect(out.equals(image.content)).toBe(true);
    expect(disk.stats()).toMatchObject({ connectionsOpened: 4, connectionsLost: 0 });
  });

  it("reports the image's holes (base:allocation), the whole export and a part of it", async () => {
    const server = await qemuNbd({ exportName: 'disk-0', readOnly: true, allocationDepth: true });
    await using disk = await connectNbdExport({ ...server.address, exportName: 'disk-0' });
    expect(await collect(disk.extents({ pageBytes: 3 * MiB }))).toEqual(expectedExtents(image));
    expect(await collect(disk.extents({ offset: 6 * MiB, length: 4 * MiB }))).toEqual([
      { offset: 6 * MiB, length: 2 * MiB, zero: false, hole: false },
      { offset: 8 * MiB, length: 2 * MiB, zero: true, hole: true },
    ]);
    // Holes read as zeros (qemu-nbd answers them with NBD_REPLY_TYPE_OFFSET_HOLE).
    const hole = await disk.read({ offset: 8 * MiB, length: 1 * MiB });
    expect(hole.every((byte) => byte === 0)).toBe(true);
  });

  it('uses one connection to an export served to one client at a time (-e 1): no NBD_FLAG_CAN_MULTI_CONN', async () => {
    // qemu-nbd sets the flag when it shares the export (-e 2 and more), read-only or not.
    const server = await qemuNbd({ exportName: 'disk-rw', readOnly: false, shared: 1 });
    await using disk = await connectNbdExport({ ...server.address, exportName: 'disk-rw', connections: 4 });
    expect(disk.info).toMatchObject({ readOnly: false, canMultiConn: false, connections: 1 });
    const reads = [];
    for (let at = 0; at < 8 * MiB; at += 256 * KiB) reads.push(disk.read({ offset: at, length: 256 * KiB }));
    expect(Buffer.concat(await Promise.all(reads)).equals(image.content.subarray(0, 8 * MiB))).toBe(true);
    expect(disk.stats().connectionsOpened).toBe(1);
  });
});
