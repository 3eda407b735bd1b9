import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type Change,
  type ChangedBlockReader,
  type ChangedBlockSession,
  type ChangeSetValidity,
  type Checkpoint,
  type Host,
  InvalidArgumentError,
  NotFoundError,
  type Platform,
  type SnapshotRef,
} from '@drkit/core';
import { describe, expect, it } from 'vitest';
import {
  type ChangedBlockReaderFixture,
  ChangeSetChecker,
  describeChangedBlockReaderContract,
  expectSameContent,
} from './changed-block-reader-contract.js';
import { createKeystream } from './disk-image.js';

const BLOCK = 4096;

/**
 * A reference platform held in memory, with exact change tracking per 4 KiB block and host snapshots: the
 * contract suite must pass against it (the exact, snapshot-taking, full-reads-without-zero-changes path), while
 * the local-disk provider covers the superset, snapshot-less path.
 */
function createMemoryFixture(capacity: number): ChangedBlockReaderFixture {
  let bytes = new Uint8Array(capacity);
  createKeystream('memory-platform')(bytes.subarray(0, capacity / 2));
  let generation = 1;
  /** Generation of each block's last change. */
  let blockGeneration = new Uint32Array(Math.ceil(capacity / BLOCK)).fill(1);
  /** Bumped when the disk shrinks: tracking cannot diff across it. */
  let epoch = 1;
  const snapshots = new Map<
    string,
    { bytes: Uint8Array; generation: number; blocks: Uint32Array; epoch: number }
  >();
  let openSessions = 0;
  const hostId = 'memory-host';
  const diskId = 'memory-disk';

  const mark = (offset: number, length: number) => {
    generation++;
    for (let block = Math.floor(offset / BLOCK); block * BLOCK < offset + length; block++) {
      blockGeneration[block] = generation;
    }
  };

  const reader: ChangedBlockReader = {
    async open({ disk, snapshot, base, fullReason, signal }): Promise<ChangedBlockSession> {
      signal?.throwIfAborted();
      if (disk.id !== diskId) throw new NotFoundError(`no disk ${disk.id}`);
      const state = snapshot && snapshots.get(snapshot.name);
      if (!state) throw new NotFoundError('open needs a snapshot of this platform');
      const [baseEpoch, baseGeneration] = (base?.token ?? '0:0').split(':').map(Number) as [number, number];
      const validity: ChangeSetValidity = !base
        ? { kind: 'full', reason: fullReason ?? 'first-backup' }
        : baseEpoch !== state.epoch
          ? { kind: 'full', reason: 'disk-resized' }
          : { kind: 'exact' };
      const since = validity.kind === 'full' ? 0 : baseGeneration;
      let closed = false;
      openSessions++;
      const close = async () => {
        if (!closed) openSessions--;
        closed = true;
      };
      const size = state.bytes.length;
      async function* changes(options: { signal?: AbortSignal } = {}): AsyncGenerator<Change> {
        try {
          for (let block = 0; block * BLOCK < size; ) {
            options.signal?.throwIfAborted();
            if (closed) throw new InvalidArgumentError('closed');
            if (state!.blocks[block]! <= since) {
              block++;
              continue;
            }
            const start = block * BLOCK;
            while (block * BLOCK < size && state!.blocks[block]! > since && block * BLOCK - start < 64 * 1024)
              block++;
            const data = state!.bytes.slice(start, Math.min(size, block * BLOCK));
            if (data.every((byte) => byte === 0)) {
              // Over zeros (a full read) nothing needs saying; over a base, the range now reads as zeros.
              if (validity.kind !== 'full') yield { kind: 'zero', offset: start, length: data.length };
            } else {
              yield { kind: 'data', offset: start, data };
            }
          }
        } finally {
          await close();
        }
      }
      return {
        capacityBytes: size,
        validity,
        changes,
        async readRange(extent) {
          if (extent.offset < 0 || extent.length <= 0 || extent.offset + extent.length > size) {
            throw new InvalidArgumentError('out of range');
          }
          return state.bytes.slice(extent.offset, extent.offset + extent.length);
        },
        checkpoint: (): Checkpoint => ({
          diskId,
          token: `${state.epoch}:${state.generation}`,
          capacityBytes: size,
          createdAt: new Date().toISOString(),
        }),
        close,
        [Symbol.asyncDispose]: close,
      };
    },
  };

  const platform: Platform = {
    specificationVersion: 'v1',
    id: 'memory',
    kind: 'memory',
    capabilities: { snapshots: 'host', changeTracking: 'exact', retainsSnapshotAsBase: false },
    changedBlockReader: reader,
    async verify(options = {}) {
      options.signal?.throwIfAborted();
      return { status: 'normal', hostCount: 1, checkedAt: new Date().toISOString() };
    },
    async *hosts(options = {}) {
      options.signal?.throwIfAborted();
      const host: Host = {
        id: hostId,
        name: hostId,
        platformId: 'memory',
        disks: [{ id: diskId, hostId, name: 'disk 0', capacityBytes: bytes.length }],
      };
      yield host;
    },
    async createSnapshot({ name }): Promise<SnapshotRef> {
      snapshots.set(name, { bytes: bytes.slice(), generation, blocks: blockGeneration.slice(), epoch });
      return { hostId, name };
    },
    async releaseSnapshot({ name }) {
      snapshots.delete(name);
    },
  };

  return {
    platform,
    hostId,
    diskId,
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
      // The block that held the old end changes (zeros past the old end, or cut).
      bytes = next;
      blockGeneration = blocks;
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

describeChangedBlockReaderContract({
  name: 'in-memory reference platform (exact, host snapshots)',
  capabilities: { canWrite: true, canDiscard: true, canGrow: true, canShrink: true },
  createFixture: async () => createMemoryFixture(4 * 1024 * 1024 + 3 * BLOCK),
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
      const { createHash } = await import('node:crypto');
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
