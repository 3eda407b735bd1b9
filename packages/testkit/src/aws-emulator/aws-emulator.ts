import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { ebsErrorResponse, ebsOperation, handleEbs } from './ebs-handler.js';
import { ec2ErrorResponse, handleEc2 } from './ec2-handler.js';
import { createManualClock, type EmulatorClock } from './emulator-clock.js';
import {
  type AwsEmulatorFault,
  type AwsEmulatorInstanceType,
  type AwsEmulatorOperation,
  type AwsEmulatorQuotas,
  type AwsEmulatorStats,
  type AwsEmulatorUser,
  DEFAULT_EBS_QUOTAS,
  EmulatorError,
  type HandlerContext,
  type HandlerResponse,
  type MutableStats,
  type ResolvedEmulatorConfig,
} from './emulator-context.js';
import {
  EBS_BLOCK_SIZE,
  EmulatorState,
  type EmulatorTag,
  GIB,
  type InstanceState,
  type SnapshotStatus,
  type VolumeState,
} from './emulator-state.js';
import { RateBucket } from './rate-bucket.js';
import { type EmulatorCredential, verifySigV4 } from './sigv4-verifier.js';
import { handleSts, stsErrorResponse } from './sts-handler.js';

/** Options of {@link startAwsEmulator}. */
export interface AwsEmulatorOptions {
  /** The one region the emulator is (requests signed for another are refused). Default `us-east-1`. */
  readonly region?: string;
  /** The account id. Default `123456789012`. */
  readonly accountId?: string;
  /**
   * The users whose keys it accepts, each with its IAM allow-list. Default one user `drkit` with key
   * `AKIAEMULATOR000000001` / secret `emulator-secret-access-key` allowed everything.
   */
  readonly users?: readonly AwsEmulatorUser[];
  /** Token expiry, rate buckets and timestamps read it. Default a {@link ManualClock} at 2026-01-01. */
  readonly clock?: EmulatorClock;
  /**
   * DescribeSnapshots answers that see a snapshot pending before it is `completed` (a step count, never wall
   * time). 0: snapshots are completed when created. Default 1. {@link AwsEmulator.completeSnapshots} forces it.
   */
  readonly snapshotCompletionPolls?: number;
  /** Request-rate quotas; `false` turns throttling off. Default the documented quotas. */
  readonly quotas?: Partial<AwsEmulatorQuotas> | false;
  /**
   * The shape of ListSnapshotBlocks pages (AWS: "can return less blocks than MaxResults or an empty array"):
   * `shortPages` answers a third of MaxResults, `emptyPageEvery: n` makes every n-th page of a listing empty
   * (with a NextToken). Default full pages.
   */
  readonly pageShape?: { readonly shortPages?: boolean; readonly emptyPageEvery?: number };
  /** DescribeRegions' answer. Default a few regions, one not opted in. */
  readonly regions?: readonly { readonly name: string; readonly optInStatus: string }[];
  /**
   * What an EC2 request signed for another region of `regions` (not `not-opted-in`) gets: `refuse` (default; the
   * emulator is one region) or `empty`: an answer from that region, which holds nothing (no instances, volumes or
   * snapshots), so region discovery can be tested. EBS and STS requests for another region are always refused.
   */
  readonly otherRegions?: 'refuse' | 'empty';
  /**
   * The account's EBS encryption by default: `true` (the `aws/ebs` key) or a KMS key ARN. New direct-API
   * snapshots are then encrypted, an unencrypted one cannot be started. Default off.
   */
  readonly encryptionByDefault?: boolean | string;
  /** Instance types it knows (DescribeInstanceTypes), added to a default set (t3.micro, m5.large, m5d.large, i3.large). */
  readonly instanceTypes?: Readonly<Record<string, AwsEmulatorInstanceType>>;
}

/** A volume to create with {@link AwsEmulator.createVolume}. */
export interface CreateEmulatedVolumeOptions {
  readonly sizeGiB: number;
  readonly volumeType?: string;
  readonly iops?: number;
  readonly encrypted?: boolean;
  readonly kmsKeyId?: string;
  readonly tags?: Readonly<Record<string, string>>;
}

/** An instance to create with {@link AwsEmulator.createInstance}. */
export interface CreateEmulatedInstanceOptions {
  /** The `Name` tag. */
  readonly name?: string;
  readonly instanceType?: string;
  readonly state?: InstanceState['state'];
  readonly platform?: 'windows';
  readonly rootDeviceType?: 'ebs' | 'instance-store';
  /** Default `/dev/xvda` (the first volume's device). */
  readonly rootDeviceName?: string;
  /** EBS volumes to attach, the first at the root device unless `rootDeviceType` is `instance-store`. */
  readonly volumes?: readonly { readonly volumeId: string; readonly deviceName?: string }[];
  readonly tags?: Readonly<Record<string, string>>;
}

/** What a test can see of a snapshot. */
export interface EmulatedSnapshotInfo {
  readonly id: string;
  readonly volumeId: string;
  readonly status: SnapshotStatus;
  readonly sizeGiB: number;
  readonly tags: readonly EmulatorTag[];
  readonly source: 'ec2' | 'direct';
  /** Written blocks. */
  readonly blockCount: number;
}

/** A running emulator of EC2, STS and the EBS direct APIs on 127.0.0.1. */
export interface AwsEmulator extends AsyncDisposable {
  /** `http://127.0.0.1:<port>`: the endpoint of all three services. */
  readonly endpoint: string;
  readonly region: string;
  readonly accountId: string;
  /** The first user's keys. */
  readonly credentials: {
    readonly accessKeyId: string;
    readonly secretAccessKey: string;
    readonly sessionToken?: string;
  };
  readonly clock: EmulatorClock;
  createVolume(options: CreateEmulatedVolumeOptions): string;
  createInstance(options: CreateEmulatedInstanceOptions): string;
  /** Attaches a volume to an instance at a device. */
  attachVolume(instanceId: string, volumeId: string, deviceName: string): void;
  /** Writes bytes at any offset of a volume (each 512 KiB block touched becomes a new write). */
  writeVolume(volumeId: string, offset: number, data: Uint8Array): void;
  /** Makes a range of a volume read as zeros; whole blocks become unwritten. */
  discardVolume(volumeId: string, offset: number, length: number): void;
  /** Grows (or shrinks) a volume, in GiB; blocks past a smaller size are dropped. */
  resizeVolume(volumeId: string, sizeGiB: number): void;
  readVolume(volumeId: string, offset: number, length: number): Buffer;
  /** SHA-256 (hex) of the whole volume, computed without holding it in memory. */
  volumeSha256(volumeId: string): string;
  volumeCapacityBytes(volumeId: string): number;
  /** Blocks of the volume written so far (index order). */
  writtenBlocks(volumeId: string): number[];
  readSnapshot(snapshotId: string, offset: number, length: number): Buffer;
  snapshotSha256(snapshotId: string): string;
  snapshot(snapshotId: string): EmulatedSnapshotInfo | undefined;
  snapshots(): EmulatedSnapshotInfo[];
  /** Completes every pending (sealed) snapshot at once. */
  completeSnapshots(): void;
  /** Puts a snapshot in the `error` state. */
  failSnapshot(snapshotId: string): void;
  /** Deletes a snapshot behind the client's back. */
  deleteSnapshot(snapshotId: string): void;
  /** Removes an instance (its volumes stay). */
  terminateInstance(instanceId: string): void;
  /** Queues a fault for the next matching request(s). */
  injectFault(fault: AwsEmulatorFault): void;
  /** Faults queued and not used yet. */
  pendingFaults(): readonly AwsEmulatorFault[];
  stats(): AwsEmulatorStats;
  /** GetSnapshotBlock answers per block index of a snapshot. */
  blockReads(snapshotId: string): ReadonlyMap<number, number>;
  resetStats(): void;
  /** Stops the server and cuts every connection. Idempotent. */
  close(): Promise<void>;
}

const DEFAULT_USER: Required<AwsEmulatorUser> = {
  accessKeyId: 'AKIAEMULATOR000000001',
  secretAccessKey: 'emulator-secret-access-key',
  sessionToken: undefined as unknown as string,
  userName: 'drkit',
  allow: ['*'],
};

const DEFAULT_REGIONS = [
  { name: 'us-east-1', optInStatus: 'opt-in-not-required' },
  { name: 'eu-west-1', optInStatus: 'opt-in-not-required' },
  { name: 'ap-southeast-1', optInStatus: 'opt-in-not-required' },
  { name: 'ap-east-1', optInStatus: 'not-opted-in' },
];

const DEFAULT_INSTANCE_TYPES: Record<string, AwsEmulatorInstanceType> = {
  't3.micro': {},
  'm5.large': {},
  'm5d.large': { disks: [{ sizeInGB: 75, count: 1, type: 'ssd' }] },
  'i3.large': { disks: [{ sizeInGB: 475, count: 1, type: 'ssd' }] },
};

function actionPattern(pattern: string): RegExp {
  return new RegExp(
    `^${pattern
      .split('*')
      .map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*')}$`,
    'i',
  );
}

function readBody(request: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        request.destroy();
        reject(new EmulatorError(413, 'RequestEntityTooLarge', 'The request body is too large.'));
        return;
      }
      chunks.push(chunk);
    });
    request.on('end', () => resolve(Buffer.concat(chunks)));
    request.on('error', reject);
  });
}

/**
 * Starts the project's emulator of the EC2, STS and EBS direct APIs on 127.0.0.1 (a free port), for tests that
 * drive the real AWS SDK against it through endpoint overrides: the SDK's serialization, SigV4 signing (checked
 * with the configured secrets), retries and error parsing all run. See the folder's README for what it models
 * and what it chose where AWS documents nothing.
 *
 * @example
 * ```ts
 * await using emulator = await startAwsEmulator();
 * const volumeId = emulator.createVolume({ sizeGiB: 1 });
 * emulator.createInstance({ name: 'web-1', volumes: [{ volumeId }] });
 * const ebs = new EBSClient({ region: emulator.region, endpoint: emulator.endpoint, credentials: emulator.credentials });
 * ```
 */
export async function startAwsEmulator(options: AwsEmulatorOptions = {}): Promise<AwsEmulator> {
  const clock = options.clock ?? createManualClock();
  const state = new EmulatorState(clock);
  /** The other regions' (empty) resources, for `otherRegions: 'empty'`. */
  const otherRegionStates = new Map<string, EmulatorState>();
  const quotas = options.quotas === false ? undefined : { ...DEFAULT_EBS_QUOTAS, ...options.quotas };
  const defaultKmsKey = `arn:aws:kms:${options.region ?? 'us-east-1'}:${options.accountId ?? '123456789012'}:alias/aws/ebs`;
  const config: ResolvedEmulatorConfig = {
    region: options.region ?? 'us-east-1',
    accountId: options.accountId ?? '123456789012',
    quotas,
    completionPolls: options.snapshotCompletionPolls ?? 1,
    pageShape: {
      shortPages: options.pageShape?.shortPages ?? false,
      emptyPageEvery: options.pageShape?.emptyPageEvery,
    },
    regions: options.regions ?? DEFAULT_REGIONS,
    instanceTypes: new Map(Object.entries({ ...DEFAULT_INSTANCE_TYPES, ...options.instanceTypes })),
    defaultKmsKey,
    encryptionByDefaultKey:
      typeof options.encryptionByDefault === 'string'
        ? options.encryptionByDefault
        : options.encryptionByDefault
          ? defaultKmsKey
          : undefined,
  };
  const users = (options.users ?? [DEFAULT_USER]).map((u) => ({ userName: 'drkit', allow: ['*'], ...u }));
  const credentials = new Map<string, EmulatorCredential>(users.map((u) => [u.accessKeyId, u]));
  const userByKey = new Map(users.map((u) => [u.accessKeyId, u]));
  const allowPatterns = new Map(users.map((u) => [u.accessKeyId, u.allow.map(actionPattern)]));
  let faults: (AwsEmulatorFault & { left: number })[] = [];
  const buckets = new Map<string, RateBucket>();
  const emptyStats = (): MutableStats => ({
    calls: {},
    throttled: {},
    blocksServed: 0,
    concurrentBlockReads: 0,
    peakConcurrentBlockReads: 0,
    openBodies: 0,
    blockReads: new Map(),
  });
  let stats = emptyStats();

  const rateOf = (name: string): number | undefined => {
    if (!quotas) return undefined;
    const [operation, snapshot] = name.split(':');
    const perSnapshot = snapshot !== undefined;
    switch (operation) {
      case 'GetSnapshotBlock':
        return perSnapshot ? quotas.getSnapshotBlockPerSnapshot : quotas.getSnapshotBlockPerAccount;
      case 'PutSnapshotBlock':
        return perSnapshot ? quotas.putSnapshotBlockPerSnapshot : quotas.putSnapshotBlockPerAccount;
      case 'ListSnapshotBlocks':
        return quotas.listSnapshotBlocksPerAccount;
      case 'ListChangedBlocks':
        return quotas.listChangedBlocksPerAccount;
      case 'StartSnapshot':
        return quotas.startSnapshotPerAccount;
      case 'CompleteSnapshot':
        return quotas.completeSnapshotPerAccount;
      default:
        return undefined;
    }
  };
  const bucket = (name: string): RateBucket | undefined => {
    let found = buckets.get(name);
    if (!found) {
      const rate = rateOf(name);
      if (rate === undefined) return undefined;
      found = new RateBucket(rate, clock);
      buckets.set(name, found);
    }
    return found;
  };
  const takeFault = (
    operation: AwsEmulatorOperation,
    where: { snapshotId?: string; blockIndex?: number } = {},
  ) => {
    const fault = faults.find(
      (f) =>
        f.operation === operation &&
        (f.snapshotId === undefined || f.snapshotId === where.snapshotId) &&
        (f.blockIndex === undefined || f.blockIndex === where.blockIndex),
    );
    if (!fault) return undefined;
    fault.left--;
    if (fault.left <= 0) faults = faults.filter((f) => f !== fault);
    return fault;
  };

  const sockets = new Set<Socket>();
  const server = createServer({ keepAlive: true }, (request, response) => {
    void serve(request, response);
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  function send(response: ServerResponse, answer: HandlerResponse, requestId: string): void {
    const body = typeof answer.body === 'string' ? Buffer.from(answer.body) : answer.body;
    response.writeHead(answer.status, {
      'x-amzn-requestid': requestId,
      ...answer.headers,
      'content-length': String(body.length),
    });
    if (answer.truncate) {
      response.write(body.subarray(0, body.length >> 1), () => response.socket?.destroy());
      return;
    }
    response.end(body);
  }

  async function serve(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const requestId = randomUUID();
    const url = request.url ?? '/';
    const path = url.split('?')[0]!;
    const route = ebsOperation(request.method ?? 'GET', path);
    let service: 'ebs' | 'ec2' | 'sts' = route ? 'ebs' : 'ec2';
    let operation = route?.operation ?? 'unknown';
    const errorAnswer = (error: EmulatorError) =>
      service === 'ebs'
        ? ebsErrorResponse(error, requestId)
        : service === 'sts'
          ? stsErrorResponse(error, requestId)
          : ec2ErrorResponse(error, requestId);
    let blockRead = false;
    try {
      const body = await readBody(request, 2 * EBS_BLOCK_SIZE);
      const check = verifySigV4(
        { method: request.method ?? 'GET', url, headers: request.headers, body },
        credentials,
      );
      const scopeService = check.ok
        ? check.info.service
        : 'problem' in check && 'info' in check.problem
          ? check.problem.info.service
          : undefined;
      if (scopeService === 'sts' || scopeService === 'ec2' || scopeService === 'ebs') service = scopeService;
      const form = service === 'ebs' ? undefined : new URLSearchParams(body.toString('utf8'));
      if (form) operation = form.get('Action') ?? 'unknown';
      stats.calls[operation] = (stats.calls[operation] ?? 0) + 1;
      if (!check.ok) throw authError(service, check.problem.kind, check.problem.message);
      let regionState = state;
      if (check.info.region !== config.region) {
        const other = check.info.region;
        const enabled = config.regions.some((r) => r.name === other && r.optInStatus !== 'not-opted-in');
        if (options.otherRegions !== 'empty' || service !== 'ec2' || !enabled) {
          throw authError(
            service,
            'mismatch',
            `Credential should be scoped to a valid region (${config.region}).`,
          );
        }
        regionState = otherRegionStates.get(other) ?? new EmulatorState(clock);
        otherRegionStates.set(other, regionState);
      }
      const user = userByKey.get(check.info.accessKeyId)!;
      const patterns = allowPatterns.get(user.accessKeyId)!;
      const context: HandlerContext = {
        state: regionState,
        config,
        user,
        stats,
        requestId,
        isAllowed: (action) => patterns.some((p) => p.test(action)),
        takeFault,
        bucket,
      };
      let answer: HandlerResponse;
      if (service === 'ebs') {
        if (!route)
          throw new EmulatorError(
            404,
            'UnknownOperationException',
            `No EBS operation at ${request.method} ${path}`,
          );
        if (operation === 'GetSnapshotBlock') {
          blockRead = true;
          stats.concurrentBlockReads++;
          stats.peakConcurrentBlockReads = Math.max(
            stats.peakConcurrentBlockReads,
            stats.concurrentBlockReads,
          );
        }
        answer = handleEbs(
          context,
          route,
          new URL(url, 'http://emulator').searchParams,
          request.headers,
          body,
        );
      } else if (service === 'sts') {
        answer = handleSts(context, operation);
      } else {
        answer = handleEc2(context, operation, form!);
      }
      if (blockRead) {
        stats.openBodies++;
        let open = true;
        const done = () => {
          if (open) stats.openBodies--;
          open = false;
        };
        response.on('finish', done);
        response.on('close', done);
      }
      send(response, answer, requestId);
    } catch (error) {
      const known =
        error instanceof EmulatorError
          ? error
          : new EmulatorError(
              500,
              service === 'ebs' ? 'InternalServerException' : 'InternalError',
              String(error),
            );
      if (/Throttl|RequestLimitExceeded/.test(known.code))
        stats.throttled[operation] = (stats.throttled[operation] ?? 0) + 1;
      if (!response.headersSent && !response.destroyed) send(response, errorAnswer(known), requestId);
    } finally {
      if (blockRead) stats.concurrentBlockReads--;
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  const volumeOf = (id: string): VolumeState => {
    const volume = state.volumes.get(id);
    if (!volume) throw new Error(`the emulator has no volume ${id}`);
    return volume;
  };
  const snapshotOf = (id: string) => {
    const snapshot = state.snapshots.get(id);
    if (!snapshot) throw new Error(`the emulator has no snapshot ${id}`);
    return snapshot;
  };
  const tagsOf = (tags: Readonly<Record<string, string>> | undefined): EmulatorTag[] =>
    Object.entries(tags ?? {}).map(([Key, Value]) => ({ Key, Value }));
  const sha256Of = (blocks: ReadonlyMap<number, { data: Buffer }>, sizeGiB: number) => {
    const hash = createHash('sha256');
    const zero = Buffer.alloc(EBS_BLOCK_SIZE);
    const count = (sizeGiB * GIB) / EBS_BLOCK_SIZE;
    for (let index = 0; index < count; index++) hash.update(blocks.get(index)?.data ?? zero);
    return hash.digest('hex');
  };
  let closed: Promise<void> | undefined;
  const first = users[0]!;

  const emulator: AwsEmulator = {
    endpoint: `http://127.0.0.1:${port}`,
    region: config.region,
    accountId: config.accountId,
    credentials: {
      accessKeyId: first.accessKeyId,
      secretAccessKey: first.secretAccessKey,
      ...(first.sessionToken === undefined ? {} : { sessionToken: first.sessionToken }),
    },
    clock,
    createVolume(volume) {
      if (!Number.isSafeInteger(volume.sizeGiB) || volume.sizeGiB < 1 || volume.sizeGiB > 65_536) {
        throw new RangeError(`volume size ${volume.sizeGiB} GiB is outside 1-65536`);
      }
      const id = state.nextId('vol');
      state.volumes.set(id, {
        id,
        sizeGiB: volume.sizeGiB,
        volumeType: volume.volumeType ?? 'gp3',
        iops:
          volume.iops ?? (volume.volumeType === undefined || volume.volumeType === 'gp3' ? 3000 : undefined),
        encrypted: volume.encrypted ?? false,
        kmsKeyId:
          volume.kmsKeyId ??
          (volume.encrypted ? `arn:aws:kms:${config.region}:${config.accountId}:key/emulator` : undefined),
        availabilityZone: `${config.region}a`,
        createTime: state.now(),
        tags: tagsOf(volume.tags),
        blocks: new Map(),
        attachment: undefined,
      });
      return id;
    },
    createInstance(instance) {
      const id = state.nextId('i');
      const rootDeviceType = instance.rootDeviceType ?? 'ebs';
      const firstDevice = instance.volumes?.[0]?.deviceName ?? '/dev/xvda';
      const rootDeviceName =
        instance.rootDeviceName ?? (rootDeviceType === 'ebs' ? firstDevice : '/dev/sda1');
      state.instances.set(id, {
        id,
        instanceType: instance.instanceType ?? 't3.micro',
        state: instance.state ?? 'running',
        platform: instance.platform,
        platformDetails: instance.platform === 'windows' ? 'Windows' : 'Linux/UNIX',
        rootDeviceName,
        rootDeviceType,
        launchTime: state.now(),
        availabilityZone: `${config.region}a`,
        imageId: 'ami-0123456789abcdef0',
        tags: [
          ...(instance.name === undefined ? [] : [{ Key: 'Name', Value: instance.name }]),
          ...tagsOf(instance.tags),
        ],
        mappings: [],
      });
      const letters = 'fghijklmnop';
      (instance.volumes ?? []).forEach((v, i) => {
        const device =
          v.deviceName ?? (i === 0 && rootDeviceType === 'ebs' ? rootDeviceName : `/dev/sd${letters[i]}`);
        emulator.attachVolume(id, v.volumeId, device);
      });
      return id;
    },
    attachVolume(instanceId, volumeId, deviceName) {
      const instance = state.instances.get(instanceId);
      if (!instance) throw new Error(`the emulator has no instance ${instanceId}`);
      const volume = volumeOf(volumeId);
      if (volume.attachment)
        throw new Error(`volume ${volumeId} is attached to ${volume.attachment.instanceId}`);
      volume.attachment = {
        instanceId,
        device: deviceName,
        attachTime: state.now(),
        deleteOnTermination: true,
      };
      instance.mappings.push({ deviceName, volumeId });
    },
    writeVolume: (volumeId, offset, data) => state.writeVolume(volumeOf(volumeId), offset, data),
    discardVolume: (volumeId, offset, length) => state.discardVolume(volumeOf(volumeId), offset, length),
    resizeVolume(volumeId, sizeGiB) {
      const volume = volumeOf(volumeId);
      volume.sizeGiB = sizeGiB;
      const blocks = (sizeGiB * GIB) / EBS_BLOCK_SIZE;
      for (const index of [...volume.blocks.keys()]) if (index >= blocks) volume.blocks.delete(index);
    },
    readVolume: (volumeId, offset, length) => state.readBlocks(volumeOf(volumeId).blocks, offset, length),
    volumeSha256: (volumeId) => {
      const volume = volumeOf(volumeId);
      return sha256Of(volume.blocks, volume.sizeGiB);
    },
    volumeCapacityBytes: (volumeId) => volumeOf(volumeId).sizeGiB * GIB,
    writtenBlocks: (volumeId) => [...volumeOf(volumeId).blocks.keys()].sort((a, b) => a - b),
    readSnapshot: (snapshotId, offset, length) =>
      state.readBlocks(snapshotOf(snapshotId).blocks, offset, length),
    snapshotSha256: (snapshotId) => {
      const snapshot = snapshotOf(snapshotId);
      return sha256Of(snapshot.blocks, snapshot.sizeGiB);
    },
    snapshot(snapshotId) {
      const s = state.snapshots.get(snapshotId);
      return s
        ? {
            id: s.id,
            volumeId: s.volumeId,
            status: s.status,
            sizeGiB: s.sizeGiB,
            tags: [...s.tags],
            source: s.source,
            blockCount: s.blocks.size,
          }
        : undefined;
    },
    snapshots: () => [...state.snapshots.keys()].map((id) => emulator.snapshot(id)!),
    completeSnapshots() {
      for (const s of state.snapshots.values())
        if (s.status === 'pending' && s.sealed) s.status = 'completed';
    },
    failSnapshot(snapshotId) {
      snapshotOf(snapshotId).status = 'error';
    },
    deleteSnapshot(snapshotId) {
      state.snapshots.delete(snapshotId);
    },
    terminateInstance(instanceId) {
      const instance = state.instances.get(instanceId);
      if (!instance) return;
      for (const m of instance.mappings) {
        const volume = state.volumes.get(m.volumeId);
        if (volume) volume.attachment = undefined;
      }
      state.instances.delete(instanceId);
    },
    injectFault(fault) {
      faults.push({ ...fault, left: fault.times ?? 1 });
    },
    pendingFaults: () => faults.map(({ left, ...fault }) => ({ ...fault, times: left })),
    stats: () => ({
      calls: { ...stats.calls },
      throttled: { ...stats.throttled },
      blocksServed: stats.blocksServed,
      peakConcurrentBlockReads: stats.peakConcurrentBlockReads,
      openBodies: stats.openBodies,
    }),
    blockReads: (snapshotId) => new Map(stats.blockReads.get(snapshotId) ?? []),
    resetStats() {
      const open = stats.openBodies;
      const concurrent = stats.concurrentBlockReads;
      stats = emptyStats();
      stats.openBodies = open;
      stats.concurrentBlockReads = concurrent;
    },
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
        server.closeAllConnections();
      });
      return closed;
    },
    [Symbol.asyncDispose]: () => emulator.close(),
  };
  return emulator;
}

/** The error each service answers for a refused signature, as AWS names them. */
function authError(service: 'ebs' | 'ec2' | 'sts', kind: string, message: string): EmulatorError {
  if (service === 'ec2') {
    if (kind === 'missing') return new EmulatorError(401, 'MissingAuthenticationToken', message);
    return new EmulatorError(
      401,
      'AuthFailure',
      'AWS was not able to validate the provided access credentials',
    );
  }
  if (service === 'sts') {
    if (kind === 'missing') return new EmulatorError(403, 'MissingAuthenticationToken', message);
    if (kind === 'unknown-key' || kind === 'bad-token')
      return new EmulatorError(403, 'InvalidClientTokenId', message);
    return new EmulatorError(
      403,
      kind === 'malformed' ? 'IncompleteSignature' : 'SignatureDoesNotMatch',
      message,
    );
  }
  if (kind === 'missing') return new EmulatorError(403, 'MissingAuthenticationTokenException', message);
  if (kind === 'unknown-key' || kind === 'bad-token')
    return new EmulatorError(403, 'UnrecognizedClientException', message);
  return new EmulatorError(
    403,
    kind === 'malformed' ? 'IncompleteSignatureException' : 'InvalidSignatureException',
    message,
  );
}
