// The reader's decisions against a fake vSphere session in the test (answers written as vSphere writes them), for
// what vcsim cannot show: a snapshot without a change id (tracking just enabled, or off), a `"*"` query vSphere
// refuses, areas that are not 512-byte aligned or that run on across pages. No bytes are read here.
import {
  type ChangedExtent,
  type Checkpoint,
  type Disk,
  type DiskSnapshot,
  type ExtentReadSession,
  InvalidArgumentError,
  PermissionError,
} from '@drkit/core';
import { describe, expect, it } from 'vitest';
import { startFakeNbdServer } from '../test/nbd/fake-nbd-server.js';
import type { RangeRequest } from './soap/https-range-client.js';
import type { VimSoapClient } from './soap/vim-soap-client.js';
import { parseXml, type XmlElement } from './soap/xml-tree.js';
import {
  createVmwareChangedBlockReader,
  VmwareDataPathNotBuiltError,
  wholeByAllocation,
} from './vmware-changed-block-reader.js';
import { createConnectionBudget, VmwareConnectionLimitError } from './vmware-connection-budget.js';
import { faultError } from './vmware-errors.js';
import { resolveVmwareOptions } from './vmware-options.js';
import type { ServiceContent, VmwareSession } from './vmware-session.js';
import type { VmwareDiskSnapshotRef } from './vmware-snapshots.js';

const MiB = 1024 * 1024;
const CAPACITY = 4 * MiB;

interface FakeVsphere {
  trackingEnabled: boolean;
  /** Pages of QueryChangedDiskAreas by startOffset: [length, areas]. */
  pages: Map<number, readonly [number, readonly (readonly [number, number])[]]>;
  refuseAll: boolean;
  /** Thrown by every QueryChangedDiskAreas when set (not a change id vSphere refuses: deciding fails). */
  failWith?: Error;
  /** The disk's file in the snapshot's configuration. */
  fileName?: string;
  readonly queries: { startOffset: number; changeId: string }[];
}

function fakeSession(fake: FakeVsphere): VmwareSession {
  const ref = (name: string, type: string, value: string) => `<${name} type="${type}">${value}</${name}>`;
  const object = (type: string, value: string, name: string, val: string) =>
    `<objects>${ref('obj', type, value)}<propSet><name>${name}</name>${val}</propSet></objects>`;
  function answer(method: string, body: string): string {
    if (method === 'RetrievePropertiesEx') {
      const path = /<pathSet>([^<]+)<\/pathSet>/.exec(body)?.[1];
      let result = '';
      if (path === 'parent' && body.includes('>vm-1<')) {
        result = object('VirtualMachine', 'vm-1', 'parent', ref('val', 'Datacenter', 'datacenter-2'));
      } else if (path === 'parent') {
        result = object('Datacenter', 'datacenter-2', 'parent', ref('val', 'Folder', 'group-d1'));
      } else if (path === 'runtime.host') {
        result = object('VirtualMachine', 'vm-1', path, ref('val', 'HostSystem', 'host-1'));
      } else if (path === 'name') {
        result = object('Datacenter', 'datacenter-2', 'name', '<val>DC0</val>');
      } else if (path === 'config.changeTrackingEnabled') {
        result = object(
          'VirtualMachineSnapshot',
          'snapshot-9',
          path,
          `<val>${String(fake.trackingEnabled)}</val>`,
        );
      }
      return `<returnval>${result}</returnval>`;
    }
    if (method === 'QueryChangedDiskAreas') {
      const startOffset = Number(/<startOffset>(\d+)<\/startOffset>/.exec(body)?.[1]);
      const changeId = /<changeId>([^<]*)<\/changeId>/.exec(body)?.[1] ?? '';
      fake.queries.push({ startOffset, changeId });
      if (fake.failWith) throw fake.failWith;
      if (fake.refuseAll) throw faultError({ type: 'FileFault', message: 'no ctk file' }, method);
      const [length, areas] = fake.pages.get(startOffset) ?? [CAPACITY - startOffset, []];
      const listed = areas
        .map(
          ([start, areaLength]) =>
            `<changedArea><start>${start}</start><length>${areaLength}</length></changedArea>`,
        )
        .join('');
      return `<returnval><startOffset>${startOffset}</startOffset><length>${length}</length>${listed}</returnval>`;
    }
    throw new Error(`the fake has no ${method}`);
  }
  const sc = {
    rootFolder: { type: 'Folder', value: 'group-d1' },
    propertyCollector: { type: 'PropertyCollector', value: 'propertyCollector' },
  } as unknown as ServiceContent;
  return {
    serviceContent: async () => sc,
    async call<T>(method: string, body: string, _options?: unknown, read?: (answer: XmlElement) => T) {
      const element = parseXml(
        `<${method}Response xmlns="urn:vim25">${answer(method, body)}</${method}Response>`,
      );
      return (read ? read(element) : element) as T;
    },
    login: async () => undefined,
    logout: async () => undefined,
    cookie: async () => 'cookie',
    renew: async () => undefined,
  };
}

function setup(fake: Partial<FakeVsphere> = {}) {
  const state: FakeVsphere = {
    trackingEnabled: true,
    pages: new Map(),
    refuseAll: false,
    queries: [],
    ...fake,
  };
  const settings = resolveVmwareOptions({
    id: 'vc',
    url: 'https://vc.example.com',
    username: 'u',
    password: 'p',
    transport: 'https',
  });
  const reader = createVmwareChangedBlockReader({
    session: fakeSession(state),
    client: {} as VimSoapClient,
    settings,
    budget: createConnectionBudget(settings.limits),
  });
  const disk: Disk = { id: 'uuid-1:2000', hostId: 'uuid-1', name: 'Hard disk 1', capacityBytes: CAPACITY };
  const diskSnapshot = (changeId: string | undefined): DiskSnapshot => {
    const ref: VmwareDiskSnapshotRef = {
      vm: 'vm-1',
      snapshot: 'snapshot-9',
      deviceKey: 2000,
      changeId,
      fileName: state.fileName ?? '[ds1] vm-1/vm-1.vmdk',
      capacityBytes: CAPACITY,
    };
    return { diskId: disk.id, ref: JSON.stringify(ref) };
  };
  const base = (changeId: string): Checkpoint => ({
    diskId: disk.id,
    token: JSON.stringify({
      format: 'drkit-vmware-cbt',
      version: 1,
      vm: 'vm-1',
      deviceKey: '2000',
      changeId,
      file: '[ds1] vm-1/vm-1.vmdk',
    }),
    capacityBytes: CAPACITY,
    createdAt: new Date().toISOString(),
  });
  const open = async (changeId: string | undefined, baseChangeId?: string) =>
    (await reader.open({
      disk,
      diskSnapshot: diskSnapshot(changeId),
      chunkSize: MiB,
      ...(baseChangeId === undefined ? {} : { base: base(baseChangeId) }),
    })) as ExtentReadSession;
  return { state, open };
}

async function list(session: ExtentReadSession): Promise<ChangedExtent[]> {
  const found: ChangedExtent[] = [];
  for await (const extent of session.extents()) found.push(extent);
  return found;
}

const EPOCH = '52 aa bb cc dd ee ff 00-11 22 33 44 55 66 77 88';

describe('the VMware reader decides', () => {
  it('tracking on but no change id at the snapshot yet: full, vmware-change-tracking-enabled, every byte', async () => {
    const { state, open } = setup({ trackingEnabled: true });
    const session = await open(undefined, `${EPOCH}/3`);
    expect(session.validity).toMatchObject({ kind: 'full', reason: 'vmware-change-tracking-enabled' });
    expect(await list(session)).toEqual([{ kind: 'data', offset: 0, length: CAPACITY }]);
    expect(state.queries).toEqual([]);
    // The checkpoint says there was no change id: the next backup reads in full again, never a wrong incremental.
    expect(JSON.parse(session.checkpoint().token)).toMatchObject({ changeId: '' });
    await session.close();
  });

  it('tracking off: full, tracking-disabled; and a first backup without a change id reads every byte', async () => {
    const { open } = setup({ trackingEnabled: false });
    const off = await open(undefined, `${EPOCH}/3`);
    expect(off.validity).toMatchObject({ kind: 'full', reason: 'tracking-disabled' });
    const first = await open(undefined);
    expect(first.validity).toMatchObject({ kind: 'full', reason: 'first-backup' });
    expect((first.validity as { detail?: string }).detail).toContain('every byte');
    expect(await list(first)).toEqual([{ kind: 'data', offset: 0, length: CAPACITY }]);
  });

  it('a base without a change id, a snapshot with one: full, vmware-change-tracking-enabled, allocated areas', async () => {
    const { state, open } = setup({ pages: new Map([[0, [CAPACITY, [[MiB, 65_536]]]]]) });
    const session = await open(`${EPOCH}/1`, '');
    expect(session.validity).toMatchObject({ kind: 'full', reason: 'vmware-change-tracking-enabled' });
    expect(await list(session)).toEqual([{ kind: 'data', offset: MiB, length: 65_536 }]);
    expect(state.queries).toEqual([{ startOffset: 0, changeId: '*' }]);
  });

  it('"*" refused (FileFault): every byte, saying why', async () => {
    const { open } = setup({ refuseAll: true });
    const session = await open(`${EPOCH}/1`);
    expect(session.validity).toMatchObject({ kind: 'full', reason: 'first-backup' });
    expect((session.validity as { detail?: string }).detail).toContain('FileFault');
    expect(await list(session)).toEqual([{ kind: 'data', offset: 0, length: CAPACITY }]);
  });

  it('exact: areas rounded out to 512 bytes, merged across pages, the next page asked where the last one ended', async () => {
    const pages = new Map<number, readonly [number, readonly (readonly [number, number])[]]>([
      [
        0,
        [
          MiB,
          [
            [100, 10],
            [4096, 512],
            [MiB - 512, 512],
          ],
        ],
      ],
      [MiB, [3 * MiB, [[MiB, 1000]]]],
    ]);
    const { state, open } = setup({ pages });
    const session = await open(`${EPOCH}/5`, `${EPOCH}/4`);
    expect(session.validity).toEqual({ kind: 'exact' });
    expect(await list(session)).toEqual([
      { kind: 'data', offset: 0, length: 512 },
      { kind: 'data', offset: 4096, length: 512 },
      { kind: 'data', offset: MiB - 512, length: 512 + 1024 },
    ]);
    // Pages ahead are asked where the last one would end at the same span (MiB, 2 MiB, 3 MiB); the answer at MiB
    // covers the rest, so the other two are dropped.
    expect(state.queries.slice(0, 2)).toEqual([
      { startOffset: 0, changeId: `${EPOCH}/4` },
      { startOffset: MiB, changeId: `${EPOCH}/4` },
    ]);
    expect(state.queries.every((q) => q.changeId === `${EPOCH}/4`)).toBe(true);
    const checkpoint = session.checkpoint();
    expect(JSON.parse(checkpoint.token)).toMatchObject({
      changeId: `${EPOCH}/5`,
      vm: 'vm-1',
      deviceKey: '2000',
    });
  });

  it('pages asked ahead are used only where the list so far ends: uneven pages list exactly the walk', async () => {
    const pages = new Map<number, readonly [number, readonly (readonly [number, number])[]]>([
      [0, [MiB, [[0, 65_536]]]],
      [MiB, [MiB / 2, [[MiB + 65_536, 65_536]]]],
      [MiB + MiB / 2, [CAPACITY - MiB - MiB / 2, [[3 * MiB, 65_536]]]],
      // Asked ahead at the first page's span, never where the walk goes: its area must not be listed.
      [2 * MiB, [MiB, [[2 * MiB, 65_536]]]],
    ]);
    const { state, open } = setup({ pages });
    const session = await open(`${EPOCH}/5`, `${EPOCH}/4`);
    expect(await list(session)).toEqual([
      { kind: 'data', offset: 0, length: 65_536 },
      { kind: 'data', offset: MiB + 65_536, length: 65_536 },
      { kind: 'data', offset: 3 * MiB, length: 65_536 },
    ]);
    const asked = state.queries.map((q) => q.startOffset);
    expect(asked.slice(0, 2)).toEqual([0, MiB]);
    expect(asked).toContain(MiB + MiB / 2);
    expect(asked).toContain(2 * MiB);
    expect(asked.length).toBeLessThanOrEqual(2 + 2 * 16);
  });

  it('pages ahead are bounded: never more than 16 asked beyond the page being listed, none wasted on even pages', async () => {
    const span = 64 * 1024;
    const pageCount = CAPACITY / span;
    const pages = new Map<number, readonly [number, readonly (readonly [number, number])[]]>();
    for (let i = 0; i < pageCount; i++) pages.set(i * span, [span, [[i * span, 4096]]]);
    const { state, open } = setup({ pages });
    const session = await open(`${EPOCH}/5`, `${EPOCH}/4`);
    const listed: ChangedExtent[] = [];
    for await (const extent of session.extents()) {
      // The extent of page i is yielded while page i + 1 is listed: at most 16 pages are asked beyond that one.
      const listing = listed.length + 1;
      expect(state.queries.length).toBeLessThanOrEqual(listing + 1 + 16);
      listed.push(extent);
    }
    expect(listed).toEqual(
      Array.from({ length: pageCount }, (_, i) => ({ kind: 'data', offset: i * span, length: 4096 })),
    );
    expect(state.queries.map((q) => q.startOffset)).toEqual(
      Array.from({ length: pageCount }, (_, i) => i * span),
    );
  });

  it('another epoch: full, tracking-reset, before asking vSphere', async () => {
    const { state, open } = setup();
    const session = await open(`52 00-00/1`, `${EPOCH}/4`);
    expect(session.validity).toMatchObject({ kind: 'full', reason: 'tracking-reset' });
    expect(state.queries.map((q) => q.changeId)).toEqual(['*']);
  });

  it('HTTPS ranges refuse a snapshot whose disk file is a delta of a chain, before anything is read', async () => {
    const { state, open } = setup({ fileName: '[ds1] vm-1/vm-1-000002.vmdk' });
    const error = await open(`${EPOCH}/2`, `${EPOCH}/1`).catch((e: unknown) => e);
    expect(VmwareDataPathNotBuiltError.isInstance(error)).toBe(true);
    expect((error as VmwareDataPathNotBuiltError).transport).toBe('https');
    expect((error as Error).message).toContain('delta disk');
    expect(state.queries).toEqual([]);
  });

  it('refuses to open without a VMware disk snapshot (InvalidArgumentError)', async () => {
    const settings = resolveVmwareOptions({
      id: 'vc',
      url: 'vc',
      username: 'u',
      password: 'p',
      transport: 'https',
    });
    const reader = createVmwareChangedBlockReader({
      session: fakeSession({ trackingEnabled: true, pages: new Map(), refuseAll: false, queries: [] }),
      client: {} as VimSoapClient,
      settings,
      budget: createConnectionBudget(settings.limits),
    });
    const disk: Disk = { id: 'd', hostId: 'h', name: 'd', capacityBytes: CAPACITY };
    const error = await reader.open({ disk, chunkSize: MiB }).catch((e: unknown) => e);
    expect(InvalidArgumentError.isInstance(error)).toBe(true);
  });
});

describe('HTTPS sessions and the per-host connection budget', () => {
  function budgeted(connectionsPerHost: number) {
    const settings = resolveVmwareOptions({
      id: 'vc',
      url: 'vc',
      username: 'u',
      password: 'p',
      transport: 'https',
      maxConcurrentReads: 2,
      limits: { connectionsPerHost },
    });
    const budget = createConnectionBudget(settings.limits);
    let inFlight = 0;
    let maxInFlight = 0;
    const perFile = new Map<string, { now: number; max: number }>();
    const client = {
      ranges: {
        async get(request: RangeRequest) {
          const file = perFile.get(request.path) ?? { now: 0, max: 0 };
          perFile.set(request.path, file);
          inFlight += 1;
          file.now += 1;
          maxInFlight = Math.max(maxInFlight, inFlight);
          file.max = Math.max(file.max, file.now);
          await new Promise((resolve) => setTimeout(resolve, 1));
          inFlight -= 1;
          file.now -= 1;
          const data = request.allocate(request.length).fill(7);
          return {
            status: 206,
            data,
            contentRange: `bytes ${request.offset}-${request.offset + request.length - 1}/${CAPACITY}`,
          };
        },
        close() {},
      },
    } as unknown as VimSoapClient;
    const reader = createVmwareChangedBlockReader({
      session: fakeSession({ trackingEnabled: true, pages: new Map(), refuseAll: false, queries: [] }),
      client,
      settings,
      budget,
    });
    const open = (name: string, deadline?: number) => {
      const disk: Disk = { id: `uuid-1:${name}`, hostId: 'uuid-1', name, capacityBytes: CAPACITY };
      const ref: VmwareDiskSnapshotRef = {
        vm: 'vm-1',
        snapshot: 'snapshot-9',
        deviceKey: 2000,
        changeId: `${EPOCH}/1`,
        fileName: `[ds1] vm-1/${name}.vmdk`,
        capacityBytes: CAPACITY,
      };
      return reader.open({
        disk,
        diskSnapshot: { diskId: disk.id, ref: JSON.stringify(ref) },
        chunkSize: MiB,
        ...(deadline === undefined ? {} : { deadline }),
      }) as Promise<ExtentReadSession>;
    };
    const readAll = (session: ExtentReadSession) =>
      Promise.all([0, 1, 2, 3].map((i) => session.read({ offset: i * MiB, length: MiB })));
    return { budget, open, readAll, maxInFlight: () => maxInFlight, perFile };
  }

  it('two disks on one host, budget 2, 2 reads wanted each: never more than 2 requests in flight, the second after the first closes', async () => {
    const { budget, open, readAll, maxInFlight } = budgeted(2);
    const a = await open('a');
    expect(budget.inUse('host-1')).toBe(2);
    let bOpened = false;
    const b = open('b').then((session) => {
      bOpened = true;
      return session;
    });
    await readAll(a);
    expect(bOpened).toBe(false);
    await a.close();
    const second = await b;
    const data = await readAll(second);
    expect(data.every((r) => r.data.length === MiB && r.data[0] === 7)).toBe(true);
    await second.close();
    expect(maxInFlight()).toBe(2);
    expect(budget.inUse()).toBe(0);
  });

  it('budget 3: the second session gets 1 and reads one range at a time; the third times out with VmwareConnectionLimitError', async () => {
    const { budget, open, readAll, maxInFlight, perFile } = budgeted(3);
    const a = await open('a');
    const b = await open('b');
    expect(budget.inUse('host-1')).toBe(3);
    const error = await open('c', Date.now() + 20).catch((e: unknown) => e);
    expect(VmwareConnectionLimitError.isInstance(error)).toBe(true);
    await Promise.all([readAll(a), readAll(b)]);
    expect(maxInFlight()).toBe(3);
    const max = (name: string) => [...perFile].find(([path]) => path.includes(`/${name}-flat.vmdk`))?.[1].max;
    expect([max('a'), max('b')]).toEqual([2, 1]);
    await a.close();
    await b.close();
    await b.close(); // idempotent: given back once
    expect(budget.inUse()).toBe(0);
  });
});

describe('NBD sessions of the reader and the per-host connection budget', () => {
  it('a session whose change set cannot be decided stops waiting for a connection: the error, nothing held', async () => {
    const server = await startFakeNbdServer({ content: Buffer.alloc(CAPACITY) });
    try {
      const settings = resolveVmwareOptions({
        id: 'vc',
        url: 'vc',
        username: 'u',
        password: 'p',
        transport: 'nbd',
        limits: { connectionsPerHost: 2 },
        nbd: {
          locate: async () => ({ ...(server.address as { socketPath: string }), connections: 2 }),
        },
      });
      const budget = createConnectionBudget(settings.limits);
      const denied = new PermissionError('NoPermission: VirtualMachine.Provisioning.DiskRandomRead');
      const reader = createVmwareChangedBlockReader({
        session: fakeSession({
          trackingEnabled: true,
          pages: new Map(),
          refuseAll: false,
          queries: [],
          failWith: denied,
        }),
        client: {} as VimSoapClient,
        settings,
        budget,
      });
      const held = await budget.acquire('host-1', 2, {}); // another disk of host-1 holds both
      const disk: Disk = { id: 'uuid-1:2000', hostId: 'uuid-1', name: 'd', capacityBytes: CAPACITY };
      const ref: VmwareDiskSnapshotRef = {
        vm: 'vm-1',
        snapshot: 'snapshot-9',
        deviceKey: 2000,
        changeId: `${EPOCH}/1`,
        fileName: '[ds1] vm-1/vm-1.vmdk',
        capacityBytes: CAPACITY,
      };
      // No deadline: without stopping the wait this would hang until `held` is released.
      const error = await reader
        .open({ disk, diskSnapshot: { diskId: disk.id, ref: JSON.stringify(ref) }, chunkSize: MiB })
        .catch((e: unknown) => e);
      expect(error).toBe(denied);
      expect([budget.waiting(), budget.inUse(), server.connections()]).toEqual([0, 2, 0]);
      held.release();
      expect(budget.inUse()).toBe(0);
    } finally {
      await server.close();
    }
  });
});

describe('wholeByAllocation', () => {
  async function run(
    capacity: number,
    allocation: readonly (readonly [number, number, boolean])[],
  ): Promise<unknown[]> {
    async function* source() {
      for (const [offset, length, zero] of allocation) yield { offset, length, zero };
    }
    const out: unknown[] = [];
    for await (const extent of wholeByAllocation(source, capacity, {})) out.push(extent);
    return out;
  }

  it('lists whole zero blocks as zero and the rest as data, 512-aligned, neighbours merged', async () => {
    expect(
      await run(8192, [
        [0, 1000, false],
        [1000, 3000, true], // zeros from 1000 to 4000: only [1024, 3584) is whole blocks
        [4000, 96, false],
        [4096, 4096, true], // to the end: zero up to the capacity
      ]),
    ).toEqual([
      { kind: 'data', offset: 0, length: 1024 },
      { kind: 'zero', offset: 1024, length: 2560 },
      { kind: 'data', offset: 3584, length: 512 },
      { kind: 'zero', offset: 4096, length: 4096 },
    ]);
  });

  it('reads what the block status did not describe, and a zero extent smaller than a block', async () => {
    expect(
      await run(4096, [
        [0, 512, true],
        [600, 100, true],
        [2048, 1024, true],
      ]),
    ).toEqual([
      { kind: 'zero', offset: 0, length: 512 },
      { kind: 'data', offset: 512, length: 1536 },
      { kind: 'zero', offset: 2048, length: 1024 },
      { kind: 'data', offset: 3072, length: 1024 },
    ]);
  });
});
