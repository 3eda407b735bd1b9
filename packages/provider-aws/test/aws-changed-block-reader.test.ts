// The EBS reader's sessions driven directly (no engine): listings, tokens, faults and full-read reasons.
import { createHash } from 'node:crypto';
import {
  type ChangedExtent,
  type Checkpoint,
  type Host,
  type HostSnapshot,
  ThrottledError,
} from '@drkit/core';
import { afterEach, describe, expect, it } from 'vitest';
import { AWS_MAX_THROTTLED_ATTEMPTS, type AwsEbsReadSession, type AwsPlatform } from '../src/index.js';
import { type AwsTestBed, BLOCK, pattern, startAwsTestBed } from './aws-test-setup.js';

let bed: AwsTestBed | undefined;
afterEach(async () => {
  await bed?.close();
  bed = undefined;
});

interface Fixture {
  bed: AwsTestBed;
  platform: AwsPlatform;
  volumeId: string;
  host: () => Promise<Host>;
  snapshot: (name: string) => Promise<HostSnapshot>;
  open: (snapshot: HostSnapshot, base?: Checkpoint) => Promise<AwsEbsReadSession>;
}

async function fixture(
  written: number[],
  options: Parameters<typeof startAwsTestBed>[0] = {},
  listPageSize?: number,
): Promise<Fixture> {
  bed = await startAwsTestBed(options);
  const { emulator } = bed;
  const volumeId = emulator.createVolume({ sizeGiB: 1 });
  for (const index of written) emulator.writeVolume(volumeId, index * BLOCK, pattern(index));
  const instanceId = emulator.createInstance({ volumes: [{ volumeId }] });
  const platform = bed.platform({ maxConcurrentReads: 4, ...(listPageSize ? { listPageSize } : {}) });
  const host = () => platform.host(instanceId);
  const current = bed;
  return {
    bed: current,
    platform,
    volumeId,
    host,
    snapshot: async (name) => platform.createSnapshot({ host: await host(), name, quiesce: 'none' }),
    open: async (snapshot, base) => {
      const disk = (await host()).disks[0]!;
      return platform.changedBlockReader.open({
        disk,
        snapshot,
        diskSnapshot: snapshot.disks[0]!,
        chunkSize: 1024 * 1024,
        ...(base ? { base } : {}),
      });
    },
  };
}

async function listAll(session: AwsEbsReadSession): Promise<ChangedExtent[]> {
  const extents: ChangedExtent[] = [];
  for await (const extent of session.extents()) extents.push(extent);
  return extents;
}

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('base64');

describe('listing', () => {
  it('a first read lists every written block as data with its token; unlisted blocks are zeros', async () => {
    const f = await fixture([0, 3, 4, 2047]);
    const session = await f.open(await f.snapshot('drkit-1'));
    expect(session.validity).toEqual({ kind: 'full', reason: 'first-backup' });
    expect(session.capacityBytes).toBe(1024 ** 3);
    const extents = await listAll(session);
    expect(extents.map((e) => [e.kind, e.offset / BLOCK, e.length])).toEqual([
      ['data', 0, BLOCK],
      ['data', 3, BLOCK],
      ['data', 4, BLOCK],
      ['data', 2047, BLOCK],
    ]);
    const result = await session.read({ offset: 3 * BLOCK, length: BLOCK, token: extents[1]!.token! });
    expect(Buffer.from(result.data).equals(pattern(3))).toBe(true);
    expect(result.checksum).toEqual({ algorithm: 'sha256', base64: sha256(result.data) });
    const checkpoint = session.checkpoint();
    expect(JSON.parse(checkpoint.token)).toMatchObject({ format: 'drkit-aws-ebs', volumeId: f.volumeId });
    expect(checkpoint.snapshotName).toBe('drkit-1');
    await session.commit({ pointId: 'p1', checkpoint });
    await session.close();
    await session.close();
    await expect(session.read({ offset: 0, length: BLOCK, token: extents[0]!.token! })).rejects.toMatchObject(
      {
        code: 'INVALID_ARGUMENT',
      },
    );
  });

  it('an incremental lists changed blocks (through empty pages) and blocks no longer written as zeros', async () => {
    const f = await fixture(
      Array.from({ length: 400 }, (_, i) => i),
      {},
      100,
    );
    const first = await f.open(await f.snapshot('drkit-1'));
    await listAll(first);
    const base = first.checkpoint();
    await first.close();
    f.bed.emulator.discardVolume(f.volumeId, 10 * BLOCK, 2 * BLOCK);
    f.bed.emulator.writeVolume(f.volumeId, 399 * BLOCK, Buffer.of(1));
    f.bed.emulator.resetStats();
    const session = await f.open(await f.snapshot('drkit-2'), base);
    expect(session.validity).toEqual({ kind: 'exact' });
    expect(session.baseSnapshotId).toBe(JSON.parse(base.token).snapshotId);
    const extents = await listAll(session);
    expect(extents.map((e) => [e.kind, e.offset / BLOCK, e.length / BLOCK])).toEqual([
      ['zero', 10, 2],
      ['data', 399, 1],
    ]);
    expect(f.bed.emulator.stats().calls.ListChangedBlocks).toBe(4); // windows of 100 indexes, two of them empty
  });

  it('lists again from the last block when a page token expired (60 minutes)', async () => {
    const f = await fixture(
      Array.from({ length: 250 }, (_, i) => i * 2),
      {},
      100,
    );
    const session = await f.open(await f.snapshot('drkit-1'));
    const seen: number[] = [];
    for await (const extent of session.extents()) {
      seen.push(extent.offset / BLOCK);
      if (seen.length === 100) f.bed.clock.advance(61 * 60_000);
    }
    expect(seen).toEqual(Array.from({ length: 250 }, (_, i) => i * 2));
  });
});

describe('full-read reasons', () => {
  it('garbled, foreign, deleted and unrelated bases give a full read with the reason', async () => {
    const f = await fixture([1]);
    const s1 = await f.snapshot('drkit-1');
    const first = await f.open(s1);
    const base = first.checkpoint();
    await first.close();
    const s2 = await f.snapshot('drkit-2');
    const garbled = await f.open(s2, { ...base, token: 'not json' });
    expect(garbled.validity).toMatchObject({ kind: 'full', reason: 'checkpoint-invalid' });
    const foreign = await f.open(s2, {
      ...base,
      token: JSON.stringify({ ...JSON.parse(base.token), volumeId: 'vol-0ther' }),
    });
    expect(foreign.validity).toMatchObject({ kind: 'full', reason: 'checkpoint-invalid' });

    // A snapshot of another volume as the base: EBS says UNRELATED_SNAPSHOTS.
    const otherVolume = f.bed.emulator.createVolume({ sizeGiB: 1 });
    const otherInstance = f.bed.emulator.createInstance({ volumes: [{ volumeId: otherVolume }] });
    const other = await f.platform.createSnapshot({
      host: await f.platform.host(otherInstance),
      name: 'other',
      quiesce: 'none',
    });
    const unrelated = await f.open(s2, {
      ...base,
      token: JSON.stringify({ ...JSON.parse(base.token), snapshotId: other.disks[0]!.ref }),
    });
    expect(unrelated.validity).toMatchObject({ kind: 'full', reason: 'aws-unrelated-snapshots' });

    f.bed.emulator.deleteSnapshot(s1.disks[0]!.ref);
    const missing = await f.open(s2, base);
    expect(missing.validity).toMatchObject({ kind: 'full', reason: 'base-snapshot-missing' });
    expect((await listAll(missing)).map((e) => e.offset / BLOCK)).toEqual([1]);
  });

  it('a snapshot that is gone is a NotFoundError', async () => {
    const f = await fixture([1]);
    const s1 = await f.snapshot('drkit-1');
    f.bed.emulator.deleteSnapshot(s1.disks[0]!.ref);
    await expect(f.open(s1)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('reads', () => {
  it('an expired block token (7 days) is re-listed once for its window, not fatal', async () => {
    const f = await fixture([0, 1, 2, 3]);
    const session = await f.open(await f.snapshot('drkit-1'));
    const extents = await listAll(session);
    f.bed.clock.advance(8 * 24 * 3600 * 1000);
    f.bed.emulator.resetStats();
    for (const extent of extents) {
      const result = await session.read({
        offset: extent.offset,
        length: extent.length,
        token: extent.token!,
      });
      expect(Buffer.from(result.data).equals(pattern(extent.offset / BLOCK))).toBe(true);
    }
    expect(f.bed.emulator.stats().calls.ListSnapshotBlocks).toBe(1); // one window for all four
    expect(f.bed.emulator.stats().calls.GetSnapshotBlock).toBe(5); // one expired, then four with fresh tokens
  });

  it('a throttled read waits in the rate limiter (the snapshot bucket backs off) and is sent again; a damaged block keeps its checksum for the engine', async () => {
    const f = await fixture([5], { quotas: { getSnapshotBlockPerSnapshot: 1 } });
    const session = await f.open(await f.snapshot('drkit-1'));
    const [extent] = await listAll(session);
    const request = { offset: extent!.offset, length: extent!.length, token: extent!.token! };
    await session.read(request);
    const start = f.bed.clock.now();
    const again = await session.read(request);
    expect(Buffer.from(again.data).equals(pattern(5))).toBe(true);
    // The emulator's snapshot bucket refills one token a second: the read waited (in virtual time) that long.
    expect(f.bed.clock.now() - start).toBeGreaterThanOrEqual(1000);
    const throttled = f.bed.emulator.stats().throttled.GetSnapshotBlock ?? 0;
    expect(throttled).toBeGreaterThan(0);
    expect(throttled).toBeLessThan(AWS_MAX_THROTTLED_ATTEMPTS);
    expect(f.bed.emulator.blockReads(session.snapshotId).get(5)).toBe(2);
    const state = f.platform.rateLimiterState();
    expect(state.getSnapshotBlockPerSnapshot[session.snapshotId]).toBeLessThan(1000);
    expect(state.getSnapshotBlockPerAccount).toBe(1000);
    f.bed.clock.advance(1000);
    f.bed.emulator.injectFault({ operation: 'GetSnapshotBlock', kind: 'checksum-mismatch' });
    const damaged = await session.read(request);
    expect(damaged.checksum!.base64).not.toBe(sha256(damaged.data));
    await session.close();
    expect(f.platform.rateLimiterState().getSnapshotBlockPerSnapshot).toEqual({});
  });

  it('a read throttled without end is a ThrottledError after a bounded number of attempts', async () => {
    const f = await fixture([5]);
    const session = await f.open(await f.snapshot('drkit-1'));
    const [extent] = await listAll(session);
    const request = { offset: extent!.offset, length: extent!.length, token: extent!.token! };
    f.bed.emulator.resetStats();
    f.bed.emulator.injectFault({ operation: 'GetSnapshotBlock', kind: 'throttle', times: 1000 });
    const error = await session.read(request).catch((e) => e);
    expect(ThrottledError.isInstance(error)).toBe(true);
    expect(String(error.message)).toMatch(/throttled it 50 times/);
    expect(f.bed.emulator.stats().calls.GetSnapshotBlock).toBe(AWS_MAX_THROTTLED_ATTEMPTS);
    // An injected throttle is the account's ThrottlingException: the account bucket backed off to its floor.
    expect(f.platform.rateLimiterState().getSnapshotBlockPerAccount).toBe(20);
  });

  it('a truncated body and a 500 are tried again; every body is consumed or destroyed', async () => {
    const f = await fixture([5]);
    const session = await f.open(await f.snapshot('drkit-1'));
    const [extent] = await listAll(session);
    const request = { offset: extent!.offset, length: extent!.length, token: extent!.token! };
    f.bed.emulator.injectFault({ operation: 'GetSnapshotBlock', kind: 'truncated-body' });
    f.bed.emulator.injectFault({ operation: 'GetSnapshotBlock', kind: 'internal-error' });
    const result = await session.read(request);
    expect(Buffer.from(result.data).equals(pattern(5))).toBe(true);
    expect(f.bed.emulator.pendingFaults()).toEqual([]);
    expect(f.bed.emulator.stats().openBodies).toBe(0);
    f.bed.emulator.injectFault({ operation: 'GetSnapshotBlock', kind: 'internal-error', times: 3 });
    await expect(session.read(request)).rejects.toMatchObject({ code: 'UNREACHABLE' });
  });

  it('rejects with the abort reason', async () => {
    const f = await fixture([5]);
    const session = await f.open(await f.snapshot('drkit-1'));
    const [extent] = await listAll(session);
    const reason = new Error('stop');
    await expect(
      session.read(
        { offset: extent!.offset, length: extent!.length, token: extent!.token! },
        { signal: AbortSignal.abort(reason) },
      ),
    ).rejects.toBe(reason);
  });
});
