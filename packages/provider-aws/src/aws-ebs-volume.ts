import { createHash } from 'node:crypto';
import { CreateVolumeCommand, DescribeVolumesCommand, type VolumeType } from '@aws-sdk/client-ec2';
import { InvalidArgumentError, SourceProtocolError, waitUntil } from '@drkit/core';
import type { AwsClients } from './aws-clients.js';
import { toDrkitError } from './aws-errors.js';
import type { ResolvedAwsOptions } from './aws-options.js';

/** Options of {@link AwsPlatform.createVolumeFromSnapshot}. */
export interface CreateVolumeFromSnapshotOptions {
  /** The snapshot, typically {@link RestoreToEbsResult.snapshotId}; it must be `completed`. */
  readonly snapshotId: string;
  /** The availability zone of the instance the volume is for (`ap-southeast-1a`): a volume lives in one zone. */
  readonly availabilityZone: string;
  /** Default `gp3`. */
  readonly volumeType?: string;
  /** Provisioned IOPS (io1, io2, gp3). */
  readonly iops?: number;
  /** Throughput in MiB/s (gp3). */
  readonly throughputMiBps?: number;
  /** The size in GiB, not below the snapshot's. Default the snapshot's. */
  readonly sizeGiB?: number;
  /** Tags of the volume, beside drkit's `Name` and `drkit:restored-snapshot`. */
  readonly tags?: Readonly<Record<string, string>>;
  readonly signal?: AbortSignal;
}

/** What {@link AwsPlatform.createVolumeFromSnapshot} made: an `available` volume. */
export interface CreatedVolume {
  readonly volumeId: string;
  readonly availabilityZone: string;
  readonly sizeGiB: number;
  readonly encrypted: boolean;
}

/** @internal */
export interface AwsVolumeContext {
  readonly clients: AwsClients;
  readonly options: ResolvedAwsOptions;
}

const ZONE = /^[a-z]{2}(-[a-z0-9]+)+-\d[a-z]$/;

/**
 * CreateVolume from a snapshot in an availability zone, then a wait (DescribeVolumes, the platform's
 * `snapshotWait`) until the volume is `available`. Idempotent: the `ClientToken` is a hash of the snapshot, the
 * zone and the volume's settings, so a second call returns the same volume.
 *
 * @internal use {@link AwsPlatform.createVolumeFromSnapshot}.
 */
export async function createVolumeFromSnapshot(
  context: AwsVolumeContext,
  options: CreateVolumeFromSnapshotOptions,
): Promise<CreatedVolume> {
  const { clients, options: resolved } = context;
  const { snapshotId, availabilityZone, signal } = options;
  if (typeof snapshotId !== 'string' || !/^snap-[0-9a-f]+$/.test(snapshotId))
    throw new InvalidArgumentError(
      `snapshotId must be a snapshot id (snap-...), got ${JSON.stringify(snapshotId)}`,
    );
  if (
    typeof availabilityZone !== 'string' ||
    !ZONE.test(availabilityZone) ||
    !availabilityZone.startsWith(resolved.region)
  ) {
    throw new InvalidArgumentError(
      `availabilityZone must be a zone of ${resolved.region} (${resolved.region}a), got ${JSON.stringify(availabilityZone)}`,
    );
  }
  for (const [field, value] of [
    ['sizeGiB', options.sizeGiB],
    ['iops', options.iops],
    ['throughputMiBps', options.throughputMiBps],
  ] as const) {
    if (value !== undefined && (!Number.isSafeInteger(value) || value < 1))
      throw new InvalidArgumentError(`${field} must be a positive integer, got ${String(value)}`);
  }
  signal?.throwIfAborted();
  const volumeType = options.volumeType ?? 'gp3';
  const clientToken = createHash('sha256')
    .update(
      JSON.stringify([
        'drkit-volume',
        snapshotId,
        availabilityZone,
        volumeType,
        options.iops ?? null,
        options.throughputMiBps ?? null,
        options.sizeGiB ?? null,
      ]),
    )
    .digest('hex');
  const tags = [
    { Key: 'Name', Value: `drkit restore of ${snapshotId}` },
    { Key: 'drkit:restored-snapshot', Value: snapshotId },
    { Key: 'drkit:platform', Value: resolved.id },
    ...Object.entries(options.tags ?? {}).map(([Key, Value]) => ({ Key, Value })),
  ];
  const ec2Call = async <T>(action: string, what: string, run: () => Promise<T>): Promise<T> => {
    try {
      return await run();
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      throw toDrkitError(error, action, what);
    }
  };
  const created = await ec2Call('ec2:CreateVolume', `CreateVolume from ${snapshotId}`, () =>
    clients.ec2.send(
      new CreateVolumeCommand({
        SnapshotId: snapshotId,
        AvailabilityZone: availabilityZone,
        VolumeType: volumeType as VolumeType,
        ClientToken: clientToken,
        TagSpecifications: [{ ResourceType: 'volume', Tags: tags }],
        ...(options.iops === undefined ? {} : { Iops: options.iops }),
        ...(options.throughputMiBps === undefined ? {} : { Throughput: options.throughputMiBps }),
        ...(options.sizeGiB === undefined ? {} : { Size: options.sizeGiB }),
      }),
      { abortSignal: signal },
    ),
  );
  const volumeId = created.VolumeId;
  if (!volumeId) throw new SourceProtocolError(`CreateVolume from ${snapshotId} returned no volume id`);
  const volume = await waitUntil(
    async () => {
      const described = await ec2Call('ec2:DescribeVolumes', `DescribeVolumes of ${volumeId}`, () =>
        clients.ec2.send(new DescribeVolumesCommand({ VolumeIds: [volumeId] }), { abortSignal: signal }),
      );
      const found = described.Volumes?.[0];
      if (found?.State === 'error')
        throw new SourceProtocolError(`the volume ${volumeId} created from ${snapshotId} failed`);
      return found?.State === 'available' || found?.State === 'in-use' ? found : undefined;
    },
    {
      timeoutMs: resolved.snapshotWait.timeoutMs,
      minDelayMs: resolved.snapshotWait.minDelayMs,
      maxDelayMs: resolved.snapshotWait.maxDelayMs,
      what: `the volume ${volumeId} to become available`,
      ...(signal ? { signal } : {}),
    },
  );
  return {
    volumeId,
    availabilityZone: volume.AvailabilityZone ?? availabilityZone,
    sizeGiB: volume.Size ?? 0,
    encrypted: volume.Encrypted === true,
  };
}
