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
const KMS_KEY = /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)\/[A-Za-z0-9/_-]+$/;
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
  /**
   * An encrypted snapshot (`StartSnapshot` with `Encrypted: true`): with the account's `aws/ebs` key, or with
   * `kmsKeyArn`. Built on a parent, the snapshot takes the parent's encryption (EBS refuses `Encrypted` with a
   * `ParentSnapshotId`), so only an encrypted parent restore (with that key, when one is named) is used. Default
   * false; the account's EBS encryption by default may encrypt it anyway (the restore then writes it as an
   * encrypted one).
   */
  readonly encrypted?: boolean;
  /**
   * The KMS key (ARN) of an encrypted snapshot; implies `encrypted`. The credentials need the EBS encryption
   * actions on it (`kms:CreateGrant`, `kms:Decrypt`, `kms:DescribeKey`, `kms:GenerateDataKeyWithoutPlaintext`,
   * `kms:ReEncrypt*`).
   */
  readonly kmsKeyArn?: string;
  readonly signal?: AbortSignal;
}

/** What {@link AwsPlatform.restoreToEbs} made. */
export interface RestoreToEbsResult {
  /** The new EBS snapshot, `completed`: ready for CreateVolume or RegisterImage. */
  readonly snapshotId: string;
  /** The snapshot of the point's parent it was built on, when the parent was restored before. */
  readonly parentSnapshotId: string | undefined;
  readonly volumeSizeGiB: number;
  /**
   * Whether the snapshot is encrypted (asked, or by the account's encryption by default, or from its parent), and
   * its KMS key as StartSnapshot reported it.
   */
  readonly encrypted: boolean;
  readonly kmsKeyArn: string | undefined;
  /**
   * Blocks sent with PutSnapshotBlock: of an unencrypted snapshot the non-zero blocks (and zero blocks over parent
   * data); of an encrypted one every block of the volume, zeros included (a block an encrypted direct-API
   * snapshot never received reads on a volume as garbage, not zeros), except those the parent holds already.
   */
  readonly blocksWritten: number;
}

/** @internal */
export interface AwsRestoreContext {
  readonly clients: AwsClients;
  readonly options: ResolvedAwsOptions;
  readonly limiter: AwsRateLimiter;
}

/** One all-zero EBS block and its SHA-256: zero blocks (many, in an encrypted restore) are not hashed again. */
const ZERO_BLOCK = new Uint8Array(EBS_BLOCK_SIZE);
const ZERO_BLOCK_SHA256 = createHash('sha256').update(ZERO_BLOCK).digest('base64');

function isZero(data: Uint8Array): boolean {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).equals(ZERO_BLOCK);
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
  if (
    options.kmsKeyArn !== undefined &&
    (typeof options.kmsKeyArn !== 'string' || !KMS_KEY.test(options.kmsKeyArn))
  ) {
    throw new InvalidArgumentError(
      `kmsKeyArn must be a KMS key ARN, got ${JSON.stringify(options.kmsKeyArn)}`,
    );
  }
  const askEncrypted = options.encrypted === true || options.kmsKeyArn !== undefined;
  signal?.throwIfAborted();
  const point = await repository.point(pointId, signal ? { signal } : {});
  // The unit of work is a span that both grids divide: a chunk holding whole 512 KiB blocks, or a block holding
  // whole chunks. A chunk size neither a multiple nor a divisor of 512 KiB is refused before anything is sent.
  if (point.chunkSize % EBS_BLOCK_SIZE !== 0 && EBS_BLOCK_SIZE % point.chunkSize !== 0) {
    throw new InvalidArgumentError(
      `point ${pointId}: its chunk size ${point.chunkSize} is neither a multiple nor a divisor of the EBS block size (524288): it cannot be restored to EBS`,
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
  let parent:
    | { snapshotId: string; volumeSizeGiB: number; index: Awaited<ReturnType<Repository['openIndex']>> }
    | undefined;
  if (point.parentId !== undefined) {
    // An encrypted target builds only on an encrypted parent (with the key asked, when one is).
    const candidates = (await restoredSnapshotOf(point.parentId)).filter(
      (s) =>
        s.State === 'completed' &&
        s.SnapshotId &&
        (s.VolumeSize ?? Infinity) <= volumeSizeGiB &&
        (!askEncrypted || s.Encrypted === true) &&
        (options.kmsKeyArn === undefined || s.KmsKeyId === options.kmsKeyArn),
    );
    const found = candidates.sort((a, b) => String(a.SnapshotId).localeCompare(String(b.SnapshotId)))[0];
    if (found?.SnapshotId) {
      const parentPoint = await repository.point(point.parentId, signal ? { signal } : {});
      if (parentPoint.chunkSize === point.chunkSize) {
        parent = {
          snapshotId: found.SnapshotId,
          volumeSizeGiB: found.VolumeSize ?? 0,
          index: await repository.openIndex(parentPoint, signal ? { signal } : {}),
        };
      }
    }
  }

  // Idempotency: the ClientToken is a hash of the repository, the point and the parent, and the tags are fixed,
  // so a second run (after a crash, or twice by mistake) gets the same snapshot back instead of a new one.
  const clientToken = createHash('sha256')
    .update(
      `drkit-restore\0${repository.id}\0${pointId}\0${parent?.snapshotId ?? ''}` +
        (askEncrypted ? `\0encrypted\0${options.kmsKeyArn ?? ''}` : ''),
    )
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
          ...(parent
            ? { ParentSnapshotId: parent.snapshotId }
            : askEncrypted
              ? { Encrypted: true, ...(options.kmsKeyArn ? { KmsKeyArn: options.kmsKeyArn } : {}) }
              : {}),
        }),
        { abortSignal: signal },
      ),
  );
  const snapshotId = started.SnapshotId;
  if (!snapshotId)
    throw new SourceProtocolError(`StartSnapshot for point ${pointId} returned no snapshot id`);
  // Encrypted however it came to be (asked, the parent's, or the account's encryption by default): then every
  // block must be written, zeros included.
  const encrypted =
    (started.SseType !== undefined && started.SseType !== 'none') || started.KmsKeyArn !== undefined;
  const result = (blocksWritten: number): RestoreToEbsResult => ({
    snapshotId,
    parentSnapshotId: parent?.snapshotId,
    volumeSizeGiB,
    encrypted,
    kmsKeyArn: started.KmsKeyArn,
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
  const { chunkSize, capacityBytes } = point;
  // A span: one chunk of whole blocks, or one block of whole chunks.
  const spanBytes = Math.max(chunkSize, EBS_BLOCK_SIZE);
  const spanChunks = spanBytes / chunkSize;
  const spanBlocks = spanBytes / EBS_BLOCK_SIZE;
  const spanCount = Math.ceil(capacityBytes / spanBytes);
  const chunksOf = (s: number) => {
    const first = s * spanChunks;
    return Array.from({ length: Math.min(spanChunks, index.chunkCount - first) }, (_, k) => first + k);
  };
  const idOptions = signal ? { signal } : {};
  const zeroId = (id: Uint8Array) => id.every((byte) => byte === 0);
  /** The id of position `i` of the parent, `undefined` past its end. */
  const parentIdAt = (i: number) =>
    parent !== undefined && i < parent.index.chunkCount ? parent.index.idAt(i, idOptions) : undefined;
  /**
   * Whether index segment `g` needs no write at all (decided from the manifests alone, no segment read): the
   * parent's same segment, or zeros over no parent data into an unencrypted snapshot.
   */
  const segmentSettled = (g: number) => {
    const parentHas = parent !== undefined && g < parent.index.segmentCount;
    if (index.isZeroSegment(g)) return !encrypted && (!parentHas || parent!.index.isZeroSegment(g));
    return (
      parentHas &&
      parent!.index.segmentLength(g) === index.segmentLength(g) &&
      Buffer.from(index.segmentId(g)).equals(Buffer.from(parent!.index.segmentId(g)))
    );
  };
  const put = async (blockIndex: number, block: Uint8Array, zero: boolean) => {
    const checksum = zero ? ZERO_BLOCK_SHA256 : createHash('sha256').update(block).digest('base64');
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
  };
  const putSpan = async (s: number): Promise<void> => {
    const chunks = chunksOf(s);
    const ids = await Promise.all(chunks.map((i) => index.idAt(i, idOptions)));
    const parentIds = await Promise.all(chunks.map(parentIdAt));
    const same = (k: number) => {
      const p = parentIds[k];
      return p !== undefined && Buffer.from(ids[k]!).equals(Buffer.from(p));
    };
    if (chunks.every((_, k) => same(k))) return;
    const parentHasData = parentIds.some((p) => p !== undefined && !zeroId(p));
    const allZero = ids.every(zeroId);
    // Nothing to write: zeros over nothing, of an unencrypted snapshot (unwritten blocks read as zeros there).
    if (allZero && !parentHasData && !encrypted) return;
    const offset = s * spanBytes;
    const spanLength = Math.min(spanBytes, capacityBytes - offset);
    const data = new Uint8Array(spanLength);
    for (const [k, i] of chunks.entries()) {
      if (zeroId(ids[k]!)) continue;
      const at = i * chunkSize - offset;
      const length = Math.min(chunkSize, capacityBytes - i * chunkSize);
      data.set(await repository.readChunk(ids[k]!, length, idOptions), at);
    }
    for (let b = 0; b < spanBlocks && b * EBS_BLOCK_SIZE < spanLength; b++) {
      const block = new Uint8Array(EBS_BLOCK_SIZE);
      block.set(data.subarray(b * EBS_BLOCK_SIZE, Math.min(spanLength, (b + 1) * EBS_BLOCK_SIZE)));
      // A zero block is written only over a parent that may hold data there, or into an encrypted snapshot.
      const zero = isZero(block);
      if (!parentHasData && !encrypted && zero) continue;
      await put(s * spanBlocks + b, zero ? ZERO_BLOCK : block, zero);
    }
  };
  // An encrypted snapshot also gets the zero blocks past the point's end up to the GiB the volume is rounded to
  // (those below the parent's size are the parent's already).
  const firstTail = Math.ceil(capacityBytes / EBS_BLOCK_SIZE);
  const tailStart =
    encrypted && parent ? Math.max(firstTail, (parent.volumeSizeGiB * GIB) / EBS_BLOCK_SIZE) : firstTail;
  const tailBlocks = encrypted ? Math.max(0, (volumeSizeGiB * GIB) / EBS_BLOCK_SIZE - tailStart) : 0;
  const units = spanCount + tailBlocks;
  const putUnit = (u: number) =>
    u < spanCount ? putSpan(u) : put(tailStart + (u - spanCount), ZERO_BLOCK, true);
  let next = 0;
  let stopped = false;
  const worker = async () => {
    try {
      while (!stopped && next < units) {
        signal?.throwIfAborted();
        // A span is within one index segment (a span holds at most two chunks, a segment 1024): skip whole
        // settled segments without reading them, so an incremental costs what changed, not the capacity.
        if (next < spanCount) {
          const g = Math.floor((next * spanChunks) / SEGMENT_CHUNKS);
          if ((next * spanChunks) % SEGMENT_CHUNKS === 0 && segmentSettled(g)) {
            next = Math.min(spanCount, Math.ceil(((g + 1) * SEGMENT_CHUNKS) / spanChunks));
            continue;
          }
        }
        await putUnit(next++);
      }
    } catch (error) {
      // One failure stops the other workers after their current chunk: nothing more is sent.
      stopped = true;
      throw error;
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(1, units)) }, worker));
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
