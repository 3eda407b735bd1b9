// NBD read sessions share their ESXi host's connection budget: counted on the server side (a fake NBD server in
// the test), two disks on one host with a budget of 2 that want 2 connections each never hold more than 2 open at
// once; connections go back on close and when connecting fails; a session that gets none by its deadline fails
// with VmwareConnectionLimitError without opening any.
import { SourceProtocolError } from '@drkit/core';
import { afterEach, describe, expect, it } from 'vitest';
import { type FakeNbdServer, pattern, startFakeNbdServer } from '../test/nbd/fake-nbd-server.js';
import { createConnectionBudget, VmwareConnectionLimitError } from './vmware-connection-budget.js';
import { openNbdSource, type VmwareNbdDisk, type VmwareNbdOptions } from './vmware-nbd-transport.js';

const KiB = 1024;
const content = pattern(256 * KiB);
const servers: FakeNbdServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

const disk = (diskId: string, capacityBytes = content.length): VmwareNbdDisk => ({
  diskId,
  vm: 'vm-1',
  snapshot: 'snapshot-9',
  deviceKey: diskId === 'a' ? 2000 : 2001,
  fileName: `[ds1] vm-1/${diskId}.vmdk`,
  capacityBytes,
  esxiHost: 'host-1',
});

async function setup() {
  const server = await startFakeNbdServer({ content });
  servers.push(server);
  const released: string[] = [];
  const nbd: VmwareNbdOptions = {
    async locate(which) {
      return {
        ...(server.address as { socketPath: string }),
        connections: 2,
        multiConn: 'always',
        release: async () => void released.push(which.diskId),
      };
    },
  };
  return { server, nbd, released };
}

describe('NBD sessions and the per-host connection budget', () => {
  it('two disks on one host, budget 2, 2 connections wanted each: never more than 2 open, the second after the first closes', async () => {
    const { server, nbd, released } = await setup();
    const budget = createConnectionBudget({ connectionsPerHost: 2, connectionsPerVcenter: 52 });
    const first = await openNbdSource(nbd, disk('a'), 60, {}, budget);
    expect([server.open(), budget.inUse('host-1')]).toEqual([2, 2]);
    let secondOpened = false;
    const second = openNbdSource(nbd, disk('b'), 60, {}, budget).then((source) => {
      secondOpened = true;
      return source;
    });
    // Bytes still flow on the first while the second waits; the waiting one has no connection.
    const read = await Promise.all(
      [0, 64 * KiB, 128 * KiB, 192 * KiB].map((at) => first.read(at, 64 * KiB, {})),
    );
    expect(Buffer.concat(read).equals(content)).toBe(true);
    expect(secondOpened).toBe(false);
    expect(budget.waiting()).toBe(1);
    expect(server.connections()).toBe(2);
    await first.close();
    const next = await second;
    expect(budget.inUse('host-1')).toBe(2);
    expect(Buffer.from(await next.read(100, 1000, {})).equals(content.subarray(100, 1100))).toBe(true);
    await next.close();
    expect(server.maxOpen()).toBe(2);
    expect(server.connections()).toBe(4);
    expect([budget.inUse(), released]).toEqual([0, ['a', 'b']]);
  });

  it('a session that cannot connect (the export is another size) gives its connections back', async () => {
    const { nbd, released } = await setup();
    const budget = createConnectionBudget({ connectionsPerHost: 2, connectionsPerVcenter: 52 });
    const error = await openNbdSource(nbd, disk('a', content.length * 2), 60, {}, budget).catch(
      (e: unknown) => e,
    );
    expect(SourceProtocolError.isInstance(error)).toBe(true);
    expect([budget.inUse(), released]).toEqual([0, ['a']]);
  });

  it('a session whose host stays full until its deadline fails with VmwareConnectionLimitError, never opening one', async () => {
    const { server, nbd, released } = await setup();
    const budget = createConnectionBudget({ connectionsPerHost: 2, connectionsPerVcenter: 52 });
    const first = await openNbdSource(nbd, disk('a'), 60, {}, budget);
    const error = await openNbdSource(nbd, disk('b'), 60, { deadline: Date.now() + 20 }, budget).catch(
      (e: unknown) => e,
    );
    expect(VmwareConnectionLimitError.isInstance(error)).toBe(true);
    expect(error).toMatchObject({ code: 'TIMEOUT', retryable: true, esxiHost: 'host-1' });
    expect(server.connections()).toBe(2);
    expect(released).toEqual(['b']); // the location of the session that gave up is released
    await first.close();
    expect([budget.inUse(), budget.waiting()]).toEqual([0, 0]);
  });
});
