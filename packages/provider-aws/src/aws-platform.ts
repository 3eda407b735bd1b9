import {
  GetSnapshotBlockCommand,
  ListChangedBlocksCommand,
  ListSnapshotBlocksCommand,
} from '@aws-sdk/client-ebs';
import {
  type _InstanceType,
  CreateSnapshotsCommand,
  type CreateSnapshotsCommandOutput,
  DeleteSnapshotCommand,
  DescribeInstancesCommand,
  type DescribeInstancesCommandOutput,
  DescribeInstanceTypesCommand,
  DescribeSnapshotsCommand,
  DescribeVolumesCommand,
  type Instance,
  type InstanceTypeInfo,
  type Volume,
} from '@aws-sdk/client-ec2';
import { GetCallerIdentityCommand } from '@aws-sdk/client-sts';
import {
  abnormalStatus,
  type CallOptions,
  type CreateSnapshotOptions,
  type Disk,
  type Host,
  type HostSnapshot,
  InvalidArgumentError,
  NotFoundError,
  PermissionError,
  type Platform,
  type PlatformStatus,
  QuiesceFailedError,
  type ReleaseSnapshotOptions,
  type SkippedDisk,
  SourceProtocolError,
  waitUntil,
} from '@drkit/core';
import { type AwsChangedBlockReader, createAwsChangedBlockReader } from './aws-changed-block-reader.js';
import { type AwsClients, createAwsClients } from './aws-clients.js';
import { type RestoreToEbsOptions, type RestoreToEbsResult, restorePointToEbs } from './aws-ebs-restore.js';
import {
  type CreatedVolume,
  type CreateVolumeFromSnapshotOptions,
  createVolumeFromSnapshot,
} from './aws-ebs-volume.js';
import { awsErrorFacts, deniedAction, toDrkitError } from './aws-errors.js';
import { type AwsPlatformOptions, resolveAwsOptions } from './aws-options.js';
import { AwsRateLimiter, type AwsRateLimiterState } from './aws-rate-limiter.js';
import { discoverAwsRegion } from './aws-regions.js';

const GIB = 1024 ** 3;
/** Tags drkit puts on its snapshots: the snapshot's name (the ledger's), the instance, the platform. */
export const AWS_SNAPSHOT_TAG = 'drkit:snapshot';
export const AWS_HOST_TAG = 'drkit:host';
export const AWS_PLATFORM_TAG = 'drkit:platform';
/** Instance states listed as hosts (terminated and shutting-down instances are not). */
const LISTED_STATES = ['pending', 'running', 'stopping', 'stopped'];
/** A snapshot and an instance id that do not exist, for permission probes. */
const PROBE_SNAPSHOT = 'snap-00000000000000000';
const PROBE_INSTANCE = 'i-00000000000000000';
const PROBE_TOKEN = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==';

/** The IAM actions a backup needs (see the README for the policy). */
export const AWS_BACKUP_ACTIONS = [
  'ec2:DescribeInstances',
  'ec2:DescribeVolumes',
  'ec2:DescribeInstanceTypes',
  'ec2:DescribeSnapshots',
  'ec2:CreateSnapshots',
  'ec2:CreateTags',
  'ec2:DeleteSnapshot',
  'ebs:ListSnapshotBlocks',
  'ebs:ListChangedBlocks',
  'ebs:GetSnapshotBlock',
] as const;

/** What {@link AwsPlatform.checkPermissions} found. */
export interface AwsPermissionReport {
  /** The account the credentials belong to (GetCallerIdentity). */
  readonly accountId: string;
  /** The caller's ARN. */
  readonly arn: string;
  /** The actions probed, in {@link AWS_BACKUP_ACTIONS} order. */
  readonly checked: readonly string[];
  /** The actions denied. */
  readonly missing: readonly string[];
}

/** A {@link @drkit/core!Platform} over the EC2 instances of one AWS account and region. */
export interface AwsPlatform extends Platform, AsyncDisposable {
  readonly kind: 'aws';
  /** The console's name of the platform. */
  readonly name: string;
  readonly region: string;
  readonly changedBlockReader: AwsChangedBlockReader;
  /**
   * Checks the credentials (GetCallerIdentity), the permissions ({@link AwsPlatform.checkPermissions}) and counts
   * the instances. Reports `abnormal` with an `AUTHENTICATION_FAILED`, `PERMISSION_DENIED` (naming the missing IAM
   * actions) or `UNREACHABLE` code instead of throwing; throws only when aborted.
   */
  verify(options?: CallOptions): Promise<PlatformStatus>;
  /**
   * The instances (not terminated), page by page, each with its EBS volumes as disks (id = volume id, name = the
   * device) and its instance-store volumes as skipped disks (`unsupported-disk`).
   *
   * @throws {@link @drkit/core!AuthenticationError}, {@link @drkit/core!PermissionError},
   * {@link @drkit/core!UnreachableError}.
   */
  hosts(options?: CallOptions): AsyncIterable<Host>;
  /**
   * One instance by id.
   *
   * @throws {@link @drkit/core!NotFoundError} when it does not exist; the errors of {@link AwsPlatform.hosts}.
   */
  host(instanceId: string, options?: CallOptions): Promise<Host>;
  /**
   * Probes every action of {@link AWS_BACKUP_ACTIONS}: EC2 ones with `DryRun`, EBS ones (which have no DryRun)
   * with a call on a snapshot that does not exist (`AccessDeniedException` means denied). A policy that allows
   * an action only on some resources can pass the probe and still be denied later.
   *
   * @throws {@link @drkit/core!AuthenticationError} when the credentials are refused;
   * {@link @drkit/core!UnreachableError}.
   */
  checkPermissions(options?: CallOptions): Promise<AwsPermissionReport>;
  /**
   * `CreateSnapshots` of the host's EBS volumes (volumes not among `host.disks` are excluded): one snapshot per
   * volume, crash-consistent across the instance (`consistency: 'host'`), tagged `drkit:snapshot = name`; waits
   * until every one is `completed`. When the wait fails, times out or is aborted, the snapshots are deleted.
   *
   * @throws {@link @drkit/core!QuiesceFailedError} for `quiesce: 'required'` (drkit does not quiesce EC2 guests);
   * {@link @drkit/core!NotFoundError} when the instance or a volume is gone; {@link @drkit/core!TimeoutError}
   * when the snapshots do not complete in time; {@link @drkit/core!SourceProtocolError} when one fails
   * (`error` state); the access errors.
   */
  createSnapshot(options: CreateSnapshotOptions): Promise<HostSnapshot>;
  /**
   * Deletes every snapshot tagged `drkit:snapshot = name` and `drkit:host = hostId`. Idempotent.
   *
   * @throws the access errors; {@link @drkit/core!PermissionError} naming `ec2:DeleteSnapshot`.
   */
  releaseSnapshot(options: ReleaseSnapshotOptions): Promise<void>;
  /**
   * The adaptive rate limiter's current rates (GetSnapshotBlock per account and per open snapshot, list calls)
   * and the throttled answers it has seen: for a log or a dashboard.
   */
  rateLimiterState(): AwsRateLimiterState;
  /**
   * Restores a recovery point of an EBS volume (or of any disk whose chunk size is a multiple or a divisor of
   * 512 KiB: smaller chunks are gathered into blocks) as a new EBS snapshot in this platform's account and region,
   * ready for CreateVolume ({@link AwsPlatform.createVolumeFromSnapshot}) or RegisterImage:
   * `StartSnapshot`, `PutSnapshotBlock` of every non-zero block with its SHA-256 (of every block, zeros included,
   * when the snapshot is encrypted: `encrypted` / `kmsKeyArn`, or the account's encryption by default),
   * `CompleteSnapshot`, then a wait until it is `completed`. When the point's parent was restored before (a
   * completed snapshot tagged `drkit:restored-point` = the parent's id and `drkit:repository` = this repository,
   * encrypted when an encrypted one is asked), it is the `ParentSnapshotId` and only the chunks that differ are
   * written. Idempotent (a `ClientToken` from the repository, point, parent and encryption): a second run after an
   * interruption continues the same snapshot, writing its blocks again; a run after success returns the snapshot.
   *
   * @throws {@link @drkit/core!NotFoundError} for an unknown point; {@link @drkit/core!InvalidArgumentError} for
   * a chunk size neither a multiple nor a divisor of 512 KiB (before anything is written) or a malformed
   * `kmsKeyArn`; {@link @drkit/core!PermissionError} naming `ebs:StartSnapshot`,
   * `ebs:PutSnapshotBlock`, `ebs:CompleteSnapshot` or `ec2:DescribeSnapshots`; the repository's errors
   * (a damaged chunk is a `ChecksumMismatchError`). Rejects with `signal.reason` when aborted.
   *
   * @example
   * ```ts
   * const { snapshotId } = await platform.restoreToEbs({ repository, pointId: point.id });
   * ```
   */
  restoreToEbs(options: RestoreToEbsOptions): Promise<RestoreToEbsResult>;
  /**
   * `CreateVolume` from a snapshot (a restored one) in an availability zone, tagged `drkit:restored-snapshot`,
   * then a wait until the volume is `available`: ready for `AttachVolume`. An encrypted snapshot makes an
   * encrypted volume. Idempotent (a `ClientToken` from the snapshot, zone and settings).
   *
   * @throws {@link @drkit/core!InvalidArgumentError} for a malformed snapshot id or a zone of another region;
   * {@link @drkit/core!PermissionError} naming `ec2:CreateVolume` (tags need `ec2:CreateTags` too) or
   * `ec2:DescribeVolumes`; {@link @drkit/core!TimeoutError} after `snapshotWait.timeoutMs`;
   * {@link @drkit/core!SourceProtocolError} when the volume fails (`error`).
   *
   * @example
   * ```ts
   * const { snapshotId } = await platform.restoreToEbs({ repository, pointId: point.id });
   * const { volumeId } = await platform.createVolumeFromSnapshot({ snapshotId, availabilityZone: 'ap-southeast-1a' });
   * ```
   */
  createVolumeFromSnapshot(options: CreateVolumeFromSnapshotOptions): Promise<CreatedVolume>;
  /** Closes the SDK clients (their sockets). */
  close(): Promise<void>;
}

/**
 * Creates the platform of one AWS account and region: EC2 instances as hosts, their EBS volumes as disks,
 * multi-volume snapshots (`CreateSnapshots`) as points in time, and the data through the EBS direct APIs
 * (`ListSnapshotBlocks` for the first backup, `ListChangedBlocks` against the previous drkit snapshot after,
 * `GetSnapshotBlock` with its SHA-256 checked). Credentials are used only as given, never read from the
 * environment or the shared config files.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming the field when an option is invalid.
 *
 * @example
 * ```ts
 * import { createBackupEngine, createLocalFolderStore, openRepository } from '@drkit/core';
 * import { createAwsPlatform } from '@drkit/provider-aws';
 *
 * const platform = createAwsPlatform({
 *   id: 'aws-prod',
 *   region: 'ap-southeast-1',
 *   credentials: { accessKeyId: 'AKIA...', secretAccessKey: '...' },
 * });
 * console.log(await platform.verify()); // { status: 'normal', hostCount: 12, ... }
 * const repository = await openRepository({ store: createLocalFolderStore({ path: './repo' }), create: true });
 * await using engine = createBackupEngine({ repository, platforms: [platform] });
 * await engine.backup({ hosts: ['i-0123456789abcdef0'] });
 * ```
 */
export function createAwsPlatform(options: AwsPlatformOptions): AwsPlatform {
  const resolved = resolveAwsOptions(options);
  const clients: AwsClients = createAwsClients(resolved);
  const platformId = resolved.id;
  const instanceTypes = new Map<string, InstanceTypeInfo | undefined>();

  async function call<T>(
    action: string,
    what: string,
    signal: AbortSignal | undefined,
    run: () => Promise<T>,
  ): Promise<T> {
    signal?.throwIfAborted();
    try {
      return await run();
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      throw toDrkitError(error, action, what);
    }
  }

  async function describeVolumes(
    ids: readonly string[],
    signal: AbortSignal | undefined,
  ): Promise<Map<string, Volume>> {
    const volumes = new Map<string, Volume>();
    for (let at = 0; at < ids.length; at += 200) {
      // By filter, not VolumeIds: a volume deleted meanwhile is then missing from the answer, not an error.
      const batch = ids.slice(at, at + 200);
      let token: string | undefined;
      do {
        const page = await call('ec2:DescribeVolumes', 'DescribeVolumes', signal, () =>
          clients.ec2.send(
            new DescribeVolumesCommand({
              Filters: [{ Name: 'volume-id', Values: batch }],
              MaxResults: 500,
              NextToken: token,
            }),
            { abortSignal: signal },
          ),
        );
        for (const volume of page.Volumes ?? []) if (volume.VolumeId) volumes.set(volume.VolumeId, volume);
        token = page.NextToken || undefined;
      } while (token);
    }
    return volumes;
  }

  async function describeInstanceTypes(
    types: readonly string[],
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const unknown = [...new Set(types)].filter((t) => !instanceTypes.has(t));
    for (let at = 0; at < unknown.length; at += 100) {
      const batch = unknown.slice(at, at + 100);
      const answer = await call('ec2:DescribeInstanceTypes', 'DescribeInstanceTypes', signal, () =>
        clients.ec2.send(new DescribeInstanceTypesCommand({ InstanceTypes: batch as _InstanceType[] }), {
          abortSignal: signal,
        }),
      );
      for (const name of batch) instanceTypes.set(name, undefined);
      for (const info of answer.InstanceTypes ?? [])
        if (info.InstanceType) instanceTypes.set(info.InstanceType, info);
    }
  }

  function toHost(instance: Instance, volumes: ReadonlyMap<string, Volume>): Host {
    const id = instance.InstanceId!;
    const disks: Disk[] = [];
    const skipped: SkippedDisk[] = [];
    for (const mapping of instance.BlockDeviceMappings ?? []) {
      const volumeId = mapping.Ebs?.VolumeId;
      const device = mapping.DeviceName ?? volumeId ?? 'unknown';
      if (!volumeId) continue;
      const volume = volumes.get(volumeId);
      if (!volume || volume.Size === undefined) {
        skipped.push({
          id: volumeId,
          name: device,
          reason: 'backing-missing',
          detail: `EBS volume ${volumeId} at ${device} is mapped but EC2 does not describe it any more (deleted or detaching)`,
        });
        continue;
      }
      disks.push({
        id: volumeId,
        hostId: id,
        name: device,
        capacityBytes: volume.Size * GIB,
        attributes: {
          'aws.volumeId': volumeId,
          'aws.deviceName': device,
          'aws.rootDevice': String(device === instance.RootDeviceName),
          'aws.volumeType': volume.VolumeType ?? 'unknown',
          'aws.sizeGiB': String(volume.Size),
          'aws.encrypted': String(volume.Encrypted === true),
          ...(volume.KmsKeyId ? { 'aws.kmsKeyId': volume.KmsKeyId } : {}),
          ...(volume.Iops !== undefined ? { 'aws.iops': String(volume.Iops) } : {}),
          ...(mapping.Ebs?.DeleteOnTermination !== undefined
            ? { 'aws.deleteOnTermination': String(mapping.Ebs.DeleteOnTermination) }
            : {}),
        },
      });
    }
    const storage = instanceTypes.get(instance.InstanceType ?? '')?.InstanceStorageInfo;
    let ephemeral = 0;
    for (const group of storage?.Disks ?? []) {
      for (let i = 0; i < (group.Count ?? 0); i++, ephemeral++) {
        skipped.push({
          id: `${id}:ephemeral${ephemeral}`,
          name: `ephemeral${ephemeral}`,
          reason: 'unsupported-disk',
          detail:
            `instance-store volume ${ephemeral} of ${instance.InstanceType} (${group.SizeInGB} GB ${group.Type ?? ''}` +
            `)${ephemeral === 0 && instance.RootDeviceType === 'instance-store' ? ', the root device' : ''}: ` +
            'ephemeral storage that EBS snapshots and the EBS direct APIs do not reach; protect it with the drkit agent',
        });
      }
    }
    if (instance.RootDeviceType === 'instance-store' && ephemeral === 0) {
      skipped.push({
        id: `${id}:${instance.RootDeviceName ?? 'root'}`,
        name: instance.RootDeviceName ?? 'root',
        reason: 'unsupported-disk',
        detail:
          'the root device is an instance-store volume, which EBS snapshots do not cover; protect it with the drkit agent',
      });
    }
    const name = instance.Tags?.find((t) => t.Key === 'Name')?.Value;
    return {
      id,
      name: name && name !== '' ? name : id,
      platformId,
      disks,
      ...(skipped.length > 0 ? { skippedDisks: skipped } : {}),
      attributes: {
        'aws.instanceId': id,
        'aws.instanceType': instance.InstanceType ?? 'unknown',
        'aws.state': instance.State?.Name ?? 'unknown',
        'aws.platform': String(instance.Platform ?? '').toLowerCase() === 'windows' ? 'windows' : 'linux',
        ...(instance.PlatformDetails ? { 'aws.platformDetails': instance.PlatformDetails } : {}),
        ...(instance.Placement?.AvailabilityZone
          ? { 'aws.availabilityZone': instance.Placement.AvailabilityZone }
          : {}),
        ...(instance.RootDeviceName ? { 'aws.rootDeviceName': instance.RootDeviceName } : {}),
        ...(instance.RootDeviceType ? { 'aws.rootDeviceType': instance.RootDeviceType } : {}),
        ...(instance.ImageId ? { 'aws.imageId': instance.ImageId } : {}),
      },
    };
  }

  async function* hostsOfPage(
    page: DescribeInstancesCommandOutput,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<Host> {
    const instances = (page.Reservations ?? []).flatMap((r) => r.Instances ?? []).filter((i) => i.InstanceId);
    const volumeIds = instances
      .flatMap((i) => (i.BlockDeviceMappings ?? []).map((m) => m.Ebs?.VolumeId))
      .filter((v): v is string => v !== undefined);
    const volumes = await describeVolumes(volumeIds, signal);
    await describeInstanceTypes(
      instances.map((i) => i.InstanceType as string | undefined).filter((t): t is string => t !== undefined),
      signal,
    );
    for (const instance of instances) yield toHost(instance, volumes);
  }

  async function* hosts(callOptions: CallOptions = {}): AsyncGenerator<Host> {
    const { signal } = callOptions;
    let token: string | undefined;
    do {
      const page = await call('ec2:DescribeInstances', 'DescribeInstances', signal, () =>
        clients.ec2.send(
          new DescribeInstancesCommand({
            Filters: [{ Name: 'instance-state-name', Values: LISTED_STATES }],
            MaxResults: resolved.inventoryPageSize,
            NextToken: token,
          }),
          { abortSignal: signal },
        ),
      );
      yield* hostsOfPage(page, signal);
      token = page.NextToken || undefined;
    } while (token);
  }

  async function describeInstance(
    instanceId: string,
    signal: AbortSignal | undefined,
  ): Promise<DescribeInstancesCommandOutput> {
    return call('ec2:DescribeInstances', `DescribeInstances ${instanceId}`, signal, () =>
      clients.ec2.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }), { abortSignal: signal }),
    );
  }

  async function host(instanceId: string, callOptions: CallOptions = {}): Promise<Host> {
    const { signal } = callOptions;
    if (!/^i-[0-9a-f]{8,17}$/.test(instanceId))
      throw new InvalidArgumentError(`${JSON.stringify(instanceId)} is not an EC2 instance id`);
    const page = await describeInstance(instanceId, signal);
    for await (const found of hostsOfPage(page, signal)) return found;
    throw new NotFoundError(`EC2 instance ${instanceId} does not exist in ${resolved.region}`);
  }

  /** Whether an error is a probe's "allowed" answer (a DryRun that would have succeeded, a missing resource). */
  async function probe(
    action: string,
    run: () => Promise<unknown>,
    signal: AbortSignal | undefined,
  ): Promise<string | undefined> {
    try {
      await run();
      return undefined;
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      const facts = awsErrorFacts(error);
      if (
        facts.name === 'UnauthorizedOperation' ||
        facts.name === 'AccessDeniedException' ||
        facts.name === 'AccessDenied'
      ) {
        return deniedAction(error) ?? action;
      }
      const drkit = toDrkitError(error, action, `checking ${action}`);
      if (drkit.name === 'AuthenticationError' || drkit.name === 'UnreachableError') throw drkit;
      return undefined; // DryRunOperation, a missing probe resource, a validation error: the call was allowed
    }
  }

  async function checkPermissions(callOptions: CallOptions = {}): Promise<AwsPermissionReport> {
    const { signal } = callOptions;
    const identity = await call('sts:GetCallerIdentity', 'GetCallerIdentity', signal, () =>
      clients.sts.send(new GetCallerIdentityCommand({}), { abortSignal: signal }),
    );
    const o = { abortSignal: signal };
    const probes: Record<(typeof AWS_BACKUP_ACTIONS)[number], () => Promise<unknown>> = {
      'ec2:DescribeInstances': () => clients.ec2.send(new DescribeInstancesCommand({ DryRun: true }), o),
      'ec2:DescribeVolumes': () => clients.ec2.send(new DescribeVolumesCommand({ DryRun: true }), o),
      'ec2:DescribeInstanceTypes': () =>
        clients.ec2.send(new DescribeInstanceTypesCommand({ DryRun: true }), o),
      'ec2:DescribeSnapshots': () =>
        clients.ec2.send(new DescribeSnapshotsCommand({ DryRun: true, OwnerIds: ['self'] }), o),
      'ec2:CreateSnapshots': () =>
        clients.ec2.send(
          new CreateSnapshotsCommand({ DryRun: true, InstanceSpecification: { InstanceId: PROBE_INSTANCE } }),
          o,
        ),
      'ec2:CreateTags': () =>
        clients.ec2.send(
          new CreateSnapshotsCommand({
            DryRun: true,
            InstanceSpecification: { InstanceId: PROBE_INSTANCE },
            TagSpecifications: [
              { ResourceType: 'snapshot', Tags: [{ Key: AWS_SNAPSHOT_TAG, Value: 'probe' }] },
            ],
          }),
          o,
        ),
      'ec2:DeleteSnapshot': () =>
        clients.ec2.send(new DeleteSnapshotCommand({ DryRun: true, SnapshotId: PROBE_SNAPSHOT }), o),
      'ebs:ListSnapshotBlocks': () =>
        clients.ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: PROBE_SNAPSHOT, MaxResults: 100 }), o),
      'ebs:ListChangedBlocks': () =>
        clients.ebs.send(
          new ListChangedBlocksCommand({ SecondSnapshotId: PROBE_SNAPSHOT, MaxResults: 100 }),
          o,
        ),
      'ebs:GetSnapshotBlock': () =>
        clients.ebs.send(
          new GetSnapshotBlockCommand({ SnapshotId: PROBE_SNAPSHOT, BlockIndex: 0, BlockToken: PROBE_TOKEN }),
          o,
        ),
    };
    const results = await Promise.all(
      AWS_BACKUP_ACTIONS.map((action) => probe(action, probes[action], signal)),
    );
    // The CreateTags probe is denied as CreateSnapshots when that is missing too: name each action once.
    const missing = [...new Set(results.filter((r): r is string => r !== undefined))];
    return {
      accountId: identity.Account ?? 'unknown',
      arn: identity.Arn ?? 'unknown',
      checked: [...AWS_BACKUP_ACTIONS],
      missing: [
        ...AWS_BACKUP_ACTIONS.filter((a) => missing.includes(a)),
        ...missing.filter((m) => !(AWS_BACKUP_ACTIONS as readonly string[]).includes(m)),
      ],
    };
  }

  async function verify(callOptions: CallOptions = {}): Promise<PlatformStatus> {
    const { signal } = callOptions;
    signal?.throwIfAborted();
    try {
      const report = await checkPermissions(callOptions);
      if (report.missing.length > 0) {
        throw new PermissionError(
          `the AWS credentials of ${report.arn} lack ${report.missing.join(', ')}: allow ${report.missing.length === 1 ? 'this action' : 'these actions'} in the user's IAM policy (see the provider's README)`,
        );
      }
      let hostCount = 0;
      let token: string | undefined;
      do {
        const page = await call('ec2:DescribeInstances', 'DescribeInstances', signal, () =>
          clients.ec2.send(
            new DescribeInstancesCommand({
              Filters: [{ Name: 'instance-state-name', Values: LISTED_STATES }],
              MaxResults: resolved.inventoryPageSize,
              NextToken: token,
            }),
            { abortSignal: signal },
          ),
        );
        for (const reservation of page.Reservations ?? []) hostCount += reservation.Instances?.length ?? 0;
        token = page.NextToken || undefined;
      } while (token);
      return { status: 'normal', hostCount, checkedAt: new Date().toISOString() };
    } catch (error) {
      return abnormalStatus(error, signal ? { signal } : {});
    }
  }

  async function deleteSnapshots(ids: readonly string[], signal: AbortSignal | undefined): Promise<void> {
    const failures: unknown[] = [];
    await Promise.all(
      ids.map(async (id) => {
        try {
          await clients.ec2.send(new DeleteSnapshotCommand({ SnapshotId: id }), { abortSignal: signal });
        } catch (error) {
          if (signal?.aborted) return;
          if (awsErrorFacts(error).name === 'InvalidSnapshot.NotFound') return; // already gone
          failures.push(toDrkitError(error, 'ec2:DeleteSnapshot', `DeleteSnapshot ${id}`));
        }
      }),
    );
    signal?.throwIfAborted();
    if (failures.length > 0) throw failures[0];
  }

  async function createSnapshot(snapshotOptions: CreateSnapshotOptions): Promise<HostSnapshot> {
    const { host: target, name, quiesce, signal } = snapshotOptions;
    signal?.throwIfAborted();
    if (quiesce === 'required') {
      throw new QuiesceFailedError(
        `drkit does not quiesce EC2 guests: instance ${target.id} can be snapshotted crash-consistent across its volumes only`,
      );
    }
    if (typeof name !== 'string' || name === '' || name.length > 255) {
      throw new InvalidArgumentError(
        `${JSON.stringify(name)} is not a usable snapshot name (1-255 characters)`,
      );
    }
    if (target.disks.length === 0)
      throw new InvalidArgumentError(`host ${target.id} has no EBS volumes to snapshot`);
    const page = await describeInstance(target.id, signal);
    const instance = page.Reservations?.[0]?.Instances?.[0];
    if (!instance) throw new NotFoundError(`EC2 instance ${target.id} does not exist in ${resolved.region}`);
    const mapped = new Map(
      (instance.BlockDeviceMappings ?? [])
        .filter((m) => m.Ebs?.VolumeId)
        .map((m) => [m.Ebs!.VolumeId!, m.DeviceName ?? ''] as const),
    );
    const wanted = new Set(target.disks.map((d) => d.id));
    for (const disk of target.disks) {
      if (!mapped.has(disk.id)) {
        throw new NotFoundError(
          `EBS volume ${disk.id} (${disk.name}) is no longer attached to instance ${target.id}`,
        );
      }
    }
    const rootVolume = [...mapped].find(([, device]) => device === instance.RootDeviceName)?.[0];
    const excluded = [...mapped.keys()].filter((v) => v !== rootVolume && !wanted.has(v));
    if (excluded.length > 40) {
      throw new InvalidArgumentError(
        `instance ${target.id}: CreateSnapshots can exclude at most 40 data volumes`,
      );
    }
    let created: CreateSnapshotsCommandOutput;
    try {
      created = await call('ec2:CreateSnapshots', `CreateSnapshots of ${target.id}`, signal, () =>
        clients.ec2.send(
          new CreateSnapshotsCommand({
            InstanceSpecification: {
              InstanceId: target.id,
              ExcludeBootVolume: rootVolume !== undefined && !wanted.has(rootVolume),
              ...(excluded.length > 0 ? { ExcludeDataVolumeIds: excluded } : {}),
            },
            Description: `drkit ${name} of ${target.id}`,
            TagSpecifications: [
              {
                ResourceType: 'snapshot',
                Tags: [
                  { Key: 'Name', Value: name },
                  { Key: AWS_SNAPSHOT_TAG, Value: name },
                  { Key: AWS_HOST_TAG, Value: target.id },
                  { Key: AWS_PLATFORM_TAG, Value: platformId },
                ],
              },
            ],
          }),
          { abortSignal: signal },
        ),
      );
    } catch (error) {
      // The answer may be lost after AWS created the snapshots (an abort, a cut connection): remove them by name.
      await releaseByName(target.id, name, undefined).catch(() => undefined);
      throw error;
    }
    const snapshots = (created.Snapshots ?? []).filter((s) => s.SnapshotId && s.VolumeId);
    const ids = snapshots.map((s) => s.SnapshotId!);
    try {
      const byVolume = new Map(snapshots.map((s) => [s.VolumeId!, s.SnapshotId!]));
      const missing = target.disks.filter((d) => !byVolume.has(d.id));
      if (missing.length > 0) {
        throw new SourceProtocolError(
          `CreateSnapshots of ${target.id} returned no snapshot of ${missing.map((d) => d.id).join(', ')}`,
        );
      }
      await waitUntil(
        async () => {
          const described = await call('ec2:DescribeSnapshots', `DescribeSnapshots of ${name}`, signal, () =>
            clients.ec2.send(new DescribeSnapshotsCommand({ SnapshotIds: ids }), { abortSignal: signal }),
          );
          const states = described.Snapshots ?? [];
          const failed = states.find((s) => s.State === 'error');
          if (failed) {
            throw new SourceProtocolError(
              `EBS snapshot ${failed.SnapshotId} of volume ${failed.VolumeId} failed${failed.StateMessage ? `: ${failed.StateMessage}` : ''}`,
            );
          }
          return states.length === ids.length && states.every((s) => s.State === 'completed')
            ? true
            : undefined;
        },
        {
          timeoutMs: resolved.snapshotWait.timeoutMs,
          minDelayMs: resolved.snapshotWait.minDelayMs,
          maxDelayMs: resolved.snapshotWait.maxDelayMs,
          what: `the EBS snapshots ${ids.join(', ')} of instance ${target.id} to complete`,
          ...(signal ? { signal } : {}),
        },
      );
      return {
        hostId: target.id,
        name,
        disks: target.disks.map((d) => ({ diskId: d.id, ref: byVolume.get(d.id)! })),
        consistency: 'host',
        detail:
          `EBS multi-volume snapshot (CreateSnapshots) of ${target.disks.length} volume${target.disks.length === 1 ? '' : 's'}: ` +
          `crash-consistent across the instance${quiesce === 'preferred' ? '; drkit does not quiesce EC2 guests' : ''}`,
      };
    } catch (error) {
      // Never leave a half-made or never-completing snapshot behind (without the signal: an abort must clean too).
      await deleteSnapshots(ids, undefined).catch(() => undefined);
      if (signal?.aborted) throw signal.reason;
      throw error;
    }
  }

  async function releaseSnapshot(releaseOptions: ReleaseSnapshotOptions): Promise<void> {
    const { hostId, name, signal } = releaseOptions;
    signal?.throwIfAborted();
    await releaseByName(hostId, name, signal);
  }

  async function releaseByName(hostId: string, name: string, signal: AbortSignal | undefined): Promise<void> {
    const ids: string[] = [];
    let token: string | undefined;
    do {
      const page = await call('ec2:DescribeSnapshots', `DescribeSnapshots of ${name}`, signal, () =>
        clients.ec2.send(
          new DescribeSnapshotsCommand({
            OwnerIds: ['self'],
            Filters: [
              { Name: `tag:${AWS_SNAPSHOT_TAG}`, Values: [name] },
              { Name: `tag:${AWS_HOST_TAG}`, Values: [hostId] },
            ],
            MaxResults: 1000,
            NextToken: token,
          }),
          { abortSignal: signal },
        ),
      );
      for (const s of page.Snapshots ?? []) if (s.SnapshotId) ids.push(s.SnapshotId);
      token = page.NextToken || undefined;
    } while (token);
    await deleteSnapshots(ids, signal);
  }

  const limiter = new AwsRateLimiter(resolved.rateLimits);
  const changedBlockReader = createAwsChangedBlockReader({ clients, options: resolved, limiter });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    clients.destroy();
  };

  return {
    specificationVersion: 'v2',
    id: platformId,
    kind: 'aws',
    name: resolved.name,
    region: resolved.region,
    capabilities: { snapshots: 'host', quiesce: false, retainsSnapshotAsBase: true, changeTracking: 'exact' },
    changedBlockReader,
    verify,
    hosts,
    host,
    checkPermissions,
    createSnapshot,
    releaseSnapshot,
    rateLimiterState: () => limiter.state(),
    restoreToEbs: (restoreOptions) =>
      restorePointToEbs({ clients, options: resolved, limiter }, restoreOptions),
    createVolumeFromSnapshot: (volumeOptions) =>
      createVolumeFromSnapshot({ clients, options: resolved }, volumeOptions),
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** Options of {@link openAwsPlatform}: those of {@link createAwsPlatform}, the region optional. */
export type OpenAwsPlatformOptions = Omit<AwsPlatformOptions, 'region'> & {
  /** The region; omitted, it is discovered ({@link discoverAwsRegion}): the one enabled region with instances. */
  readonly region?: string;
};

/**
 * {@link createAwsPlatform}, but the region may be omitted: then it is discovered (DescribeRegions, then
 * DescribeInstances in each enabled region: the one that has instances), as the console's "auto-detection".
 * The discovery calls EC2 (with `endpoints.ec2` when set, for every region). The CLI's `aws` provider alias
 * names this factory.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming the field when an option is invalid, or `region` when
 * discovery finds no region or several with instances; the access errors of the discovery.
 * @example
 * ```ts
 * const platform = await openAwsPlatform({ id: 'aws-prod', credentials: { accessKeyId, secretAccessKey } });
 * console.log(platform.region); // 'ap-southeast-1'
 * ```
 */
export async function openAwsPlatform(options: OpenAwsPlatformOptions): Promise<AwsPlatform> {
  if (options === null || typeof options !== 'object') return createAwsPlatform(options);
  if (options.region !== undefined) return createAwsPlatform({ ...options, region: options.region });
  // Every other option is checked before AWS is contacted (a valid region stands in for the one to discover).
  resolveAwsOptions({ ...options, region: 'us-east-1' });
  const { region } = await discoverAwsRegion({
    credentials: options.credentials,
    ...(options.endpoints?.ec2 ? { endpoint: options.endpoints.ec2 } : {}),
  });
  return createAwsPlatform({ ...options, region });
}
