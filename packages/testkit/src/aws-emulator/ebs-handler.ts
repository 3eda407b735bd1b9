import { createHash } from 'node:crypto';
import {
  type AwsEmulatorFault,
  EmulatorError,
  type HandlerContext,
  type HandlerResponse,
} from './emulator-context.js';
import {
  BLOCK_TOKEN_TTL_MS,
  type BlockRecord,
  EBS_BLOCK_SIZE,
  GIB,
  lowerBound,
  type SnapshotState,
} from './emulator-state.js';

const SNAPSHOT_ID = /^snap-[0-9a-f]+$/;
const checksums = new WeakMap<BlockRecord, string>();

function checksumOf(record: BlockRecord): string {
  let value = checksums.get(record);
  if (value === undefined) {
    value = createHash('sha256').update(record.data).digest('base64');
    checksums.set(record, value);
  }
  return value;
}

function json(status: number, value: unknown, headers: Record<string, string> = {}): HandlerResponse {
  return { status, headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(value) };
}

const validation = (message: string, reason?: string) =>
  new EmulatorError(400, 'ValidationException', message, reason);

/** An EBS direct API error answer (rest-json: `x-amzn-errortype` and `{ message, Reason }`). @internal */
export function ebsErrorResponse(error: EmulatorError, requestId: string): HandlerResponse {
  return json(
    error.status,
    { message: error.message, ...(error.reason === undefined ? {} : { Reason: error.reason }) },
    { 'x-amzn-errortype': error.code, 'x-amzn-requestid': requestId },
  );
}

/** The EBS direct API operation a request is, from its method and path; undefined when none. @internal */
export function ebsOperation(
  method: string,
  path: string,
): { operation: string; params: string[] } | undefined {
  const parts = path
    .split('/')
    .filter((p) => p !== '')
    .map(decodeURIComponent);
  if (parts[0] !== 'snapshots') return undefined;
  if (method === 'POST' && parts.length === 1) return { operation: 'StartSnapshot', params: [] };
  if (method === 'POST' && parts.length === 3 && parts[1] === 'completion') {
    return { operation: 'CompleteSnapshot', params: [parts[2]!] };
  }
  if (method === 'GET' && parts.length === 3 && parts[2] === 'blocks') {
    return { operation: 'ListSnapshotBlocks', params: [parts[1]!] };
  }
  if (method === 'GET' && parts.length === 3 && parts[2] === 'changedblocks') {
    return { operation: 'ListChangedBlocks', params: [parts[1]!] };
  }
  if (parts.length === 4 && parts[2] === 'blocks') {
    if (method === 'GET') return { operation: 'GetSnapshotBlock', params: [parts[1]!, parts[3]!] };
    if (method === 'PUT') return { operation: 'PutSnapshotBlock', params: [parts[1]!, parts[3]!] };
  }
  return undefined;
}

function snapshotOf(context: HandlerContext, id: string): SnapshotState {
  if (!SNAPSHOT_ID.test(id)) throw validation(`The snapshot ID '${id}' is not valid.`, 'INVALID_SNAPSHOT_ID');
  const snapshot = context.state.snapshots.get(id);
  if (!snapshot) {
    throw new EmulatorError(
      404,
      'ResourceNotFoundException',
      `The snapshot '${id}' does not exist.`,
      'SNAPSHOT_NOT_FOUND',
    );
  }
  return snapshot;
}

function completedSnapshotOf(context: HandlerContext, id: string): SnapshotState {
  const snapshot = snapshotOf(context, id);
  if (snapshot.status !== 'completed') {
    // AWS does not document this answer; the emulator's choice.
    throw validation(`The snapshot '${id}' is not in the completed state (${snapshot.status}).`);
  }
  return snapshot;
}

function integerParam(query: URLSearchParams, name: string): number | undefined {
  const text = query.get(name);
  if (text === null) return undefined;
  if (!/^\d+$/.test(text))
    throw validation(`${name} must be a non-negative integer.`, 'INVALID_PARAMETER_VALUE');
  return Number(text);
}

function pageSize(query: URLSearchParams): number {
  const value = integerParam(query, 'maxResults') ?? 10_000;
  if (value > 10_000) throw validation('maxResults must be at most 10000.', 'INVALID_PARAMETER_VALUE');
  return Math.max(100, value); // the FAQ: under 100 still returns at least 100
}

function startOf(
  context: HandlerContext,
  query: URLSearchParams,
  operation: 'ListSnapshotBlocks' | 'ListChangedBlocks',
  snapshots: string,
): { start: number; page: number } {
  const token = query.get('pageToken');
  if (token !== null) {
    const decoded = context.state.readPageToken(token, operation, snapshots);
    if (decoded === 'invalid') throw validation('The pagination token is not valid.', 'INVALID_PAGE_TOKEN');
    if (decoded === 'expired') throw validation('The pagination token has expired.', 'INVALID_PAGE_TOKEN');
    return { start: decoded.next, page: decoded.page + 1 };
  }
  return { start: integerParam(query, 'startingBlockIndex') ?? 0, page: 1 };
}

/**
 * Takes the request's injected fault (a `throttle` is thrown at once), then throttles by the account's bucket
 * and, for block calls, the snapshot's; an injected `internal-error` comes after. Returns the fault for the
 * handler (a damaged or truncated body).
 */
function admit(
  context: HandlerContext,
  operation:
    | 'ListSnapshotBlocks'
    | 'ListChangedBlocks'
    | 'GetSnapshotBlock'
    | 'StartSnapshot'
    | 'PutSnapshotBlock'
    | 'CompleteSnapshot',
  where: { snapshotId?: string; blockIndex?: number } = {},
  perSnapshot = false,
): AwsEmulatorFault | undefined {
  const fault = context.takeFault(operation, where);
  if (fault?.kind === 'throttle')
    throw new EmulatorError(400, 'ThrottlingException', 'Rate exceeded (injected).');
  const snapshotBucket = perSnapshot ? context.bucket(`${operation}:${where.snapshotId}`) : undefined;
  const accountBucket = context.bucket(operation);
  if (snapshotBucket && !snapshotBucket.available()) {
    throw new EmulatorError(
      400,
      'RequestThrottledException',
      'You have exceeded the throttling limit for the snapshot.',
      'RESOURCE_LEVEL_THROTTLE',
    );
  }
  if (accountBucket && !accountBucket.available()) {
    throw new EmulatorError(400, 'ThrottlingException', 'Rate exceeded for the account.');
  }
  snapshotBucket?.take();
  accountBucket?.take();
  if (fault?.kind === 'internal-error') {
    throw new EmulatorError(500, 'InternalServerException', 'An internal error occurred (injected).');
  }
  return fault;
}

function expiry(context: HandlerContext): number {
  return (context.state.clock.now() + BLOCK_TOKEN_TTL_MS) / 1000;
}

function listSnapshotBlocks(context: HandlerContext, id: string, query: URLSearchParams): HandlerResponse {
  admit(context, 'ListSnapshotBlocks', { snapshotId: id });
  const snapshot = completedSnapshotOf(context, id);
  const size = pageSize(query);
  const { start, page } = startOf(context, query, 'ListSnapshotBlocks', id);
  const indexes = context.state.sortedIndexes(snapshot);
  const position = lowerBound(indexes, start);
  const { shortPages, emptyPageEvery } = context.config.pageShape;
  const count =
    emptyPageEvery !== undefined && page % emptyPageEvery === 0 ? 0 : shortPages ? Math.ceil(size / 3) : size;
  const taken = indexes.slice(position, position + count);
  const next = position + taken.length;
  return json(200, {
    Blocks: taken.map((index) => ({ BlockIndex: index, BlockToken: context.state.blockToken(id, index) })),
    ExpiryTime: expiry(context),
    VolumeSize: snapshot.sizeGiB,
    BlockSize: EBS_BLOCK_SIZE,
    ...(next < indexes.length
      ? {
          NextToken: context.state.pageToken({
            operation: 'ListSnapshotBlocks',
            snapshots: id,
            next: indexes[next]!,
            page,
          }),
        }
      : {}),
  });
}

function listChangedBlocks(
  context: HandlerContext,
  secondId: string,
  query: URLSearchParams,
): HandlerResponse {
  admit(context, 'ListChangedBlocks', { snapshotId: secondId });
  const firstId = query.get('firstSnapshotId');
  const second = completedSnapshotOf(context, secondId);
  const first = firstId === null ? undefined : completedSnapshotOf(context, firstId);
  if (first && first.lineage !== second.lineage) {
    throw validation(`The snapshots '${firstId}' and '${secondId}' are not related.`, 'UNRELATED_SNAPSHOTS');
  }
  const size = pageSize(query);
  const key = `${firstId ?? ''}:${secondId}`;
  const { start, page } = startOf(context, query, 'ListChangedBlocks', key);
  const a = first ? context.state.sortedIndexes(first) : [];
  const b = context.state.sortedIndexes(second);
  let i = lowerBound(a, start);
  let j = lowerBound(b, start);
  const changed: { BlockIndex: number; FirstBlockToken?: string; SecondBlockToken?: string }[] = [];
  // A page is a window of `size` indexes written in either snapshot, not `size` changes: a window without a
  // change is an empty page with a NextToken (the user guide's example).
  for (let scanned = 0; scanned < size && (i < a.length || j < b.length); scanned++) {
    const index = Math.min(
      i < a.length ? a[i]! : Number.POSITIVE_INFINITY,
      j < b.length ? b[j]! : Number.POSITIVE_INFINITY,
    );
    const inFirst = i < a.length && a[i] === index;
    const inSecond = j < b.length && b[j] === index;
    if (inFirst) i++;
    if (inSecond) j++;
    const x = inFirst ? first!.blocks.get(index) : undefined;
    const y = inSecond ? second.blocks.get(index) : undefined;
    if (x && y && x.generation === y.generation) continue;
    changed.push({
      BlockIndex: index,
      ...(x ? { FirstBlockToken: context.state.blockToken(firstId!, index) } : {}),
      ...(y ? { SecondBlockToken: context.state.blockToken(secondId, index) } : {}),
    });
  }
  const next = Math.min(
    i < a.length ? a[i]! : Number.POSITIVE_INFINITY,
    j < b.length ? b[j]! : Number.POSITIVE_INFINITY,
  );
  return json(200, {
    ChangedBlocks: changed,
    ExpiryTime: expiry(context),
    VolumeSize: second.sizeGiB,
    BlockSize: EBS_BLOCK_SIZE,
    ...(Number.isFinite(next)
      ? { NextToken: context.state.pageToken({ operation: 'ListChangedBlocks', snapshots: key, next, page }) }
      : {}),
  });
}

function blockIndexOf(snapshot: SnapshotState, text: string): number {
  if (!/^\d+$/.test(text)) throw validation(`The block index '${text}' is not valid.`, 'INVALID_BLOCK');
  const index = Number(text);
  if (index * EBS_BLOCK_SIZE >= snapshot.sizeGiB * GIB) {
    throw validation(`The block index ${index} is outside the volume.`, 'INVALID_BLOCK');
  }
  return index;
}

function getSnapshotBlock(
  context: HandlerContext,
  id: string,
  indexText: string,
  query: URLSearchParams,
): HandlerResponse {
  const fault = admit(context, 'GetSnapshotBlock', { snapshotId: id, blockIndex: Number(indexText) }, true);
  const snapshot = completedSnapshotOf(context, id);
  const index = blockIndexOf(snapshot, indexText);
  const token = query.get('blockToken');
  if (token === null) throw validation('blockToken is required.', 'INVALID_BLOCK_TOKEN');
  const check = context.state.checkBlockToken(token, id, index);
  const record = snapshot.blocks.get(index);
  if (check === 'expired') throw validation('The block token has expired.', 'INVALID_BLOCK_TOKEN');
  if (check === 'invalid' || !record)
    throw validation('The block token is not valid.', 'INVALID_BLOCK_TOKEN');
  let data = record.data;
  if (fault?.kind === 'checksum-mismatch') {
    data = Buffer.from(record.data);
    data[data.length >> 1] = (data[data.length >> 1]! ^ 0x01) & 0xff;
  }
  const stats = context.stats;
  stats.blocksServed++;
  let perBlock = stats.blockReads.get(id);
  if (!perBlock) {
    perBlock = new Map();
    stats.blockReads.set(id, perBlock);
  }
  perBlock.set(index, (perBlock.get(index) ?? 0) + 1);
  return {
    status: 200,
    headers: {
      'content-type': 'application/octet-stream',
      'x-amz-Data-Length': String(data.length),
      'x-amz-Checksum': checksumOf(record),
      'x-amz-Checksum-Algorithm': 'SHA256',
    },
    body: data,
    ...(fault?.kind === 'truncated-body' ? { truncate: true } : {}),
  };
}

function parseJsonBody(body: Buffer): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(body.length === 0 ? '{}' : body.toString('utf8'));
    if (typeof value === 'object' && value !== null && !Array.isArray(value))
      return value as Record<string, unknown>;
  } catch {
    // answered below
  }
  throw new EmulatorError(400, 'SerializationException', 'The request body is not a JSON object.');
}

function startSnapshot(context: HandlerContext, body: Buffer): HandlerResponse {
  admit(context, 'StartSnapshot');
  const input = parseJsonBody(body);
  const size = input.VolumeSize;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 1 || size > 65_536) {
    throw validation('VolumeSize must be an integer from 1 to 65536 (GiB).', 'INVALID_VOLUME_SIZE');
  }
  const clientToken = typeof input.ClientToken === 'string' ? input.ClientToken : undefined;
  const fingerprint = JSON.stringify([
    size,
    input.ParentSnapshotId ?? null,
    input.Tags ?? null,
    input.Encrypted ?? null,
    input.KmsKeyArn ?? null,
  ]);
  const state = context.state;
  if (clientToken !== undefined) {
    for (const existing of state.snapshots.values()) {
      if (existing.clientToken !== clientToken) continue;
      if (existing.startFingerprint !== fingerprint) {
        throw new EmulatorError(409, 'ConflictException', 'The ClientToken was used with other parameters.');
      }
      return json(201, startAnswer(context, existing));
    }
  }
  const quota = context.config.quotas?.pendingDirectSnapshots;
  const pending = [...state.snapshots.values()].filter(
    (s) => s.source === 'direct' && s.status === 'pending',
  ).length;
  if (quota !== undefined && pending >= quota) {
    throw new EmulatorError(
      400,
      'ConcurrentLimitExceededException',
      'You have reached the limit for concurrent API requests.',
    );
  }
  let parent: SnapshotState | undefined;
  if (input.ParentSnapshotId !== undefined) {
    parent = completedSnapshotOf(context, String(input.ParentSnapshotId));
    if (size < parent.sizeGiB)
      throw validation('VolumeSize is smaller than the parent snapshot.', 'INVALID_VOLUME_SIZE');
  }
  const encryption = encryptionOf(context, input, parent);
  const id = state.nextId('snap');
  const tags = Array.isArray(input.Tags)
    ? (input.Tags as { Key?: unknown; Value?: unknown }[]).map((t) => ({
        Key: String(t.Key),
        Value: String(t.Value ?? ''),
      }))
    : [];
  const snapshot: SnapshotState = {
    id,
    volumeId: 'vol-ffffffff',
    lineage: parent?.lineage ?? id,
    sizeGiB: size,
    blocks: new Map(parent?.blocks ?? []),
    status: 'pending',
    polls: 0,
    sealed: false,
    startTime: state.now(),
    description: typeof input.Description === 'string' ? input.Description : '',
    tags,
    encrypted: encryption !== undefined,
    kmsKeyId: encryption,
    unwrittenReadsGarbage: encryption !== undefined && (parent === undefined || parent.unwrittenReadsGarbage),
    source: 'direct',
    parentSnapshotId: parent?.id,
    clientToken,
    startFingerprint: fingerprint,
    putBlocks: new Set(),
    sortedIndexes: undefined,
  };
  state.snapshots.set(id, snapshot);
  return json(201, startAnswer(context, snapshot));
}

/**
 * The KMS key of a new direct-API snapshot, undefined when unencrypted, by the user guide's "Encryption outcomes
 * for EBS direct APIs": `Encrypted` and `ParentSnapshotId` cannot be given together; a child of an encrypted parent
 * is encrypted with the parent's key (a `KmsKeyArn` is refused); with encryption by default, an unencrypted
 * snapshot (`Encrypted: false`, or an unencrypted parent) is refused; `Encrypted: true` without a key uses the
 * account's `aws/ebs` key. A `KmsKeyArn` without `Encrypted: true` (and no default) is refused: the emulator's
 * reading of the table.
 */
function encryptionOf(
  context: HandlerContext,
  input: Record<string, unknown>,
  parent: SnapshotState | undefined,
): string | undefined {
  const { encryptionByDefaultKey, defaultKmsKey } = context.config;
  const key = typeof input.KmsKeyArn === 'string' ? input.KmsKeyArn : undefined;
  if (parent) {
    if (input.Encrypted !== undefined) {
      throw validation(
        "You can't specify ParentSnapshotId and Encrypted in the same request.",
        'INVALID_PARAMETER_VALUE',
      );
    }
    if (key !== undefined) {
      throw validation(
        'A KmsKeyArn cannot be given with a ParentSnapshotId: the snapshot takes its parent encryption.',
        'INVALID_PARAMETER_VALUE',
      );
    }
    if (!parent.encrypted && encryptionByDefaultKey !== undefined) {
      throw validation(
        'Encryption by default is enabled: an unencrypted parent snapshot cannot be used.',
        'INVALID_PARAMETER_VALUE',
      );
    }
    return parent.encrypted ? parent.kmsKeyId : undefined;
  }
  if (input.Encrypted === true) return key ?? encryptionByDefaultKey ?? defaultKmsKey;
  if (input.Encrypted === false && encryptionByDefaultKey !== undefined) {
    throw validation(
      'Encryption by default is enabled: an unencrypted snapshot cannot be created.',
      'INVALID_PARAMETER_VALUE',
    );
  }
  if (key !== undefined && encryptionByDefaultKey === undefined) {
    throw validation('A KmsKeyArn needs Encrypted: true.', 'INVALID_PARAMETER_VALUE');
  }
  return encryptionByDefaultKey === undefined ? undefined : (key ?? encryptionByDefaultKey);
}

function startAnswer(context: HandlerContext, snapshot: SnapshotState): Record<string, unknown> {
  return {
    SnapshotId: snapshot.id,
    OwnerId: context.config.accountId,
    Status: snapshot.status,
    StartTime: snapshot.startTime.getTime() / 1000,
    VolumeSize: snapshot.sizeGiB,
    BlockSize: EBS_BLOCK_SIZE,
    Tags: snapshot.tags,
    Description: snapshot.description,
    ...(snapshot.parentSnapshotId ? { ParentSnapshotId: snapshot.parentSnapshotId } : {}),
    ...(snapshot.kmsKeyId ? { KmsKeyArn: snapshot.kmsKeyId } : {}),
    SseType: snapshot.encrypted ? 'sse-kms' : 'none',
  };
}

function writableSnapshotOf(context: HandlerContext, id: string): SnapshotState {
  const snapshot = snapshotOf(context, id);
  if (snapshot.source !== 'direct' || snapshot.status !== 'pending' || snapshot.sealed) {
    throw validation(
      `The snapshot '${id}' is not a pending snapshot started with StartSnapshot.`,
      'INVALID_SNAPSHOT_ID',
    );
  }
  return snapshot;
}

function headerOf(
  headers: Readonly<Record<string, string | string[] | undefined>>,
  name: string,
): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

const ZERO_BLOCK = Buffer.alloc(EBS_BLOCK_SIZE);
const ZERO_BLOCK_SHA256 = createHash('sha256').update(ZERO_BLOCK).digest('base64');

function putSnapshotBlock(
  context: HandlerContext,
  id: string,
  indexText: string,
  headers: Readonly<Record<string, string | string[] | undefined>>,
  body: Buffer,
): HandlerResponse {
  admit(context, 'PutSnapshotBlock', { snapshotId: id, blockIndex: Number(indexText) }, true);
  const snapshot = writableSnapshotOf(context, id);
  const index = blockIndexOf(snapshot, indexText);
  const length = Number(headerOf(headers, 'x-amz-data-length'));
  if (length !== EBS_BLOCK_SIZE) throw validation('DataLength must be 524288.', 'INVALID_PARAMETER_VALUE');
  if (body.length !== length) throw validation('Failed to read block data', 'INVALID_PARAMETER_VALUE');
  if (headerOf(headers, 'x-amz-checksum-algorithm') !== 'SHA256') {
    throw validation('ChecksumAlgorithm must be SHA256.', 'INVALID_PARAMETER_VALUE');
  }
  // A zero block is kept as one shared buffer (an encrypted restore writes many): memory stays what data costs.
  const zero = body.equals(ZERO_BLOCK);
  const checksum = zero ? ZERO_BLOCK_SHA256 : createHash('sha256').update(body).digest('base64');
  if (headerOf(headers, 'x-amz-checksum') !== checksum) {
    throw validation('The checksum does not match the block data.', 'INVALID_PARAMETER_VALUE');
  }
  snapshot.blocks.set(index, {
    generation: context.state.nextGeneration(),
    data: zero ? ZERO_BLOCK : Buffer.from(body),
  });
  snapshot.putBlocks.add(index);
  return json(201, {}, { 'x-amz-Checksum': checksum, 'x-amz-Checksum-Algorithm': 'SHA256' });
}

function completeSnapshot(
  context: HandlerContext,
  id: string,
  headers: Readonly<Record<string, string | string[] | undefined>>,
): HandlerResponse {
  admit(context, 'CompleteSnapshot', { snapshotId: id });
  const snapshot = writableSnapshotOf(context, id);
  const count = Number(headerOf(headers, 'x-amz-changedblockscount'));
  if (!Number.isSafeInteger(count) || count !== snapshot.putBlocks.size) {
    throw validation(
      `ChangedBlocksCount ${headerOf(headers, 'x-amz-changedblockscount')} does not match the ${snapshot.putBlocks.size} blocks written.`,
      'INVALID_PARAMETER_VALUE',
    );
  }
  const aggregate = headerOf(headers, 'x-amz-checksum');
  if (aggregate !== undefined) {
    const hash = createHash('sha256');
    for (const index of [...snapshot.putBlocks].sort((x, y) => x - y)) {
      hash.update(Buffer.from(checksumOf(snapshot.blocks.get(index)!), 'base64'));
    }
    if (hash.digest('base64') !== aggregate) {
      throw validation(
        'The aggregated checksum does not match the blocks written.',
        'INVALID_PARAMETER_VALUE',
      );
    }
  }
  snapshot.sealed = true;
  if (context.config.completionPolls === 0) snapshot.status = 'completed';
  return json(202, { Status: snapshot.status });
}

/** Answers one EBS direct API request. @internal */
export function handleEbs(
  context: HandlerContext,
  route: { operation: string; params: string[] },
  query: URLSearchParams,
  headers: Readonly<Record<string, string | string[] | undefined>>,
  body: Buffer,
): HandlerResponse {
  if (!context.isAllowed(`ebs:${route.operation}`)) {
    throw new EmulatorError(
      403,
      'AccessDeniedException',
      `User: arn:aws:iam::${context.config.accountId}:user/${context.user.userName} is not authorized to perform: ebs:${route.operation}`,
      'UNAUTHORIZED_ACCOUNT',
    );
  }
  const [a, b] = route.params as [string, string];
  switch (route.operation) {
    case 'ListSnapshotBlocks':
      return listSnapshotBlocks(context, a, query);
    case 'ListChangedBlocks':
      return listChangedBlocks(context, a, query);
    case 'GetSnapshotBlock':
      return getSnapshotBlock(context, a, b, query);
    case 'StartSnapshot':
      return startSnapshot(context, body);
    case 'PutSnapshotBlock':
      return putSnapshotBlock(context, a, b, headers, body);
    default:
      return completeSnapshot(context, a, headers);
  }
}
