import { CompleteSnapshotCommand, EBSClient } from '@aws-sdk/client-ebs';
import { createBackupEngine, type Repository, UnreachableError } from '@drkit/core';
import { afterEach, beforeEach, expect, it, vi } from 'vitest';
import { AWS_RESTORED_POINT_TAG } from '../src/index.js';
import {
  type AwsTestBed,
  BLOCK,
  openTempRepository,
  pattern,
  setUpVolume,
  startAwsTestBed,
  succeeded,
} from './aws-test-setup.js';

vi.setConfig({ testTimeout: 120_000 });

let bed: AwsTestBed;
let repository: Repository;

let temp: Awaited<ReturnType<typeof openTempRepository>>;

beforeEach(async () => {
  bed = await startAwsTestBed();
  temp = await openTempRepository('drkit-aws-restore-');
  ({ repository } = temp);
});

afterEach(async () => {
  await temp.close();
  await bed.close();
});

it('a point restored to a new snapshot reads back byte-identical; zero blocks are not written; it is tagged', async () => {
  const { emulator } = bed;
  setUpVolume(bed.emulator);
  const platform = bed.platform();
  await using engine = createBackupEngine({ repository, platforms: [platform], chunkSize: 1024 * 1024 });
  const [task] = succeeded(await engine.backup());
  const source = emulator.snapshots()[0]!;
  emulator.resetStats();
  const restored = await platform.restoreToEbs({ repository, pointId: task!.result.pointId });
  expect(restored.parentSnapshotId).toBeUndefined();
  expect(restored.volumeSizeGiB).toBe(1);
  const info = emulator.snapshot(restored.snapshotId)!;
  expect(info.status).toBe('completed');
  expect(info.source).toBe('direct');
  // Blocks 0, 3 and 6 only: block 5 (zeros) and the unwritten rest were not sent.
  expect(restored.blocksWritten).toBe(3);
  expect(emulator.stats().calls.PutSnapshotBlock).toBe(3);
  expect(info.blockCount).toBe(3);
  expect(emulator.snapshotSha256(restored.snapshotId)).toBe(emulator.snapshotSha256(source.id));
  expect(info.tags).toContainEqual({ Key: AWS_RESTORED_POINT_TAG, Value: task!.result.pointId });
  // Through the EBS direct read path too: the provider's reader lists and reads the restored snapshot.
  let host: Awaited<ReturnType<typeof platform.host>> | undefined;
  for await (const h of platform.hosts()) host = h;
  if (!host) throw new Error('no host');
  const session = await platform.changedBlockReader.open({
    disk: host.disks[0]!,
    diskSnapshot: { diskId: host.disks[0]!.id, ref: restored.snapshotId },
    chunkSize: 1024 * 1024,
  } as Parameters<typeof platform.changedBlockReader.open>[0]);
  const read: number[] = [];
  for await (const extent of session.extents()) {
    if (extent.kind !== 'data') continue;
    const { data } = await session.read({
      offset: extent.offset,
      length: extent.length,
      token: extent.token!,
    });
    expect(Buffer.from(data).equals(emulator.readSnapshot(source.id, extent.offset, extent.length))).toBe(
      true,
    );
    read.push(extent.offset / BLOCK);
  }
  await session.close();
  expect(read).toEqual([0, 3, 6]);
});

it('the restore of an incremental point builds on the restore of its parent and writes only what changed', async () => {
  const { emulator } = bed;
  const volumeId = setUpVolume(bed.emulator);
  const platform = bed.platform();
  await using engine = createBackupEngine({ repository, platforms: [platform], chunkSize: 1024 * 1024 });
  const [first] = succeeded(await engine.backup());
  const firstRestore = await platform.restoreToEbs({ repository, pointId: first!.result.pointId });
  emulator.writeVolume(volumeId, 6 * BLOCK, pattern(66));
  emulator.discardVolume(volumeId, 0, BLOCK);
  const [second] = succeeded(await engine.backup());
  const current = emulator.snapshots().find((s) => s.source === 'ec2')!;
  emulator.resetStats();
  const secondRestore = await platform.restoreToEbs({ repository, pointId: second!.result.pointId });
  expect(secondRestore.parentSnapshotId).toBe(firstRestore.snapshotId);
  // Chunk 0 (blocks 0-1, now zeros over the parent's data) and chunk 3 (blocks 6-7): both blocks of each.
  expect(secondRestore.blocksWritten).toBe(4);
  expect(emulator.snapshotSha256(secondRestore.snapshotId)).toBe(emulator.snapshotSha256(current.id));
});

it('a run after an interruption finishes the same snapshot; a run after success returns it', async () => {
  const { emulator } = bed;
  setUpVolume(bed.emulator);
  const platform = bed.platform();
  await using engine = createBackupEngine({ repository, platforms: [platform], chunkSize: 1024 * 1024 });
  const [task] = succeeded(await engine.backup());
  const source = emulator.snapshots()[0]!;
  const pointId = task!.result.pointId;
  // The third block fails until the run gives up (as a crash would leave it: started, some blocks written).
  emulator.injectFault({ operation: 'PutSnapshotBlock', kind: 'internal-error', blockIndex: 6, times: 4 });
  const failed = await platform
    .restoreToEbs({ repository, pointId, concurrency: 1 })
    .catch((e: unknown) => e);
  expect(UnreachableError.isInstance(failed)).toBe(true);
  const direct = () => emulator.snapshots().filter((s) => s.source === 'direct');
  expect(direct()).toHaveLength(1);
  expect(direct()[0]!.status).toBe('pending');
  const resumed = await platform.restoreToEbs({ repository, pointId });
  expect(direct()).toHaveLength(1);
  expect(resumed.snapshotId).toBe(direct()[0]!.id);
  expect(emulator.snapshotSha256(resumed.snapshotId)).toBe(emulator.snapshotSha256(source.id));
  const again = await platform.restoreToEbs({ repository, pointId });
  expect(again.snapshotId).toBe(resumed.snapshotId);
  expect(again.blocksWritten).toBe(0);
  expect(direct()).toHaveLength(1);
});

it('a run after one interrupted once CompleteSnapshot was sent waits for that snapshot instead of writing again', async () => {
  const { emulator } = bed;
  setUpVolume(bed.emulator);
  const platform = bed.platform();
  await using engine = createBackupEngine({ repository, platforms: [platform], chunkSize: 1024 * 1024 });
  const [task] = succeeded(await engine.backup());
  const source = emulator.snapshots()[0]!;
  const pointId = task!.result.pointId;
  // The first run is aborted right after CompleteSnapshot answered, before its wait saw the snapshot completed.
  const controller = new AbortController();
  const original = EBSClient.prototype.send;
  const spy = vi.spyOn(EBSClient.prototype, 'send').mockImplementation(async function (
    this: EBSClient,
    ...args: Parameters<EBSClient['send']>
  ) {
    const answer = await (original as (...a: unknown[]) => Promise<unknown>).apply(this, args);
    if (args[0] instanceof CompleteSnapshotCommand)
      controller.abort(new Error('crash after CompleteSnapshot'));
    return answer;
  } as never);
  const interrupted = await platform
    .restoreToEbs({ repository, pointId, signal: controller.signal })
    .catch((e: unknown) => e);
  spy.mockRestore();
  expect(String(interrupted)).toMatch(/crash after CompleteSnapshot/);
  const direct = () => emulator.snapshots().filter((s) => s.source === 'direct');
  expect(direct().map((s) => s.status)).toEqual(['pending']);
  emulator.resetStats();
  const resumed = await platform.restoreToEbs({ repository, pointId });
  expect(resumed.snapshotId).toBe(direct()[0]!.id);
  expect(direct().map((s) => s.status)).toEqual(['completed']);
  expect(emulator.stats().calls.CompleteSnapshot ?? 0).toBe(0);
  expect(emulator.snapshotSha256(resumed.snapshotId)).toBe(emulator.snapshotSha256(source.id));
});
