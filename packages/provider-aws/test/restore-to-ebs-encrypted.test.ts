// Restore to EBS of encrypted targets (every block written, zeros included), of points whose chunk size is not a
// multiple of 512 KiB (re-blocked), and CreateVolume from the restored snapshot, against the AWS emulator: the
// restored snapshot is read back through a volume created from it, where an encrypted snapshot's missing blocks
// would read as garbage.
import { createHash } from 'node:crypto';
import { createBackupEngine, InvalidArgumentError, type Repository } from '@drkit/core';
import { afterEach, beforeEach, expect, it, vi } from 'vitest';
import { createMemoryPlatform } from '../../core/test/memory-platform.js';
import {
  type AwsTestBed,
  BLOCK,
  GIB,
  openTempRepository,
  pattern,
  setUpVolume,
  startAwsTestBed,
  succeeded,
} from './aws-test-setup.js';

// Encrypted restores write every block of a 1 GiB volume (2048 requests of 512 KiB): room for a busy machine.
vi.setConfig({ testTimeout: 300_000 });

const KMS_KEY = 'arn:aws:kms:us-east-1:123456789012:key/0a1b2c3d-1111-2222-3333-444455556666';
const BLOCKS_PER_GIB = GIB / BLOCK;

let bed: AwsTestBed;
let repository: Repository;
let temp: Awaited<ReturnType<typeof openTempRepository>>;

beforeEach(async () => {
  bed = await startAwsTestBed();
  temp = await openTempRepository('drkit-aws-restore-enc-');
  ({ repository } = temp);
});

afterEach(async () => {
  await temp.close();
  await bed.close();
});

/** The SHA-256 of `content` followed by zeros up to `size`. */
function sha256Padded(content: Uint8Array, size: number): string {
  const hash = createHash('sha256').update(content);
  const zeros = Buffer.alloc(4 * 1024 * 1024);
  for (let at = content.length; at < size; at += zeros.length)
    hash.update(zeros.subarray(0, Math.min(zeros.length, size - at)));
  return hash.digest('hex');
}

it('an encrypted restore writes every block, zeros included, and a volume created from it reads back byte-identical', async () => {
  const { emulator } = bed;
  const volumeId = setUpVolume(bed.emulator);
  const platform = bed.platform();
  await using engine = createBackupEngine({ repository, platforms: [platform], chunkSize: 1024 * 1024 });
  const [task] = succeeded(await engine.backup());
  emulator.resetStats();
  const restored = await platform.restoreToEbs({
    repository,
    pointId: task!.result.pointId,
    kmsKeyArn: KMS_KEY,
  });
  expect(restored.encrypted).toBe(true);
  expect(restored.kmsKeyArn).toBe(KMS_KEY);
  // Every block of the 1 GiB volume: the three with data, the zero block 5 and every never-written one.
  expect(restored.blocksWritten).toBe(BLOCKS_PER_GIB);
  expect(emulator.stats().calls.PutSnapshotBlock).toBe(BLOCKS_PER_GIB);
  expect(emulator.snapshot(restored.snapshotId)!.blockCount).toBe(BLOCKS_PER_GIB);

  const created = await platform.createVolumeFromSnapshot({
    snapshotId: restored.snapshotId,
    availabilityZone: `${emulator.region}a`,
    volumeType: 'gp3',
  });
  expect(created).toMatchObject({ availabilityZone: 'us-east-1a', sizeGiB: 1, encrypted: true });
  expect(emulator.volumeSha256(created.volumeId)).toBe(emulator.volumeSha256(volumeId));
  // CreateVolume is idempotent: the same call returns the same volume.
  const again = await platform.createVolumeFromSnapshot({
    snapshotId: restored.snapshotId,
    availabilityZone: `${emulator.region}a`,
    volumeType: 'gp3',
  });
  expect(again.volumeId).toBe(created.volumeId);
});

it("an account's encryption by default is honoured without being asked: the restore writes it as encrypted", async () => {
  await bed.close();
  bed = await startAwsTestBed({ encryptionByDefault: true });
  const { emulator } = bed;
  const volumeId = setUpVolume(bed.emulator);
  const platform = bed.platform();
  await using engine = createBackupEngine({ repository, platforms: [platform], chunkSize: 1024 * 1024 });
  const [task] = succeeded(await engine.backup());
  const restored = await platform.restoreToEbs({ repository, pointId: task!.result.pointId });
  expect(restored.encrypted).toBe(true);
  expect(restored.blocksWritten).toBe(BLOCKS_PER_GIB);
  const created = await platform.createVolumeFromSnapshot({
    snapshotId: restored.snapshotId,
    availabilityZone: `${emulator.region}b`,
  });
  expect(emulator.volumeSha256(created.volumeId)).toBe(emulator.volumeSha256(volumeId));
});

it('an encrypted incremental restore builds on the encrypted restore of its parent, never on an unencrypted one', async () => {
  const { emulator } = bed;
  const volumeId = setUpVolume(bed.emulator);
  const platform = bed.platform();
  await using engine = createBackupEngine({ repository, platforms: [platform], chunkSize: 1024 * 1024 });
  const [first] = succeeded(await engine.backup());
  const plainFirst = await platform.restoreToEbs({ repository, pointId: first!.result.pointId });
  expect(plainFirst.encrypted).toBe(false);
  const encryptedFirst = await platform.restoreToEbs({
    repository,
    pointId: first!.result.pointId,
    encrypted: true,
  });
  expect(encryptedFirst.snapshotId).not.toBe(plainFirst.snapshotId);
  expect(encryptedFirst.kmsKeyArn).toBe('arn:aws:kms:us-east-1:123456789012:alias/aws/ebs');
  emulator.writeVolume(volumeId, 6 * BLOCK, pattern(66));
  emulator.discardVolume(volumeId, 0, BLOCK);
  const [second] = succeeded(await engine.backup());
  emulator.resetStats();
  const restored = await platform.restoreToEbs({
    repository,
    pointId: second!.result.pointId,
    encrypted: true,
  });
  // The encrypted parent (the unencrypted one cannot be: its child would be unencrypted).
  expect(restored.parentSnapshotId).toBe(encryptedFirst.snapshotId);
  expect(restored.encrypted).toBe(true);
  // Chunk 0 (blocks 0-1, zeros now) and chunk 3 (blocks 6-7): the rest is the parent's, all written.
  expect(restored.blocksWritten).toBe(4);
  const created = await platform.createVolumeFromSnapshot({
    snapshotId: restored.snapshotId,
    availabilityZone: `${emulator.region}a`,
  });
  expect(emulator.volumeSha256(created.volumeId)).toBe(emulator.volumeSha256(volumeId));
  // With another key asked, the parent (aws/ebs) is not used: every block is written again.
  const otherKey = await platform.restoreToEbs({
    repository,
    pointId: second!.result.pointId,
    kmsKeyArn: KMS_KEY,
  });
  expect(otherKey.parentSnapshotId).toBeUndefined();
  expect(otherKey.blocksWritten).toBe(BLOCKS_PER_GIB);
});

it('a point of 256 KiB chunks is gathered into 512 KiB blocks (a partial last block zero-padded), plain and encrypted', async () => {
  const { emulator } = bed;
  const capacity = 3 * 1024 * 1024 + 256 * 1024; // 13 chunks of 256 KiB: 6.5 EBS blocks
  const source = createMemoryPlatform({
    id: 'vmware-site',
    mode: 'extents',
    checksums: true,
    disks: [{ id: 'disk-1', capacity }],
  });
  // Chunk 0 and chunk 12 (the last, half a block) hold data; block 2 has data in its second half only.
  source.write('disk-1', 0, pattern(1, 256 * 1024));
  source.write('disk-1', 5 * 256 * 1024, pattern(5, 256 * 1024));
  source.write('disk-1', 12 * 256 * 1024, pattern(12, 256 * 1024));
  await using engine = createBackupEngine({ repository, platforms: [source], chunkSize: 256 * 1024 });
  const [task] = succeeded(await engine.backup());
  const point = await repository.point(task!.result.pointId);
  expect(point.chunkSize).toBe(256 * 1024);
  const expected = sha256Padded(source.content('disk-1'), GIB);
  const platform = bed.platform();

  const plain = await platform.restoreToEbs({ repository, pointId: point.id, concurrency: 3 });
  // Blocks 0, 2 and 6: the others are all zero.
  expect(plain.blocksWritten).toBe(3);
  expect(emulator.snapshotSha256(plain.snapshotId)).toBe(expected);
  expect(
    emulator.readSnapshot(plain.snapshotId, 0, capacity).equals(Buffer.from(source.content('disk-1'))),
  ).toBe(true);

  const encrypted = await platform.restoreToEbs({ repository, pointId: point.id, encrypted: true });
  expect(encrypted.blocksWritten).toBe(BLOCKS_PER_GIB);
  const created = await platform.createVolumeFromSnapshot({
    snapshotId: encrypted.snapshotId,
    availabilityZone: `${emulator.region}a`,
  });
  expect(emulator.volumeSha256(created.volumeId)).toBe(expected);
});

it('a chunk size neither a multiple nor a divisor of 512 KiB is refused before anything is written', async () => {
  const { emulator } = bed;
  setUpVolume(bed.emulator);
  const platform = bed.platform();
  await using engine = createBackupEngine({ repository, platforms: [platform], chunkSize: 1024 * 1024 });
  const [task] = succeeded(await engine.backup());
  // A repository whose point says 768 KiB chunks (the engine makes powers of two; another writer need not).
  const odd: Repository = Object.create(repository, {
    point: {
      value: async (id: string) => ({ ...(await repository.point(id)), chunkSize: 768 * 1024 }),
    },
  });
  emulator.resetStats();
  const error = await platform
    .restoreToEbs({ repository: odd, pointId: task!.result.pointId })
    .catch((e: unknown) => e);
  expect(InvalidArgumentError.isInstance(error)).toBe(true);
  expect((error as Error).message).toMatch(
    /786432 is neither a multiple nor a divisor of the EBS block size/,
  );
  expect(emulator.stats().calls.StartSnapshot ?? 0).toBe(0);
  expect(emulator.stats().calls.PutSnapshotBlock ?? 0).toBe(0);
});

it('createVolumeFromSnapshot refuses a zone of another region before calling EC2', async () => {
  const platform = bed.platform();
  bed.emulator.resetStats();
  const error = await platform
    .createVolumeFromSnapshot({ snapshotId: 'snap-0123456789abcdef0', availabilityZone: 'eu-west-1a' })
    .catch((e: unknown) => e);
  expect(InvalidArgumentError.isInstance(error)).toBe(true);
  expect(bed.emulator.stats().calls.CreateVolume ?? 0).toBe(0);
});
