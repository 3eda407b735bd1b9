import { createHash } from 'node:crypto';
import {
  CompleteSnapshotCommand,
  PutSnapshotBlockCommand,
  StartSnapshotCommand,
  type StartSnapshotCommandOutput,
} from '@aws-sdk/client-ebs';
import { DescribeSnapshotsCommand } from '@aws-sdk/client-ec2';
import {
  InvalidArgumentError,
  type Repository,
  retry,
  SEGMENT_CHUNKS,
  SourceProtocolError,
  waitUntil,
} from '@drkit/core';
import { EBS_BLOCK_SIZE } from './aws-changed-block-reader.js';
import type { AwsClients } from './aws-clients.js';
import { awsErrorFacts, isAwsThrottling, isAwsTransient, toDrkitError } from './aws-errors.js';
import type { ResolvedAwsOptions } from './aws-options.js';
import type { AwsRateLimiter } from './aws-rate-limiter.js';

const GIB = 1024 ** 3;
/** Tags of a snapshot drkit restored: the point and the repository it came from. */
export const AWS_RESTORED_POINT_TAG = 'drkit:restored-point';
export const AWS_RESTORED_REPOSITORY_TAG = 'drkit:repository';
/** Attempts of StartSnapshot / CompleteSnapshot / PutSnapshotBlock failing in transport or with a 5xx. */
const ATTEMPTS = 4;

/** Options of {@link AwsPlatform.restoreToEbs}. */
export interface RestoreToEbsOptions {
  /** The repository holding the point. */
  readonly repository: Repository;
  readonly pointId: string;
  /** Chunks read and written at once. Default 8. */
  readonly concurrency?: number;
  readonly signal?: AbortSignal;
}

/** What {@link AwsPlatform.restoreToEbs} made. */
export interface RestoreToEbsResult {
  /** The new EBS snapshot, `completed`: ready for CreateVolume or RegisterImage. */
  readonly snapshotId: string;
  /** The snapshot of the point's parent it was built on, when the parent was restored before. */
  readonly parentSnapshotId: string | undefined;
  readonly volumeSizeGiB: number;
  /** Blocks sent with PutSnapshotBlock (only non-zero blocks, or blocks that differ from the parent snapshot). */
  readonly blocksWritten: number;
}

/** @internal */
export interface AwsRestoreContext {
  readonly clients: AwsClients;
  readonly options: ResolvedAwsOptions;
  readonly limiter: AwsRateLimiter;
}

function isZero(data: Uint8Array): boolean {
  for (let i = 0; i < data.length; i++) if (data[i] !== 0) return false;
  return true;
}

/**
 * Restores a recovery point as a new EBS snapshot (StartSnapshot / PutSnapshotBlock / CompleteSnapshot), then
 * waits until it is `completed`.
 *
 * @internal use {@link AwsPlatform.restoreToEbs}.
 */
export async function restorePointToEbs(
  context: AwsRestoreContext,
  options: RestoreToEbsOptions,
): Promise<RestoreToEbsResult> {
  const { clients, options: resolved, limiter } = context;
  const { repository, pointId, signal } = options;
  const concurrency = options.concurrency ?? 8;
  if (!Number.isSafeInteger(concurrency) || concurrency < 1 || concurrency > 64) {
    throw new InvalidArgumentError(`concurrency must be an integer from 1 to 64, got ${String(concurrency)}`);
  }
  signal?.throwIfAborted();
  const point = await repository.point(pointId, signal ? { signal } : {});
  if (point.chunkSize % EBS_BLOCK_SIZE !== 0) {
    throw new InvalidArgumentError(
      `point ${pointId}: its chunk size ${point.chunkSize} is not a multiple of the EBS block size (524288); restoring it to EBS is not built yet`,
    );
  }
  const volumeSizeGiB = Math.max(1, Math.ceil(point.capacityBytes / GIB));
  const index = await repository.openIndex(point, signal ? { signal } : {});

  /** Set when EBS refuses a write because the snapshot is no longer open (an earlier run completed it). */
  let sealed = false;
  const send = async <T>(action: string, what: string, run: () => Promise<T>): Promise<T> =>
    retry(run, {
      attempts: ATTEMPTS,
      isRetryable: (error) => isAwsThrottling(error) || isAwsTransient(error),
      ...(signal ? { signal } : {}),
    }).catch((error: unknown) => {
      if (signal?.aborted) throw signal.reason;
      const facts = awsErrorFacts(error);
      if (facts.name === 'ValidationException' && facts.reason === 'INVALID_SNAPSHOT_ID') sealed = true;
      throw toDrkitError(error, action, what);
    });

  const restoredSnapshotOf = async (ofPointId: string) => {
    const described = await send(
      'ec2:DescribeSnapshots',
      `DescribeSnapshots of the restore of ${ofPointId}`,
      () =>
        clients.ec2.send(
          new DescribeSnapshotsCommand({
            OwnerIds: ['self'],
            Filters: [
              { Name: `tag:${AWS_RESTORED_POINT_TAG}`, Values: [ofPointId] },
              { Name: `tag:${AWS_RESTORED_REPOSITORY_TAG}`, Values: [repository.id] },
            ],
          }),
          { abortSignal: signal },
        ),
    );
    return described.Snapshots ?? [];
  };

  // The parent snapshot: the point's parent restored before by drkit from this repository (found by its tags),
  // completed and not larger than this point. Then only the chunks that differ from the parent's are written.
  let parent: { snapshotId: string; index: Awaited<ReturnType<Repository['openIndex']>> } | undefined;
  if (point.parentId !== undefined) {
    const candidates = (await restoredSnapshotOf(point.parentId)).filter(
      (s) => s.State === 'completed' && s.SnapshotId && (s.VolumeSize ?? Infinity) <= volumeSizeGiB,
    );
    const found = candidates.sort((a, b) => String(a.SnapshotId).localeCompare(String(b.SnapshotId)))[0];
    if (found?.SnapshotId) {
      const parentPoint = await repository.point(point.parentId, signal ? { signal } : {});
      if (parentPoint.chunkSize === point.chunkSize) {
        parent = {
          snapshotId: found.SnapshotId,
          index: await repository.openIndex(parentPoint, signal ? { signal } : {}),
        };
      }
    }
  }

  // Idempotency: the ClientToken is a hash of the repository, the point and the parent, and the tags are fixed,
  // so a second run (after a crash, or twice by mistake) gets the same snapshot back instead of a new one.
  const clientToken = createHash('sha256')
    .update(`drkit-restore\0${repository.id}\0${pointId}\0${parent?.snapshotId ?? ''}`)
    .digest('hex');
  const tags = [
    { Key: 'Name', Value: `drkit restore of ${point.diskName} (${pointId})` },
    { Key: AWS_RESTORED_POINT_TAG, Value: pointId },
    { Key: AWS_RESTORED_REPOSITORY_TAG, Value: repository.id },
    { Key: 'drkit:platform', Value: resolved.id },
    { Key: 'drkit:host', Value: point.hostId },
    { Key: 'drkit:disk', Value: point.diskId },
  ];
  const started: StartSnapshotCommandOutput = await send(
    'ebs:StartSnapshot',
    `StartSnapshot for point ${pointId}`,
    () =>
      clients.ebs.send(
        new StartSnapshotCommand({
          VolumeSize: volumeSizeGiB,
          ClientToken: clientToken,
          Tags: tags,
          Description: `drkit restore of point ${pointId}`,
          ...(parent ? { ParentSnapshotId: parent.snapshotId } : {}),
        }),
        { abortSignal: signal },
      ),
  );
  const snapshotId = started.SnapshotId;
  if (!snapshotId)
    throw new SourceProtocolError(`StartSnapshot for point ${pointId} returned no snapshot id`);
  const result = (blocksWritten: number): RestoreToEbsResult => ({
    snapshotId,
    parentSnapshotId: parent?.snapshotId,
    volumeSizeGiB,
    blocksWritten,
  });

  const waitCompleted = () =>
    waitUntil(
      async () => {
        const described = await send('ec2:DescribeSnapshots', `DescribeSnapshots of ${snapshotId}`, () =>
          clients.ec2.send(new DescribeSnapshotsCommand({ SnapshotIds: [snapshotId] }), {
            abortSignal: signal,
          }),
        );
        const state = described.Snapshots?.[0]?.State;
        if (state === 'error')
          throw new SourceProtocolError(`the restored EBS snapshot ${snapshotId} failed`);
        return state === 'completed' ? true : undefined;
      },
      {
        timeoutMs: resolved.snapshotWait.timeoutMs,
        minDelayMs: resolved.snapshotWait.minDelayMs,
        maxDelayMs: resolved.snapshotWait.maxDelayMs,
        what: `the restored EBS snapshot ${snapshotId} to complete`,
        ...(signal ? { signal } : {}),
      },
    );
  // An earlier run got as far as CompleteSnapshot: nothing is left to write.
  if (started.Status === 'completed') return result(0);
  if (started.Status === 'error')
    throw new SourceProtocolError(`the restored EBS snapshot ${snapshotId} failed`);

  // Resumable: AWS cannot list the blocks of a pending snapshot, so a second run writes every block again (a
  // PutSnapshotBlock of a block already written replaces it with the same bytes: the set of blocks is the same).
  const written = new Set<number>();
  using lane = limiter.snapshot(snapshotId, 'PutSnapshotBlock');
  const chunkBlocks = point.chunkSize / EBS_BLOCK_SIZE;
  const idOptions = signal ? { signal } : {};
  const zeroId = (id: Uint8Array) => id.every((byte) => byte === 0);
  /** Whether segment `s` needs no writes at all: the parent's same segment, or zeros over no parent data. */
  const segmentSettled = (s: number) => {
    const parentHas = parent !== undefined && s < parent.index.segmentCount;
    if (index.isZeroSegment(s)) return !parentHas || parent!.index.isZeroSegment(s);
    return (
      parentHas &&
      parent!.index.segmentLength(s) === index.segmentLength(s) &&
      Buffer.from(index.segmentId(s)).equals(Buffer.from(parent!.index.segmentId(s)))
    );
  };
  const putChunk = async (i: number): Promise<void> => {
    const id = await index.idAt(i, idOptions);
    const parentId =
      parent !== undefined && i < parent.index.chunkCount ? await parent.index.idAt(i, idOptions) : undefined;
    if (parentId !== undefined && Buffer.from(id).equals(Buffer.from(parentId))) return;
    const offset = i * point.chunkSize;
    const plainLength = Math.min(point.chunkSize, point.capacityBytes - offset);
    const parentHasData = parentId !== undefined && !zeroId(parentId);
    const data = zeroId(id)
      ? new Uint8Array(plainLength)
      : await repository.readChunk(id, plainLength, idOptions);
    if (zeroId(id) && !parentHasData) return;
    for (let b = 0; b < chunkBlocks && b * EBS_BLOCK_SIZE < plainLength; b++) {
      const block = new Uint8Array(EBS_BLOCK_SIZE);
      block.set(data.subarray(b * EBS_BLOCK_SIZE, Math.min(plainLength, (b + 1) * EBS_BLOCK_SIZE)));
      // A zero block is written only over a parent that may hold data there.
      if (!parentHasData && isZero(block)) continue;
      const blockIndex = i * chunkBlocks + b;
      const checksum = createHash('sha256').update(block).digest('base64');
      const what = `PutSnapshotBlock ${blockIndex} of ${snapshotId}`;
      await send('ebs:PutSnapshotBlock', what, () =>
        lane.run(
          () =>
            clients.ebs.send(
              new PutSnapshotBlockCommand({
                SnapshotId: snapshotId,
                BlockIndex: blockIndex,
                BlockData: block,
                DataLength: EBS_BLOCK_SIZE,
                Checksum: checksum,
                ChecksumAlgorithm: 'SHA256',
              }),
              { abortSignal: signal },
            ),
          signal,
          what,
        ),
      );
      written.add(blockIndex);
    }
  };
  let next = 0;
  let stopped = false;
  const worker = async () => {
    try {
      while (!stopped && next < index.chunkCount) {
        signal?.throwIfAborted();
        const s = Math.floor(next / SEGMENT_CHUNKS);
        if (next % SEGMENT_CHUNKS === 0 && segmentSettled(s)) {
          next = Math.min(index.chunkCount, (s + 1) * SEGMENT_CHUNKS);
          continue;
        }
        await putChunk(next++);
      }
    } catch (error) {
      // One failure stops the other workers after their current chunk: nothing more is sent.
      stopped = true;
      throw error;
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(1, index.chunkCount)) }, worker));
    await send('ebs:CompleteSnapshot', `CompleteSnapshot of ${snapshotId}`, () =>
      clients.ebs.send(
        new CompleteSnapshotCommand({ SnapshotId: snapshotId, ChangedBlocksCount: written.size }),
        {
          abortSignal: signal,
        },
      ),
    );
  } catch (error) {
    // StartSnapshot gave back a snapshot an earlier run already completed (CompleteSnapshot was sent, the wait
    // was interrupted): EBS refuses writes to it (`INVALID_SNAPSHOT_ID`). Its blocks are all there: wait for it.
    if (!sealed || signal?.aborted) throw error;
    await waitCompleted();
    return result(0);
  }
  await waitCompleted();
  return result(written.size);
}
