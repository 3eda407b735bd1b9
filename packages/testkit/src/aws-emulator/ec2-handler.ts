import { EmulatorError, type HandlerContext, type HandlerResponse } from './emulator-context.js';
import type { EmulatorTag, InstanceState, SnapshotState, VolumeState } from './emulator-state.js';
import { filterParams, listParam, toXml, type XmlObject } from './query-xml.js';

const EC2_NAMESPACE = 'http://ec2.amazonaws.com/doc/2016-11-15/';
const STATE_CODES: Record<InstanceState['state'], number> = {
  pending: 0,
  running: 16,
  'shutting-down': 32,
  terminated: 48,
  stopping: 64,
  stopped: 80,
};

/** An EC2 query error answer. @internal */
export function ec2ErrorResponse(error: EmulatorError, requestId: string): HandlerResponse {
  return {
    status: error.status,
    headers: { 'content-type': 'text/xml;charset=UTF-8' },
    body:
      '<?xml version="1.0" encoding="UTF-8"?>' +
      `<Response><Errors><Error>${toXml({ Code: error.code, Message: error.message })}</Error></Errors>` +
      `<RequestID>${requestId}</RequestID></Response>`,
  };
}

function answer(context: HandlerContext, action: string, value: XmlObject): HandlerResponse {
  return {
    status: 200,
    headers: { 'content-type': 'text/xml;charset=UTF-8' },
    body:
      '<?xml version="1.0" encoding="UTF-8"?>' +
      `<${action}Response xmlns="${EC2_NAMESPACE}">${toXml({ requestId: context.requestId, ...value })}</${action}Response>`,
  };
}

const invalid = (message: string, code = 'InvalidParameterValue') => new EmulatorError(400, code, message);

const tagSet = (tags: readonly EmulatorTag[]) => tags.map((t) => ({ key: t.Key, value: t.Value }));

function matchesTags(
  tags: readonly EmulatorTag[],
  filter: { name: string; values: string[] },
): boolean | undefined {
  if (filter.name === 'tag-key') return tags.some((t) => filter.values.includes(t.Key));
  if (filter.name.startsWith('tag:')) {
    const key = filter.name.slice(4);
    return tags.some((t) => t.Key === key && filter.values.includes(t.Value));
  }
  return undefined;
}

/** Applies the filters; `fields` gives each supported filter's value(s) of an item. */
function filtered<T extends { tags: readonly EmulatorTag[] }>(
  items: readonly T[],
  params: URLSearchParams,
  fields: Record<string, (item: T) => string | readonly string[] | undefined>,
): T[] {
  const filters = filterParams(params);
  for (const filter of filters) {
    if (!filter.name.startsWith('tag:') && filter.name !== 'tag-key' && !(filter.name in fields)) {
      throw invalid(`The filter '${filter.name}' is invalid`, 'InvalidParameterValue');
    }
  }
  return items.filter((item) =>
    filters.every((filter) => {
      const byTag = matchesTags(item.tags, filter);
      if (byTag !== undefined) return byTag;
      const value = fields[filter.name]!(item);
      const values = value === undefined ? [] : typeof value === 'string' ? [value] : value;
      return values.some((v) => filter.values.includes(v));
    }),
  );
}

/** A page of `items` by MaxResults and NextToken (an offset). */
function paged<T>(
  items: readonly T[],
  params: URLSearchParams,
  limits: { min: number; max: number },
  idsGiven: boolean,
): { page: T[]; nextToken: string | undefined } {
  const maxText = params.get('MaxResults');
  const token = params.get('NextToken');
  if (maxText !== null && idsGiven) {
    throw invalid(
      'The parameter MaxResults cannot be used with the parameter of resource IDs',
      'InvalidParameterCombination',
    );
  }
  let offset = 0;
  if (token !== null) {
    const decoded = Number(
      Buffer.from(token, 'base64')
        .toString('utf8')
        .replace(/^offset:/, ''),
    );
    if (!Number.isSafeInteger(decoded) || decoded < 0)
      throw invalid('The token is not valid', 'InvalidNextToken');
    offset = decoded;
  }
  if (maxText === null) return { page: items.slice(offset), nextToken: undefined };
  const max = Number(maxText);
  if (!Number.isSafeInteger(max) || max < limits.min || max > limits.max) {
    throw invalid(
      `Value ( ${maxText} ) for parameter maxResults is invalid. Expecting a value between ${limits.min} and ${limits.max}.`,
    );
  }
  const page = items.slice(offset, offset + max);
  const next = offset + page.length;
  return {
    page,
    nextToken: next < items.length ? Buffer.from(`offset:${next}`).toString('base64') : undefined,
  };
}

function instanceXml(context: HandlerContext, instance: InstanceState): XmlObject {
  return {
    instanceId: instance.id,
    imageId: instance.imageId,
    instanceState: { code: STATE_CODES[instance.state], name: instance.state },
    instanceType: instance.instanceType,
    launchTime: instance.launchTime,
    placement: { availabilityZone: instance.availabilityZone },
    platform: instance.platform,
    platformDetails: instance.platformDetails,
    rootDeviceName: instance.rootDeviceName,
    rootDeviceType: instance.rootDeviceType,
    blockDeviceMapping: instance.mappings.map((m) => {
      const volume = context.state.volumes.get(m.volumeId);
      return {
        deviceName: m.deviceName,
        ebs: {
          volumeId: m.volumeId,
          status: 'attached',
          attachTime: volume?.attachment?.attachTime ?? instance.launchTime,
          deleteOnTermination: volume?.attachment?.deleteOnTermination ?? true,
        },
      };
    }),
    tagSet: tagSet(instance.tags),
  };
}

function describeInstances(context: HandlerContext, params: URLSearchParams): HandlerResponse {
  const ids = listParam(params, 'InstanceId');
  for (const id of ids) {
    if (!context.state.instances.has(id)) {
      throw invalid(`The instance ID '${id}' does not exist`, 'InvalidInstanceID.NotFound');
    }
  }
  const all =
    ids.length > 0
      ? ids.map((id) => context.state.instances.get(id)!)
      : [...context.state.instances.values()];
  const matching = filtered(all, params, {
    'instance-state-name': (i) => i.state,
    'instance-id': (i) => i.id,
    'instance-type': (i) => i.instanceType,
  });
  const { page, nextToken } = paged(matching, params, { min: 5, max: 1000 }, ids.length > 0);
  return answer(context, 'DescribeInstances', {
    reservationSet: page.map((instance) => ({
      reservationId: `r-${instance.id.slice(2)}`,
      ownerId: context.config.accountId,
      instancesSet: [instanceXml(context, instance)],
    })),
    nextToken,
  });
}

function volumeStatus(volume: VolumeState): string {
  if (volume.creatingPolls !== undefined) return 'creating';
  return volume.attachment ? 'in-use' : 'available';
}

function volumeXml(volume: VolumeState): XmlObject {
  return {
    volumeId: volume.id,
    size: volume.sizeGiB,
    snapshotId: volume.snapshotId ?? '',
    availabilityZone: volume.availabilityZone,
    status: volumeStatus(volume),
    createTime: volume.createTime,
    attachmentSet: volume.attachment
      ? [
          {
            volumeId: volume.id,
            instanceId: volume.attachment.instanceId,
            device: volume.attachment.device,
            status: 'attached',
            attachTime: volume.attachment.attachTime,
            deleteOnTermination: volume.attachment.deleteOnTermination,
          },
        ]
      : [],
    volumeType: volume.volumeType,
    iops: volume.iops,
    encrypted: volume.encrypted,
    kmsKeyId: volume.kmsKeyId,
    tagSet: tagSet(volume.tags),
  };
}

function describeVolumes(context: HandlerContext, params: URLSearchParams): HandlerResponse {
  const ids = listParam(params, 'VolumeId');
  for (const id of ids) {
    if (!context.state.volumes.has(id))
      throw invalid(`The volume '${id}' does not exist.`, 'InvalidVolume.NotFound');
  }
  const all =
    ids.length > 0 ? ids.map((id) => context.state.volumes.get(id)!) : [...context.state.volumes.values()];
  const matching = filtered(all, params, {
    'volume-id': (v) => v.id,
    'attachment.instance-id': (v) => v.attachment?.instanceId,
    status: volumeStatus,
    'volume-type': (v) => v.volumeType,
    'snapshot-id': (v) => v.snapshotId,
  });
  const { page, nextToken } = paged(matching, params, { min: 5, max: 500 }, ids.length > 0);
  const answered = answer(context, 'DescribeVolumes', { volumeSet: page.map(volumeXml), nextToken });
  // Each answer that shows a volume `creating` is one step towards `available` (as snapshots complete).
  for (const volume of page) {
    if (volume.creatingPolls === undefined) continue;
    volume.creatingPolls++;
    if (volume.creatingPolls >= context.config.completionPolls) volume.creatingPolls = undefined;
  }
  return answered;
}

function describeInstanceTypes(context: HandlerContext, params: URLSearchParams): HandlerResponse {
  const names = listParam(params, 'InstanceType');
  for (const name of names) {
    if (!context.config.instanceTypes.has(name)) {
      throw invalid(`The following supplied instance types do not exist: [${name}]`, 'InvalidInstanceType');
    }
  }
  const chosen = names.length > 0 ? names : [...context.config.instanceTypes.keys()];
  return answer(context, 'DescribeInstanceTypes', {
    instanceTypeSet: chosen.map((name) => {
      const type = context.config.instanceTypes.get(name)!;
      const disks = type.disks ?? [];
      return {
        instanceType: name,
        instanceStorageSupported: disks.length > 0,
        instanceStorageInfo:
          disks.length > 0
            ? {
                totalSizeInGB: disks.reduce((sum, d) => sum + d.sizeInGB * d.count, 0),
                disks: disks.map((d) => ({ sizeInGB: d.sizeInGB, count: d.count, type: d.type })),
                nvmeSupport: 'required',
              }
            : undefined,
      };
    }),
  });
}

function progressOf(context: HandlerContext, snapshot: SnapshotState): string {
  if (snapshot.status === 'completed') return '100%';
  const polls = Math.max(1, context.config.completionPolls);
  return `${Math.min(99, Math.floor((100 * snapshot.polls) / polls))}%`;
}

function tagsFromSpecifications(params: URLSearchParams, resourceType = 'snapshot'): EmulatorTag[] {
  const tags: EmulatorTag[] = [];
  for (let i = 1; ; i++) {
    const type = params.get(`TagSpecification.${i}.ResourceType`);
    if (type === null) return tags;
    if (type !== resourceType)
      throw invalid(`'${type}' is not a valid taggable resource type for this operation.`);
    for (let j = 1; ; j++) {
      const key = params.get(`TagSpecification.${i}.Tag.${j}.Key`);
      if (key === null) break;
      if (key.startsWith('aws:'))
        throw invalid('Tag keys starting with "aws:" are reserved for internal use');
      tags.push({ Key: key, Value: params.get(`TagSpecification.${i}.Tag.${j}.Value`) ?? '' });
    }
  }
}

function createSnapshots(context: HandlerContext, params: URLSearchParams): HandlerResponse {
  const instanceId = params.get('InstanceSpecification.InstanceId');
  if (instanceId === null)
    throw invalid(
      'The request must contain the parameter InstanceSpecification.InstanceId',
      'MissingParameter',
    );
  const instance = context.state.instances.get(instanceId);
  if (!instance)
    throw invalid(`The instance ID '${instanceId}' does not exist`, 'InvalidInstanceID.NotFound');
  const excludeBoot = params.get('InstanceSpecification.ExcludeBootVolume') === 'true';
  const excluded = listParam(params, 'InstanceSpecification.ExcludeDataVolumeId');
  if (excluded.length > 40) throw invalid('ExcludeDataVolumeIds takes at most 40 volume ids');
  const root = instance.mappings.find((m) => m.deviceName === instance.rootDeviceName);
  if (root && excluded.includes(root.volumeId)) {
    throw invalid('The root volume cannot be excluded using ExcludeDataVolumeIds; use ExcludeBootVolume');
  }
  const volumes = instance.mappings
    .filter((m) => !(excludeBoot && m === root) && !excluded.includes(m.volumeId))
    .map((m) => context.state.volumes.get(m.volumeId)!)
    .filter((v) => v !== undefined);
  if (volumes.length === 0) throw invalid(`The instance '${instanceId}' has no volumes to snapshot`);
  for (const volume of volumes) {
    const limit = volume.volumeType === 'st1' || volume.volumeType === 'sc1' ? 1 : 5;
    const pending = [...context.state.snapshots.values()].filter(
      (s) => s.volumeId === volume.id && s.status === 'pending',
    ).length;
    if (pending >= limit) {
      throw invalid(
        'The maximum per volume CreateSnapshot request rate has been exceeded. Use an increasing or variable sleep interval between requests.',
        'SnapshotCreationPerVolumeRateExceeded',
      );
    }
  }
  const tags = tagsFromSpecifications(params, 'snapshot');
  const copyTags = params.get('CopyTagsFromSource') === 'volume';
  const description = params.get('Description') ?? '';
  const startTime = context.state.now();
  // One instant for all volumes: crash-consistent across the instance.
  const created = volumes.map((volume): SnapshotState => {
    const snapshot: SnapshotState = {
      id: context.state.nextId('snap'),
      volumeId: volume.id,
      lineage: volume.id,
      sizeGiB: volume.sizeGiB,
      blocks: new Map(volume.blocks),
      status: context.config.completionPolls === 0 ? 'completed' : 'pending',
      polls: 0,
      sealed: true,
      startTime,
      description,
      tags: [...(copyTags ? volume.tags.filter((t) => !t.Key.startsWith('aws:')) : []), ...tags],
      encrypted: volume.encrypted,
      kmsKeyId: volume.kmsKeyId,
      source: 'ec2',
      parentSnapshotId: undefined,
      clientToken: undefined,
      startFingerprint: undefined,
      unwrittenReadsGarbage: false,
      putBlocks: new Set(),
      sortedIndexes: undefined,
    };
    context.state.snapshots.set(snapshot.id, snapshot);
    return snapshot;
  });
  return answer(context, 'CreateSnapshots', {
    snapshotSet: created.map((s) => ({
      snapshotId: s.id,
      volumeId: s.volumeId,
      state: s.status,
      volumeSize: s.sizeGiB,
      startTime: s.startTime,
      progress: progressOf(context, s),
      ownerId: context.config.accountId,
      description: s.description,
      encrypted: s.encrypted,
      tagSet: tagSet(s.tags),
    })),
  });
}

function describeSnapshots(context: HandlerContext, params: URLSearchParams): HandlerResponse {
  const owners = listParam(params, 'Owner');
  const ids = listParam(params, 'SnapshotId');
  for (const id of ids) {
    if (!context.state.snapshots.has(id))
      throw invalid(`The snapshot '${id}' does not exist.`, 'InvalidSnapshot.NotFound');
  }
  const own = owners.length === 0 || owners.some((o) => o === 'self' || o === context.config.accountId);
  const all = !own
    ? []
    : ids.length > 0
      ? ids.map((id) => context.state.snapshots.get(id)!)
      : [...context.state.snapshots.values()];
  const matching = filtered(all, params, {
    'snapshot-id': (s) => s.id,
    'volume-id': (s) => s.volumeId,
    status: (s) => s.status,
    'owner-id': () => context.config.accountId,
  });
  const { page, nextToken } = paged(matching, params, { min: 5, max: 1000 }, ids.length > 0);
  // Each answer that shows a pending snapshot is one step towards its completion.
  for (const snapshot of page) {
    if (snapshot.status !== 'pending' || !snapshot.sealed) continue;
    snapshot.polls++;
    if (snapshot.polls >= context.config.completionPolls) snapshot.status = 'completed';
  }
  return answer(context, 'DescribeSnapshots', {
    snapshotSet: page.map((s) => ({
      snapshotId: s.id,
      volumeId: s.volumeId,
      status: s.status,
      startTime: s.startTime,
      progress: progressOf(context, s),
      ownerId: context.config.accountId,
      volumeSize: s.sizeGiB,
      description: s.description,
      encrypted: s.encrypted,
      kmsKeyId: s.kmsKeyId,
      storageTier: 'standard',
      tagSet: tagSet(s.tags),
    })),
    nextToken,
  });
}

function deleteSnapshot(context: HandlerContext, params: URLSearchParams): HandlerResponse {
  const id = params.get('SnapshotId');
  if (id === null) throw invalid('The request must contain the parameter SnapshotId', 'MissingParameter');
  if (!/^snap-[0-9a-f]+$/.test(id))
    throw invalid(`Invalid id: "${id}" (expecting "snap-...")`, 'InvalidSnapshotID.Malformed');
  if (!context.state.snapshots.delete(id)) {
    throw invalid(`The snapshot '${id}' does not exist.`, 'InvalidSnapshot.NotFound');
  }
  return answer(context, 'DeleteSnapshot', { return: true });
}

/**
 * CreateVolume from a snapshot (a volume without a snapshot is not modelled): `SnapshotId`, `AvailabilityZone`
 * (one of the region's), optional `Size` (not below the snapshot's), `VolumeType`, `Iops`, `Encrypted` /
 * `KmsKeyId` (an encrypted snapshot makes an encrypted volume), `TagSpecification` (`volume`), `ClientToken`
 * (idempotent). The volume holds the snapshot's blocks as a volume created from it reads them
 * ({@link EmulatorState.volumeBlocksOf}); it is `creating` for `snapshotCompletionPolls` DescribeVolumes answers.
 */
function createVolume(context: HandlerContext, params: URLSearchParams): HandlerResponse {
  const snapshotId = params.get('SnapshotId');
  if (snapshotId === null)
    throw invalid(
      'The emulator creates volumes from snapshots only: SnapshotId is required',
      'MissingParameter',
    );
  const zone = params.get('AvailabilityZone');
  if (zone === null)
    throw invalid('The request must contain the parameter AvailabilityZone', 'MissingParameter');
  if (!/^[a-z]$/.test(zone.slice(context.config.region.length)) || !zone.startsWith(context.config.region)) {
    throw invalid(`Invalid availability zone: [${zone}]`, 'InvalidParameterValue');
  }
  const token = params.get('ClientToken') ?? undefined;
  if (token !== undefined) {
    const existing = [...context.state.volumes.values()].find((v) => v.clientToken === token);
    if (existing) {
      if (existing.snapshotId !== snapshotId || existing.availabilityZone !== zone)
        throw invalid('The client token was used with other parameters.', 'IdempotentParameterMismatch');
      return answer(context, 'CreateVolume', volumeXml(existing));
    }
  }
  const snapshot = context.state.snapshots.get(snapshotId);
  if (!snapshot) throw invalid(`The snapshot '${snapshotId}' does not exist.`, 'InvalidSnapshot.NotFound');
  if (snapshot.status !== 'completed') {
    throw invalid(`Snapshot '${snapshotId}' is currently in state '${snapshot.status}'`, 'IncorrectState');
  }
  const sizeText = params.get('Size');
  const sizeGiB = sizeText === null ? snapshot.sizeGiB : Number(sizeText);
  if (!Number.isSafeInteger(sizeGiB) || sizeGiB < snapshot.sizeGiB || sizeGiB > 65_536) {
    throw invalid(
      `The volume size must be at least the snapshot size (${snapshot.sizeGiB} GiB) and at most 65536.`,
      'InvalidParameterValue',
    );
  }
  const encrypted = snapshot.encrypted || params.get('Encrypted') === 'true';
  const volumeType = params.get('VolumeType') ?? 'gp2';
  const iops = params.get('Iops');
  const id = context.state.nextId('vol');
  const volume: VolumeState = {
    id,
    sizeGiB,
    volumeType,
    iops: iops === null ? (volumeType === 'gp3' ? 3000 : undefined) : Number(iops),
    encrypted,
    kmsKeyId: encrypted
      ? (params.get('KmsKeyId') ?? snapshot.kmsKeyId ?? context.config.defaultKmsKey)
      : undefined,
    availabilityZone: zone,
    createTime: context.state.now(),
    tags: tagsFromSpecifications(params, 'volume'),
    blocks: context.state.volumeBlocksOf(snapshot),
    attachment: undefined,
    snapshotId,
    ...(token === undefined ? {} : { clientToken: token }),
    creatingPolls: context.config.completionPolls === 0 ? undefined : 0,
  };
  context.state.volumes.set(id, volume);
  return answer(context, 'CreateVolume', volumeXml(volume));
}

function describeRegions(context: HandlerContext, params: URLSearchParams): HandlerResponse {
  const all = params.get('AllRegions') === 'true';
  const names = listParam(params, 'RegionName');
  const regions = context.config.regions.filter(
    (r) => (all || r.optInStatus !== 'not-opted-in') && (names.length === 0 || names.includes(r.name)),
  );
  return answer(context, 'DescribeRegions', {
    regionInfo: regions.map((r) => ({
      regionName: r.name,
      regionEndpoint: `ec2.${r.name}.amazonaws.com`,
      optInStatus: r.optInStatus,
    })),
  });
}

const HANDLERS: Record<string, (context: HandlerContext, params: URLSearchParams) => HandlerResponse> = {
  DescribeInstances: describeInstances,
  DescribeVolumes: describeVolumes,
  DescribeInstanceTypes: describeInstanceTypes,
  CreateSnapshots: createSnapshots,
  DescribeSnapshots: describeSnapshots,
  DeleteSnapshot: deleteSnapshot,
  DescribeRegions: describeRegions,
  CreateVolume: createVolume,
};

/** Whether the emulator answers this EC2 action. @internal */
export function isEc2Action(action: string): boolean {
  return action in HANDLERS;
}

/** Answers one EC2 query request: IAM (and DryRun) first, then the action. @internal */
export function handleEc2(context: HandlerContext, action: string, params: URLSearchParams): HandlerResponse {
  const handler = HANDLERS[action];
  if (!handler)
    throw new EmulatorError(400, 'InvalidAction', `The action ${action} is not valid for this web service.`);
  const actions = [`ec2:${action}`];
  if (
    (action === 'CreateSnapshots' || action === 'CreateVolume') &&
    params.get('TagSpecification.1.ResourceType') !== null
  )
    actions.push('ec2:CreateTags');
  const denied = actions.find((a) => !context.isAllowed(a));
  if (denied) {
    throw new EmulatorError(
      403,
      'UnauthorizedOperation',
      `You are not authorized to perform this operation. User: arn:aws:iam::${context.config.accountId}:user/${context.user.userName} is not authorized to perform: ${denied} because no identity-based policy allows the ${denied} action`,
    );
  }
  if (params.get('DryRun') === 'true') {
    throw new EmulatorError(412, 'DryRunOperation', 'Request would have succeeded, but DryRun flag is set.');
  }
  const fault = context.takeFault(action as never);
  if (fault?.kind === 'throttle')
    throw new EmulatorError(503, 'RequestLimitExceeded', 'Request limit exceeded.');
  if (fault?.kind === 'internal-error') {
    throw new EmulatorError(500, 'InternalError', 'An internal error has occurred (injected).');
  }
  return handler(context, params);
}
