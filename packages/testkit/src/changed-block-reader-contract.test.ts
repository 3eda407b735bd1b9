import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type Change,
  type ChangedBlockReader,
  type ChangedBlockSession,
  type ChangedExtent,
  type ChangeSetValidity,
  type Checkpoint,
  type Host,
  type HostSnapshot,
  InvalidArgumentError,
  NotFoundError,
  type Platform,
  type ReadResult,
} from '@drkit/core';
import { describe, expect, it } from 'vitest';
import {
  abandonScenario,
  type ChangedBlockReaderContractCapabilities,
  type ChangedBlockReaderFixture,
  ChangeSetChecker,
  ContractBackups,
  type ContractScenarioContext,
  checkpointFallbackScenario,
  describeChangedBlockReaderContract,
  exactIncrementalScenario,
  expectSameContent,
  fullReadReasonProblem,
  hostSnapshotProblem,
  parallelReadsScenario,
  readerProblem,
  readRangeAfterReadScenario,
  secondCallsScenario,
} from './changed-block-reader-contract.js';
import { ExtentListChecker } from './contract-extent-reads.js';
import { createKeystream } from './disk-image.js';

const BLOCK = 4096;
const KiB = 1024;
const CAPACITY = 4 * 1024 * KiB + 3 * BLOCK;
const EVERYTHING: ChangedBlockReaderContractCapabilities = {
  canWrite: true,
  canDiscard: true,
  canGrow: true,
  canShrink: true,
};

/** Ways the reference reader can be broken, each one the suite must catch. */
type Breakage =
  /** Says `exact` but lists every block of the disk. */
  | 'lies-exact'
  /** Answers the third read one byte short. */
  | 'short-read'
  /** Lists data extents 512 bytes off the 4 KiB block size. */
  | 'unaligned'
  /** Advances its change tracking on `abandon` as if it were `commit`. */
  | 'forgets-on-abandon'
  /** Closes itself when the listing ends, so `readRange` stops working before `close()`. */
  | 'range-ends-with-listing'
  /** Throws on a checkpoint it cannot parse instead of reading in full. */
  | 'throws-on-garbled'
  /** Gives a SHA-256 that does not match the bytes. */
  | 'bad-checksum';

interface MemoryFixture extends ChangedBlockReaderFixture {
  /** Most reads the reader had running at once. */
  peakReads(): number;
  /** Every outcome call of every session, in order: `commit`, `abandon`, or `none` for a close without one. */
  readonly outcomes: string[];
}

interface MemoryToken {
  readonly format: 'drkit-memory';
  readonly version: 1;
  readonly epoch: number;
  readonly generation: number;
}

function parseToken(text: string): MemoryToken | undefined {
  try {
    const token = JSON.parse(text) as Partial<MemoryToken> | null;
    if (
      token?.format === 'drkit-memory' &&
      token.version === 1 &&
      Number.isSafeInteger(token.epoch) &&
      Number.isSafeInteger(token.generation)
    ) {
      return token as MemoryToken;
    }
  } catch {}
  return undefined;
}

/**
 * A reference platform held in memory, with exact change tracking per 4 KiB block and host snapshots, reading as
 * a stream or as a list of extents read by range (three reads in flight, each waiting a turn of the event loop so
 * that they really overlap, with SHA-256 checksums and tokens). The contract suite must pass against both; the
 * local-disk provider covers the superset, snapshot-less path. `broken` makes it break one rule.
 */
function createMemoryFixture(
  capacity: number,
  options: { mode: 'stream' | 'extents'; broken?: Breakage },
): MemoryFixture {
  const { mode, broken } = options;
  let bytes = new Uint8Array(capacity);
  createKeystream('memory-platform')(bytes.subarray(0, capacity / 2));
  let generation = 1;
  /** Generation of each block's last change. */
  let blockGeneration = new Uint32Array(Math.ceil(capacity / BLOCK)).fill(1);
  /** Bumped when the disk shrinks: tracking cannot diff across it. */
  let epoch = 1;
  /** For `forgets-on-abandon`: the generation an abandon wrongly advanced the tracking to. */
  let forgotten = 0;
  const snapshots = new Map<
    string,
    { bytes: Uint8Array; generation: number; blocks: Uint32Array; epoch: number }
  >();
  let openSessions = 0;
  let reading = 0;
  let peakReads = 0;
  const outcomes: string[] = [];
  const hostId = 'memory-host';
  const diskId = 'memory-disk';
  const platformId = `memory-${mode}`;

  const mark = (offset: number, length: number) => {
    generation++;
    for (let block = Math.floor(offset / BLOCK); block * BLOCK < offset + length; block++) {
      blockGeneration[block] = generation;
    }
  };

  const reader: ChangedBlockReader = {
    mode,
    blockSize: BLOCK,
    maxConcurrentReads: mode === 'stream' ? 1 : 3,
    async open({ disk, snapshot, diskSnapshot, base, fullReason, chunkSize, signal }) {
      signal?.throwIfAborted();
      if (disk.id !== diskId) throw new NotFoundError(`no disk ${disk.id}`);
      const state = snapshot && snapshots.get(snapshot.name);
      if (!state || diskSnapshot?.diskId !== diskId) {
        throw new NotFoundError("open needs this disk's part of a snapshot of this platform");
      }
      if (!Number.isSafeInteger(chunkSize) || chunkSize % BLOCK !== 0) {
        throw new InvalidArgumentError(`chunk size ${chunkSize} is not a multiple of ${BLOCK}`);
      }
      let validity: ChangeSetValidity;
      let since = 0;
      if (!base) {
        validity = { kind: 'full', reason: fullReason ?? 'first-backup' };
      } else {
        const token = base.diskId === diskId ? parseToken(base.token) : undefined;
        if (!token) {
          if (broken === 'throws-on-garbled') throw new InvalidArgumentError('a garbled checkpoint');
          validity = { kind: 'full', reason: 'checkpoint-invalid', detail: 'not a checkpoint of this disk' };
        } else if (token.epoch !== state.epoch) {
          validity = { kind: 'full', reason: 'disk-resized' };
        } else {
          validity = { kind: 'exact' };
          since = Math.max(token.generation, broken === 'forgets-on-abandon' ? forgotten : 0);
        }
      }
      const everything = broken === 'lies-exact' && validity.kind !== 'full';
      const size = state.bytes.length;
      let closed = false;
      let told = false;
      openSessions++;
      const close = async () => {
        if (closed) return;
        closed = true;
        openSessions--;
        if (!told) outcomes.push('none');
      };
      const assertOpen = () => {
        if (closed) throw new InvalidArgumentError('the session is closed');
      };
      /** Runs of changed blocks, at most `longest` bytes, each all zeros or not. */
      function* runs(longest: number): Generator<{ offset: number; length: number; zero: boolean }> {
        for (let block = 0; block * BLOCK < size; ) {
          if (!everything && state!.blocks[block]! <= since) {
            block++;
            continue;
          }
          const start = block * BLOCK;
          while (
            block * BLOCK < size &&
            (everything || state!.blocks[block]! > since) &&
            block * BLOCK - start < longest
          ) {
            block++;
          }
          const end = Math.min(size, block * BLOCK);
          yield {
            offset: start,
            length: end - start,
            zero: state!.bytes.subarray(start, end).every((b) => b === 0),
          };
        }
      }
      const common = {
        capacityBytes: size,
        validity,
        async readRange(extent: { offset: number; length: number }) {
          assertOpen();
          if (extent.offset < 0 || extent.length <= 0 || extent.offset + extent.length > size) {
            throw new InvalidArgumentError('out of range');
          }
          return state.bytes.slice(extent.offset, extent.offset + extent.length);
        },
        checkpoint: (): Checkpoint => ({
          diskId,
          token: JSON.stringify({
            format: 'drkit-memory',
            version: 1,
            epoch: state.epoch,
            generation: state.generation,
          }),
          capacityBytes: size,
          createdAt: new Date().toISOString(),
        }),
        async commit() {
          told = true;
          outcomes.push('commit');
        },
        async abandon() {
          told = true;
          outcomes.push('abandon');
          if (broken === 'forgets-on-abandon') forgotten = state.generation;
        },
        close,
        [Symbol.asyncDispose]: close,
      };
      if (mode === 'stream') {
        const session: ChangedBlockSession = {
          ...common,
          mode: 'stream',
          async *changes(callOptions = {}): AsyncGenerator<Change> {
            for (const run of runs(64 * KiB)) {
              callOptions.signal?.throwIfAborted();
              assertOpen();
              // Over zeros (a full read) nothing needs saying; over a base, the range now reads as zeros.
              if (run.zero) {
                if (validity.kind !== 'full') yield { kind: 'zero', offset: run.offset, length: run.length };
              } else {
                yield {
                  kind: 'data',
                  offset: run.offset,
                  data: state.bytes.slice(run.offset, run.offset + run.length),
                };
              }
            }
          },
        };
        return session;
      }
      let listed = false;
      let readCount = 0;
      const session: ChangedBlockSession = {
        ...common,
        mode: 'extents',
        async *extents(callOptions = {}): AsyncGenerator<ChangedExtent> {
          if (listed) throw new InvalidArgumentError('extents() was called already');
          listed = true;
          for (const run of runs(256 * KiB)) {
            await Promise.resolve(); // a page of the listing
            callOptions.signal?.throwIfAborted();
            assertOpen();
            if (run.zero) {
              if (validity.kind !== 'full') yield { kind: 'zero', offset: run.offset, length: run.length };
            } else {
              const skew = broken === 'unaligned' ? 512 : 0;
              yield {
                kind: 'data',
                offset: run.offset + skew,
                length: run.length - skew,
                token: `m${run.offset}`,
              };
            }
          }
          if (broken === 'range-ends-with-listing') await close();
        },
        async read(request, callOptions = {}): Promise<ReadResult> {
          callOptions.signal?.throwIfAborted();
          assertOpen();
          const { offset, length } = request;
          if (offset < 0 || length <= 0 || offset + length > size)
            throw new InvalidArgumentError('out of range');
          if (!request.token?.startsWith('m')) throw new InvalidArgumentError('the listed token is missing');
          readCount++;
          reading++;
          peakReads = Math.max(peakReads, reading);
          try {
            await new Promise((resolve) => setImmediate(resolve));
            callOptions.signal?.throwIfAborted();
          } finally {
            reading--;
          }
          let data = state.bytes.slice(offset, offset + length);
          const hashed =
            broken === 'bad-checksum' ? data.map((byte, index) => (index === 0 ? byte ^ 1 : byte)) : data;
          if (broken === 'short-read' && readCount === 3) data = data.slice(0, length - 1);
          return {
            data,
            checksum: { algorithm: 'sha256', base64: createHash('sha256').update(hashed).digest('base64') },
          };
        },
      };
      return session;
    },
  };

  const platform: Platform = {
    specificationVersion: 'v2',
    id: platformId,
    kind: 'memory',
    capabilities: {
      snapshots: 'host',
      quiesce: false,
      changeTracking: 'exact',
      retainsSnapshotAsBase: false,
    },
    changedBlockReader: reader,
    async verify(callOptions = {}) {
      callOptions.signal?.throwIfAborted();
      return { status: 'normal', hostCount: 1, checkedAt: new Date().toISOString() };
    },
    async *hosts(callOptions = {}) {
      callOptions.signal?.throwIfAborted();
      const host: Host = {
        id: hostId,
        name: hostId,
        platformId,
        disks: [{ id: diskId, hostId, name: 'disk 0', capacityBytes: bytes.length }],
      };
      yield host;
    },
    async createSnapshot({ name }): Promise<HostSnapshot> {
      snapshots.set(name, { bytes: bytes.slice(), generation, blocks: blockGeneration.slice(), epoch });
      return { hostId, name, disks: [{ diskId, ref: `memory/${diskId}@${name}` }], consistency: 'host' };
    },
    async releaseSnapshot({ name }) {
      snapshots.delete(name);
    },
  };

  return {
    platform,
    hostId,
    diskId,
    outcomes,
    peakReads: () => peakReads,
    async write(offset, data) {
      bytes.set(data, offset);
      mark(offset, data.length);
    },
    async discard(offset, length) {
      bytes.fill(0, offset, offset + length);
      mark(offset, length);
    },
    async resize(size) {
      const previousSize = bytes.length;
      const next = new Uint8Array(size);
      next.set(bytes.subarray(0, Math.min(size, bytes.length)));
      const blocks = new Uint32Array(Math.ceil(size / BLOCK));
      blocks.set(blockGeneration.subarray(0, Math.min(blocks.length, blockGeneration.length)));
      if (size < previousSize) epoch++;
      bytes = next;
      blockGeneration = blocks;
      // The block that held the old end changes (zeros past the old end, or cut).
      mark(Math.floor(Math.min(size, previousSize) / BLOCK) * BLOCK, 1);
    },
    async readAll() {
      return bytes.slice();
    },
    countOpenResources: () => openSessions + snapshots.size,
    async cleanup() {
      snapshots.clear();
    },
  };
}

for (const mode of ['stream', 'extents'] as const) {
  describeChangedBlockReaderContract({
    name: `in-memory reference platform (${mode}, exact, host snapshots)`,
    capabilities: EVERYTHING,
    createFixture: async () => createMemoryFixture(CAPACITY, { mode }),
  });
}

/** A scenario context on a fresh memory fixture; dispose it after. */
async function scenario(
  options: { mode?: 'stream' | 'extents'; broken?: Breakage } = {},
): Promise<{ c: ContractScenarioContext; fixture: MemoryFixture } & AsyncDisposable> {
  const fixture = createMemoryFixture(CAPACITY, { mode: options.mode ?? 'extents', ...options });
  const backups = await ContractBackups.create(fixture);
  return {
    c: { fixture, backups, capabilities: EVERYTHING, seed: 'self-test' },
    fixture,
    async [Symbol.asyncDispose]() {
      await backups.dispose();
      await fixture.cleanup();
    },
  };
}

describe('the contract suite drives the reader as the engine does', () => {
  it('has maxConcurrentReads reads really running at the reader at once', async () => {
    await using s = await scenario();
    expect(await parallelReadsScenario(s.c)).toBeUndefined();
    expect(s.fixture.peakReads()).toBe(3);
  });

  it('tells every backup its outcome exactly once, and a dropped session none or abandon', async () => {
    await using s = await scenario();
    const { backups } = s.c;
    const full = await backups.backup({});
    await backups.backup({ base: full.checkpoint });
    const dropped = await backups.read({ base: full.checkpoint });
    await dropped.abandon();
    await dropped.close();
    await dropped.close();
    const looked = await backups.open({});
    await looked.end();
    expect(s.fixture.outcomes).toEqual(['commit', 'commit', 'abandon', 'none']);
    expect(s.fixture.countOpenResources!()).toBe(0);
  });

  it('abandons and closes a session whose read fails', async () => {
    await using s = await scenario({ broken: 'short-read' });
    await expect(s.c.backups.backup({})).rejects.toThrow(/answered \d+ bytes, asked \d+/);
    expect(s.fixture.outcomes).toEqual(['abandon']);
    expect(s.fixture.countOpenResources!()).toBe(0);
  });
});

describe('the contract suite catches broken readers', () => {
  it('a read answered short', async () => {
    await using s = await scenario({ broken: 'short-read' });
    await expect(s.c.backups.backup({})).rejects.toThrow(/a read answers exactly the requested length/);
  });

  it('extents not aligned to the block size', async () => {
    await using s = await scenario({ broken: 'unaligned' });
    await expect(s.c.backups.backup({})).rejects.toThrow(/not aligned to the reader's block size 4096/);
  });

  it('a reader that claims exact but returns everything', async () => {
    await using s = await scenario({ broken: 'lies-exact' });
    await expect(exactIncrementalScenario(s.c)).rejects.toThrow(
      /outside what was written .* must say superset/,
    );
  });

  it('a reader that claims exact but returns everything, as a stream too', async () => {
    await using s = await scenario({ mode: 'stream', broken: 'lies-exact' });
    await expect(exactIncrementalScenario(s.c)).rejects.toThrow(/outside what was written/);
  });

  it('a reader that advances its tracking on abandon', async () => {
    await using s = await scenario({ broken: 'forgets-on-abandon' });
    await expect(abandonScenario(s.c)).rejects.toThrow(/lost changes .* abandon must not advance/);
  });

  it('a readRange that stops working when the change set was read', async () => {
    await using s = await scenario({ broken: 'range-ends-with-listing' });
    await expect(readRangeAfterReadScenario(s.c)).rejects.toThrow(
      /readRange failed once the change set was read/,
    );
  });

  it('a reader that throws on a garbled checkpoint', async () => {
    await using s = await scenario({ broken: 'throws-on-garbled' });
    await expect(checkpointFallbackScenario(s.c)).rejects.toThrow(/must open a full read and say why/);
  });

  it('a checksum that does not match the bytes', async () => {
    await using s = await scenario({ broken: 'bad-checksum' });
    await expect(s.c.backups.backup({})).rejects.toThrow(/SHA-256 is .* but its checksum says/);
  });

  it('passes the well-behaved reader through every scenario', async () => {
    for (const mode of ['stream', 'extents'] as const) {
      await using s = await scenario({ mode });
      expect(await exactIncrementalScenario(s.c)).toBeUndefined();
      await abandonScenario(s.c);
      await secondCallsScenario(s.c);
      expect(await readRangeAfterReadScenario(s.c)).toBeUndefined();
      await checkpointFallbackScenario(s.c);
    }
  });

  it('declarations the engine refuses', () => {
    const reader = (mode: string, blockSize: number, maxConcurrentReads: number) =>
      ({ mode, blockSize, maxConcurrentReads, open: async () => undefined }) as unknown as ChangedBlockReader;
    expect(readerProblem(reader('extents', 4096, 4))).toBe('');
    expect(readerProblem(reader('stream', 512, 1))).toBe('');
    expect(readerProblem(reader('pull', 4096, 1))).toMatch(/unknown mode/);
    expect(readerProblem(reader('extents', 3000, 1))).toMatch(/not a power of two/);
    expect(readerProblem(reader('extents', 4096, 0))).toMatch(/at least 1/);
    expect(readerProblem(reader('stream', 4096, 4))).toMatch(/stream reader declares 4/);
  });

  it('host snapshots that miss a disk, name another host or claim quiescing', () => {
    const host: Host = {
      id: 'h',
      name: 'h',
      platformId: 'p',
      disks: [
        { id: 'a', hostId: 'h', name: 'a', capacityBytes: 1 },
        { id: 'b', hostId: 'h', name: 'b', capacityBytes: 1 },
      ],
    };
    const good: HostSnapshot = {
      hostId: 'h',
      name: 's',
      disks: [
        { diskId: 'a', ref: 'a@s' },
        { diskId: 'b', ref: 'b@s' },
      ],
      consistency: 'host',
    };
    expect(hostSnapshotProblem(good, host, 's')).toBe('');
    expect(hostSnapshotProblem({ ...good, disks: [good.disks[0]!] }, host, 's')).toMatch(
      /one DiskSnapshot per disk/,
    );
    expect(hostSnapshotProblem({ ...good, disks: [good.disks[0]!, good.disks[0]!] }, host, 's')).toMatch(
      /twice/,
    );
    expect(hostSnapshotProblem({ ...good, hostId: 'x' }, host, 's')).toMatch(/of host x/);
    expect(hostSnapshotProblem({ ...good, consistency: 'application' }, host, 's')).toMatch(/quiesce/);
    expect(
      hostSnapshotProblem({ ...good, disks: [{ diskId: 'a', ref: '' }, good.disks[1]!] }, host, 's'),
    ).toMatch(/no ref/);
  });

  it('full-read reasons outside the open vocabulary', () => {
    expect(fullReadReasonProblem('checkpoint-invalid', 'memory')).toBe('');
    expect(fullReadReasonProblem('memory-bitmap-lost', 'memory')).toBe('');
    expect(fullReadReasonProblem('bitmap-lost', 'memory')).toMatch(/prefixed/);
    expect(fullReadReasonProblem('Checkpoint Invalid', 'memory')).toMatch(/lowercase/);
    expect(fullReadReasonProblem(undefined, 'memory')).toMatch(/not a word/);
  });
});

describe('ExtentListChecker', () => {
  const data = (offset: number, length: number): ChangedExtent => ({ kind: 'data', offset, length });

  it('accepts sorted, disjoint, aligned extents, the last one ending at an unaligned capacity', () => {
    const checker = new ExtentListChecker(3 * 4096 + 100, 4096);
    checker.accept(data(0, 4096));
    checker.accept({ kind: 'zero', offset: 4096, length: 4096 });
    checker.accept({ ...data(8192, 4096 + 100), token: 't' });
  });

  it('rejects unsorted, overlapping, unaligned, out-of-bounds and malformed extents', () => {
    const overlapping = new ExtentListChecker(65536, 4096);
    overlapping.accept(data(0, 8192));
    expect(() => overlapping.accept(data(4096, 4096))).toThrow(/#1 .*unsorted or overlapping/);
    expect(() => new ExtentListChecker(65536, 4096).accept(data(512, 4096))).toThrow(/not aligned/);
    expect(() => new ExtentListChecker(65536, 4096).accept(data(0, 100))).toThrow(/not aligned/);
    expect(() => new ExtentListChecker(65536, 4096).accept(data(61440, 8192))).toThrow(/past the capacity/);
    expect(() => new ExtentListChecker(65536, 4096).accept(data(0, 0))).toThrow(/positive/);
    expect(() =>
      new ExtentListChecker(65536, 4096).accept({ ...data(0, 4096), kind: 'hole' as 'data' }),
    ).toThrow(/unknown kind/);
    expect(() =>
      new ExtentListChecker(65536, 4096).accept({ ...data(0, 4096), token: 7 as unknown as string }),
    ).toThrow(/token/);
  });
});

describe('ChangeSetChecker', () => {
  const data = (offset: number, length: number, fill = 1): Change => ({
    kind: 'data',
    offset,
    data: new Uint8Array(length).fill(fill),
  });

  it('accepts sorted, disjoint changes inside the capacity', () => {
    const checker = new ChangeSetChecker(100);
    checker.accept(data(0, 10));
    checker.accept({ kind: 'zero', offset: 10, length: 40 });
    checker.accept(data(60, 40));
    checker.finish();
  });

  it('rejects unsorted, overlapping, empty and out-of-bounds changes', () => {
    const overlapping = new ChangeSetChecker(100);
    overlapping.accept(data(0, 10));
    expect(() => overlapping.accept(data(9, 5))).toThrow(/change #1 .*unsorted or overlapping/);
    const unsorted = new ChangeSetChecker(100);
    unsorted.accept(data(50, 10));
    expect(() => unsorted.accept({ kind: 'zero', offset: 0, length: 10 })).toThrow(/change #1/);
    expect(() => new ChangeSetChecker(100).accept(data(95, 10))).toThrow(/past the capacity 100/);
    expect(() => new ChangeSetChecker(100).accept({ kind: 'zero', offset: 5, length: 0 })).toThrow(
      /positive/,
    );
    expect(() => new ChangeSetChecker(100).accept({ kind: 'zero', offset: -1, length: 1 })).toThrow(/offset/);
    expect(() => new ChangeSetChecker(100).accept({ kind: 'zero', offset: 0.5, length: 1 })).toThrow(
      /offset/,
    );
  });

  it('rejects a data buffer the reader reuses after yielding it', () => {
    const checker = new ChangeSetChecker(100);
    const shared = new Uint8Array(10).fill(7);
    checker.accept({ kind: 'data', offset: 0, data: shared });
    shared.fill(8);
    expect(() => checker.accept({ kind: 'data', offset: 10, data: shared })).toThrow(/must not be reused/);
  });
});

describe('expectSameContent', () => {
  it('passes on equal bytes and names the first differing byte otherwise', async () => {
    const directory = await mkdtemp(join(tmpdir(), 'drkit-testkit-'));
    try {
      const path = join(directory, 'image');
      const content = new Uint8Array(10_000).map((_, index) => index % 251);
      await writeFile(path, content);
      await expectSameContent(path, content);
      const changed = content.slice();
      changed[7777] = 0xff;
      await expect(expectSameContent(path, changed)).rejects.toThrow(/at byte 7777/);
      await expect(expectSameContent(path, content.subarray(0, 9999))).rejects.toThrow(/size/);
      const sha256 = createHash('sha256').update(content).digest('hex');
      await expectSameContent(path, { sha256, capacityBytes: content.length });
      await expect(
        expectSameContent(path, { sha256: '0'.repeat(64), capacityBytes: 10_000 }),
      ).rejects.toThrow(/SHA-256/);
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });
});
