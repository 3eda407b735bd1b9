// The engine against spec v2 as a provider sees it: list-then-read sessions with parallel reads, source
// checksums, a session outcome told exactly once, per-disk snapshot references and their consistency,
// quiescing, skipped disks and the platform's identity.
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  type BackupEngine,
  type BackupJobResult,
  ChecksumMismatchError,
  createBackupEngine,
  createInProcessSyncProxy,
  createLocalFolderStore,
  InvalidSettingsError,
  openRepository,
  type Platform,
  QuiesceFailedError,
  type Repository,
  SourceProtocolError,
  SyncProxyRegistry,
  TaskStalledError,
  ThrottledError,
  TimeoutError,
} from '../src/index.js';
import {
  closeTempRepository,
  openTempRepository,
  parsePointFile,
  pointFile,
  restoredBytes,
  sha,
} from './engine-bed.js';
import { createMemoryPlatform } from './memory-platform.js';

const CHUNK = 256 * 1024;

let dir: string;
let repository: Repository;
let engine: BackupEngine | undefined;

beforeEach(async () => {
  ({ dir, repository } = await openTempRepository('drkit-spec-v2-'));
});

afterEach(async () => {
  await closeTempRepository({ dir, repository, engine });
  engine = undefined;
});

function restored(pointId: string): Promise<Uint8Array> {
  return restoredBytes(repository, dir, pointId);
}

function only(result: BackupJobResult) {
  expect(result.tasks).toHaveLength(1);
  return result.tasks[0]!;
}

function errorOf(result: BackupJobResult): unknown {
  const outcome = only(result);
  if (outcome.status !== 'failed') throw new Error(`expected a failure, got ${outcome.status}`);
  return outcome.error;
}

function pointOf(result: BackupJobResult, diskId = 'd1') {
  const outcome = result.tasks.find((t) => t.diskId === diskId);
  if (outcome?.status !== 'succeeded') {
    throw new Error(`disk ${diskId}: ${outcome?.status} ${String((outcome as { error?: unknown })?.error)}`);
  }
  return outcome.result;
}

describe('list-then-read sessions', () => {
  it('reads with the declared concurrency, in order of offset, and restores every point byte for byte', async () => {
    const platform = createMemoryPlatform({
      mode: 'extents',
      maxConcurrentReads: 3,
      pieceSize: 64 * 1024,
      disks: [{ id: 'd1', capacity: 8 * CHUNK + 4096 }],
    });
    platform.write('d1', 0, randomBytes(8 * CHUNK + 4096));
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    const first = pointOf(await engine.backup());
    expect(platform.readsInFlight.max).toBe(3);
    expect(platform.readOffsets).toEqual([...platform.readOffsets].sort((a, b) => a - b));
    expect(platform.readOffsets).toHaveLength(Math.ceil((8 * CHUNK + 4096) / (64 * 1024)));
    const full = platform.content('d1');
    expect(sha(await restored(first.pointId))).toBe(sha(full));

    platform.write('d1', CHUNK + 100, randomBytes(3000));
    platform.write('d1', 8 * CHUNK, randomBytes(4096));
    const second = pointOf(await engine.backup());
    expect(second.validity.kind).toBe('exact');
    expect(sha(await restored(second.pointId))).toBe(sha(platform.content('d1')));
    expect(sha(await restored(first.pointId))).toBe(sha(full));
  });

  it('cuts a listed extent at chunk boundaries and hands every piece its token', async () => {
    const platform = createMemoryPlatform({
      mode: 'extents',
      pieceSize: 3 * CHUNK, // one listed extent spans three chunks
      disks: [{ id: 'd1', capacity: 3 * CHUNK }],
    });
    platform.write('d1', 0, randomBytes(3 * CHUNK));
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    const point = pointOf(await engine.backup());
    expect(platform.readOffsets).toEqual([0, CHUNK, 2 * CHUNK]);
    expect(sha(await restored(point.pointId))).toBe(sha(platform.content('d1')));
  });

  it('fails the task with a SourceProtocolError when a read answers short, and commits nothing', async () => {
    const platform = createMemoryPlatform({ mode: 'extents', disks: [{ id: 'd1', capacity: 2 * CHUNK }] });
    platform.write('d1', 0, randomBytes(2 * CHUNK));
    platform.onRead = (request, result) =>
      request.offset === CHUNK ? { data: result.data.subarray(0, result.data.byteLength - 1) } : result;
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    const error = errorOf(await engine.backup());
    expect(SourceProtocolError.isInstance(error)).toBe(true);
    expect((error as Error).message).toMatch(/wrong length/);
    expect(await repository.points()).toEqual([]);
    expect(platform.events.filter((e) => e.startsWith('abandon:'))).toEqual(['abandon:d1:failed']);
    expect(platform.events.filter((e) => e.startsWith('commit:'))).toEqual([]);
  });

  it('verifies source checksums: a byte damaged once is read again, one damaged every time fails the task', async () => {
    const platform = createMemoryPlatform({
      mode: 'extents',
      checksums: true,
      disks: [{ id: 'd1', capacity: 2 * CHUNK }],
    });
    platform.write('d1', 0, randomBytes(2 * CHUNK));
    let damaged = 0;
    let always = false;
    platform.onRead = (request, result) => {
      if (request.offset !== 0 || (!always && damaged > 0)) return result;
      damaged++;
      const data = result.data.slice();
      data[7] = (data[7]! + 1) & 0xff;
      return { ...result, data };
    };
    const proxy = createInProcessSyncProxy({ platforms: [platform], repository });
    const proxies = new SyncProxyRegistry();
    proxies.register(proxy);
    proxies.bind(proxy.id, platform.id);
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK, proxies });
    const point = pointOf(await engine.backup());
    expect(damaged).toBe(1);
    expect(sha(await restored(point.pointId))).toBe(sha(platform.content('d1')));

    always = true;
    damaged = 0;
    const error = errorOf(await engine.backup({ full: true }));
    expect(ChecksumMismatchError.isInstance(error)).toBe(true);
    expect(damaged).toBe(4); // every attempt
    await proxy.close();
  });

  it('retries a throttled read and reports an unknown checksum algorithm as a protocol error', async () => {
    const platform = createMemoryPlatform({ mode: 'extents', disks: [{ id: 'd1', capacity: CHUNK }] });
    platform.write('d1', 0, randomBytes(CHUNK));
    let throttled = 0;
    platform.onRead = (_request, result) => {
      if (throttled++ === 0) throw new ThrottledError('slow down', { retryAfterMs: 1 });
      return result;
    };
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    const point = pointOf(await engine.backup());
    expect(throttled).toBeGreaterThan(1);
    expect(sha(await restored(point.pointId))).toBe(sha(platform.content('d1')));

    platform.onRead = (_request, result) => ({
      ...result,
      checksum: { algorithm: 'crc32c', base64: 'AAAA' },
    });
    const error = errorOf(await engine.backup({ full: true }));
    expect(SourceProtocolError.isInstance(error)).toBe(true);
    expect((error as Error).message).toMatch(/crc32c/);
  });

  it("starts a new lineage at the reader's block size when it is larger, and refuses an old lineage it does not divide", async () => {
    const wide = createMemoryPlatform({
      mode: 'extents',
      blockSize: 512 * 1024,
      pieceSize: 512 * 1024,
      disks: [{ id: 'd1', capacity: 2 * 512 * 1024 }],
    });
    wide.write('d1', 0, randomBytes(2 * 512 * 1024));
    engine = createBackupEngine({ repository, platforms: [wide], chunkSize: CHUNK });
    const point = pointOf(await engine.backup());
    expect((await repository.point(point.pointId)).chunkSize).toBe(512 * 1024);
    expect(sha(await restored(point.pointId))).toBe(sha(wide.content('d1')));
    await engine.close();

    // The same disk id on another platform id, first read with 4 KiB blocks: its lineage has 256 KiB chunks.
    const narrow = createMemoryPlatform({
      id: 'other',
      mode: 'extents',
      disks: [{ id: 'd1', capacity: CHUNK }],
    });
    engine = createBackupEngine({ repository, platforms: [narrow], chunkSize: CHUNK });
    pointOf(await engine.backup());
    await engine.close();
    const widened = createMemoryPlatform({
      id: 'other',
      mode: 'extents',
      blockSize: 512 * 1024,
      disks: [{ id: 'd1', capacity: CHUNK }],
    });
    engine = createBackupEngine({ repository, platforms: [widened], chunkSize: CHUNK });
    const error = errorOf(await engine.backup());
    expect(SourceProtocolError.isInstance(error)).toBe(true);
    expect((error as Error).message).toMatch(/not a multiple/);
  });
});

describe('the session outcome', () => {
  it('is commit once with the point id after the point is durable, then close', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: CHUNK }] });
    platform.write('d1', 0, randomBytes(CHUNK));
    let seenPoints = -1;
    platform.onCommit = async () => {
      seenPoints = (await repository.points()).length;
    };
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    const point = pointOf(await engine.backup());
    const tail = platform.events.filter((e) => /^(commit|abandon|close):/.test(e));
    expect(tail).toEqual([`commit:d1:${point.pointId}`, expect.stringMatching(/^close:d1:/)]);
    expect(seenPoints).toBe(1);
  });

  it('is abandon once (failed) when the source breaks, and cancelled when the job is aborted', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: 2 * CHUNK }] });
    platform.write('d1', 0, randomBytes(2 * CHUNK));
    platform.failAfter.set('d1', 1);
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    await engine.backup();
    expect(platform.events.filter((e) => /^(commit|abandon):/.test(e))).toEqual(['abandon:d1:failed']);

    platform.failAfter.delete('d1');
    platform.events.length = 0;
    const controller = new AbortController();
    let open!: () => void;
    platform.gates.set('d1', new Promise<void>((resolve) => (open = resolve)));
    platform.onChangesStart = () => {
      controller.abort(new Error('stop'));
      open();
    };
    await expect(engine.backup({ signal: controller.signal })).rejects.toThrow('stop');
    expect(platform.events.filter((e) => /^(commit|abandon):/.test(e))).toEqual(['abandon:d1:cancelled']);
    expect(platform.liveSnapshots()).toEqual([]);
  });

  it('is abandon once when the task stalls, and the job still releases its snapshot and ledger entry', async () => {
    const platform = createMemoryPlatform({ mode: 'extents', disks: [{ id: 'd1', capacity: CHUNK }] });
    platform.gates.set('d1', new Promise<void>(() => undefined)); // a source that never answers
    engine = createBackupEngine({
      repository,
      platforms: [platform],
      chunkSize: CHUNK,
      stallTimeoutSeconds: 1,
    });
    const error = errorOf(await engine.backup());
    expect(TaskStalledError.isInstance(error)).toBe(true);
    await vi.waitFor(() => expect(platform.events).toContain('abandon:d1:failed'));
    expect(platform.events.filter((e) => /^(commit|abandon):/.test(e))).toEqual(['abandon:d1:failed']);
    expect(platform.liveSnapshots()).toEqual([]);
    expect(await repository.ledger.list()).toEqual([]);
    expect(await repository.points()).toEqual([]);
  });

  it("does not count a session's wait for a shared resource (open's waiting) as a stall", async () => {
    const platform = createMemoryPlatform({
      mode: 'extents',
      disks: [
        { id: 'd1', capacity: CHUNK },
        { id: 'd2', capacity: CHUNK },
      ],
    });
    platform.write('d1', 0, randomBytes(CHUNK));
    platform.gates.set('d2', new Promise<void>(() => undefined)); // d2's source never answers: it stalls
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const reader = platform.changedBlockReader;
    const told: string[] = [];
    (platform as { changedBlockReader: Platform['changedBlockReader'] }).changedBlockReader = {
      ...reader,
      async open(o) {
        if (o.disk.id === 'd1') {
          // d1 waits for a connection other sessions hold, as long as d2 takes to stall and then some.
          const done = o.waiting?.('a data connection of the test');
          told.push(done ? 'waiting' : 'no waiting hook');
          await released;
          done?.();
        }
        return reader.open(o);
      },
    };
    engine = createBackupEngine({
      repository,
      platforms: [platform],
      chunkSize: CHUNK,
      stallTimeoutSeconds: 1,
    });
    const job = engine.backup();
    await vi.waitFor(() => expect(platform.events).toContain('abandon:d2:failed'), {
      timeout: 60_000,
      interval: 20,
    });
    // Another full stall timeout after d2's (which started no earlier than d1's watch) fired.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    release();
    const result = await job;
    expect(told).toEqual(['waiting']);
    expect(
      TaskStalledError.isInstance(
        errorOf({ ...result, tasks: result.tasks.filter((t) => t.diskId === 'd2') }),
      ),
    ).toBe(true);
    const point = pointOf(result, 'd1');
    expect(sha(await restored(point.pointId))).toBe(sha(platform.content('d1')));
  });

  it('keeps a committed point a success when the session fails to close, and a failure its own error', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: 2 * CHUNK }] });
    platform.write('d1', 0, randomBytes(2 * CHUNK));
    const open = platform.changedBlockReader.open.bind(platform.changedBlockReader);
    platform.changedBlockReader.open = async (options) => {
      const session = await open(options);
      const close = session.close.bind(session);
      session.close = async () => {
        await close();
        throw new Error('close failed');
      };
      return session;
    };
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    const point = pointOf(await engine.backup());
    expect(sha(await restored(point.pointId))).toBe(sha(platform.content('d1')));
    platform.failAfter.set('d1', 1);
    const error = errorOf(await engine.backup({ full: true }));
    expect((error as Error).message).toBe('injected failure on d1');
  });

  it('keeps the point when the session fails to commit, and reports it as sourceCommitError', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: CHUNK }] });
    platform.write('d1', 0, randomBytes(CHUNK));
    platform.onCommit = () => {
      throw new Error('bitmap not cleared');
    };
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    const result = pointOf(await engine.backup());
    expect((result.sourceCommitError as Error).message).toBe('bitmap not cleared');
    expect(sha(await restored(result.pointId))).toBe(sha(platform.content('d1')));
    expect(platform.events.filter((e) => e.startsWith('abandon:'))).toEqual([]);
  });
});

describe('host snapshots', () => {
  it('hands each disk its own reference and records the consistency achieved in points and host points', async () => {
    const platform = createMemoryPlatform({
      consistency: 'disk',
      disks: [
        { id: 'd1', capacity: CHUNK },
        { id: 'd2', capacity: CHUNK },
      ],
    });
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    const result = await engine.backup({ quiesce: 'none' });
    expect(platform.snapshotCalls.map((c) => c.quiesce)).toEqual(['none']);
    const name = platform.created[0];
    expect(platform.opened.map((o) => [o.disk.id, o.diskSnapshot?.ref]).sort()).toEqual([
      ['d1', `d1@${name}`],
      ['d2', `d2@${name}`],
    ]);
    expect(pointOf(result, 'd1').consistency).toBe('disk');
    const points = await repository.points();
    expect(points.map((p) => p.consistency)).toEqual(['disk', 'disk']);
    const [hostPoint] = await repository.hostPoints();
    expect(hostPoint?.consistency).toBe('disk');
    expect(hostPoint?.points).toHaveLength(2);
  });

  it('quiesces when preferred and the platform can, and asks with none when it cannot', async () => {
    const able = createMemoryPlatform({ id: 'able', quiesce: true, disks: [{ id: 'd1', capacity: CHUNK }] });
    const unable = createMemoryPlatform({
      id: 'unable',
      hosts: [{ id: 'vm-2', disks: [{ id: 'd2', capacity: CHUNK }] }],
    });
    engine = createBackupEngine({ repository, platforms: [able, unable], chunkSize: CHUNK });
    const result = await engine.backup();
    expect(able.snapshotCalls.map((c) => c.quiesce)).toEqual(['preferred']);
    expect(unable.snapshotCalls.map((c) => c.quiesce)).toEqual(['none']);
    expect(pointOf(result, 'd1').consistency).toBe('application');
    expect(pointOf(result, 'd2').consistency).toBe('host');
  });

  it('with quiesce required, fails a host that is not quiesced, leaves no snapshot and commits nothing', async () => {
    const unable = createMemoryPlatform({ disks: [{ id: 'd1', capacity: CHUNK }] });
    engine = createBackupEngine({ repository, platforms: [unable], chunkSize: CHUNK });
    expect(QuiesceFailedError.isInstance(errorOf(await engine.backup({ quiesce: 'required' })))).toBe(true);
    expect(unable.snapshotCalls).toEqual([]);
    await engine.close();

    const lying = createMemoryPlatform({
      id: 'lying',
      quiesce: true,
      disks: [{ id: 'd1', capacity: CHUNK }],
    });
    lying.snapshotAnswer = (s) => ({ ...s, consistency: 'host', detail: 'VMware Tools not running' });
    engine = createBackupEngine({ repository, platforms: [lying], chunkSize: CHUNK });
    const error = errorOf(await engine.backup({ quiesce: 'required' }));
    expect(QuiesceFailedError.isInstance(error)).toBe(true);
    expect((error as Error).message).toMatch(/VMware Tools not running/);
    expect(lying.liveSnapshots()).toEqual([]);
    expect(await repository.ledger.list()).toEqual([]);
    expect(await repository.points()).toEqual([]);
  });

  it('gives up a createSnapshot that ignores its deadline, keeps its ledger entry until the call ends, then releases it', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: CHUNK }] });
    let finish!: () => void;
    platform.onCreateSnapshot = () => new Promise<void>((resolve) => (finish = resolve)); // hangs, ignores signals
    engine = createBackupEngine({
      repository,
      platforms: [platform],
      chunkSize: CHUNK,
      snapshotTimeoutSeconds: 0.05,
    });
    const result = await engine.backup();
    expect(TimeoutError.isInstance(errorOf(result))).toBe(true);
    expect(platform.snapshotCalls[0]?.deadline).toBeTypeOf('number');
    // The call may still create the snapshot: nothing was released yet, the entry is kept and reported.
    expect(platform.released).toEqual([]);
    const [entry] = await repository.ledger.list();
    expect(entry?.state).toBe('pending');
    expect(result.releaseFailures.map((f) => f.snapshot)).toEqual([entry?.name]);
    finish(); // the late call creates the snapshot after all
    await vi.waitFor(async () => {
      expect(platform.released).toEqual([entry?.name]);
      expect(await repository.ledger.list()).toEqual([]);
    });
    expect(platform.liveSnapshots()).toEqual([]);
  });

  it('gives up a commit that ignores its deadline: the point stays, the error is reported', async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: CHUNK }] });
    platform.write('d1', 0, randomBytes(CHUNK));
    platform.onCommit = () => new Promise<void>(() => undefined);
    const proxy = createInProcessSyncProxy({
      platforms: [platform],
      repository,
      settings: { httpTimeoutSeconds: 1 },
    });
    const proxies = new SyncProxyRegistry();
    proxies.register(proxy);
    proxies.bind(proxy.id, platform.id);
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK, proxies });
    const result = pointOf(await engine.backup());
    expect(TimeoutError.isInstance(result.sourceCommitError)).toBe(true);
    expect(sha(await restored(result.pointId))).toBe(sha(platform.content('d1')));
    expect(platform.liveSnapshots().map((s) => s.name)).toEqual(platform.created); // kept as the base
    await proxy.close();
  });

  it('fails the host when the snapshot lacks a disk reference, and releases the snapshot', async () => {
    const platform = createMemoryPlatform({
      disks: [
        { id: 'd1', capacity: CHUNK },
        { id: 'd2', capacity: CHUNK },
      ],
    });
    platform.snapshotAnswer = (s) => ({ ...s, disks: s.disks.filter((d) => d.diskId !== 'd2') });
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    const result = await engine.backup();
    expect(result.failed).toBe(2);
    for (const t of result.tasks) {
      expect(t.status === 'failed' && SourceProtocolError.isInstance(t.error)).toBe(true);
    }
    expect(platform.liveSnapshots()).toEqual([]);
    expect(await repository.ledger.list()).toEqual([]);
  });
});

describe('skipped disks and identity', () => {
  it('reports each skipped disk as a skipped outcome, not a success', async () => {
    const platform = createMemoryPlatform({
      hosts: [
        {
          id: 'vm-1',
          disks: [{ id: 'd1', capacity: CHUNK }],
          skippedDisks: [
            { id: 'rdm-1', name: 'Hard disk 2', reason: 'raw-device-mapping', detail: 'physical RDM' },
          ],
        },
      ],
    });
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    const result = await engine.backup();
    expect([result.succeeded, result.failed, result.skipped]).toEqual([1, 0, 1]);
    const skipped = result.tasks.find((t) => t.status === 'skipped');
    expect(skipped).toMatchObject({ diskId: 'rdm-1', reason: 'raw-device-mapping', detail: 'physical RDM' });
    expect((await repository.points()).map((p) => p.diskId)).toEqual(['d1']);
  });

  it('refuses a platform without a usable id, or of another specification version', () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: CHUNK }] });
    for (const id of ['', 'has space', undefined]) {
      const broken = { ...platform, id } as unknown as Platform;
      expect(() => createBackupEngine({ repository, platforms: [broken] })).toThrow(InvalidSettingsError);
    }
    const v1 = { ...platform, specificationVersion: 'v1' } as unknown as Platform;
    expect(() => createBackupEngine({ repository, platforms: [v1] })).toThrow(/specification v2/);
  });

  it("hands the proxy's HTTP communication timeout to every read session and as a deadline", async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: CHUNK }] });
    const proxy = createInProcessSyncProxy({
      platforms: [platform],
      repository,
      settings: { httpTimeoutSeconds: 42 },
    });
    const proxies = new SyncProxyRegistry();
    proxies.register(proxy);
    proxies.bind(proxy.id, platform.id);
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK, proxies });
    const before = Date.now();
    pointOf(await engine.backup());
    const [opened] = platform.opened;
    expect(opened?.requestTimeoutSeconds).toBe(42);
    expect(opened?.deadline).toBeGreaterThanOrEqual(before + 42_000);
    expect(opened?.chunkSize).toBe(CHUNK);
    await proxy.close();
  });
});

describe('open vocabularies', () => {
  it("reads a newer drkit's point: a full-read reason, a consistency and a field it does not know", async () => {
    const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: CHUNK }] });
    platform.write('d1', 0, randomBytes(CHUNK));
    engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
    const { pointId } = pointOf(await engine.backup());
    const path = join(dir, 'repo', 'points', `${pointId}.json`);
    const metadata = parsePointFile(await readFile(path, 'utf8'));
    metadata.validity = { kind: 'full', reason: 'vmware-cbt-epoch-changed', detail: 'a newer word' };
    metadata.consistency = 'group-consistent';
    metadata.somethingNew = { nested: true };
    await writeFile(path, pointFile(metadata));
    await repository.close();
    repository = await openRepository({ store: createLocalFolderStore({ path: join(dir, 'repo') }) });
    const [point] = await repository.points();
    expect(point?.validity).toEqual({
      kind: 'full',
      reason: 'vmware-cbt-epoch-changed',
      detail: 'a newer word',
    });
    expect(point?.consistency).toBe('group-consistent');
    expect(await repository.unreadablePoints()).toEqual([]);
    const [hostPoint] = await repository.hostPoints();
    expect(hostPoint?.consistency).toBe('none'); // an unknown word counts as no better than none
    expect(sha(await restored(pointId))).toBe(sha(platform.content('d1')));
  });
});
