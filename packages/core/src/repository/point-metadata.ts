import { randomBytes } from 'node:crypto';
import { InvalidArgumentError, RepositoryCorruptError } from '../errors/drkit-error.js';
import type { ChangeSetValidity, Checkpoint, FullReadReason } from '../spec/v2/index.js';
import { chunkCountOf, MAX_CAPACITY_BYTES, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE } from './chunk-index.js';
import { decodeCheckedJson, encodeCheckedJson } from './repository-config.js';
import type { NewPoint, NewPointStats, PointStats, RecoveryPoint } from './types.js';

export { MAX_CHUNK_SIZE, MIN_CHUNK_SIZE } from './chunk-index.js';

/** Format version written in every point metadata blob. */
export const POINT_FORMAT_VERSION = 2;

const POINT_ID = /^\d{8}T\d{9}-[0-9a-f]{8}$/;
const DIGEST = /^[0-9a-f]{64}$/;
/** A full-read reason or a consistency word: an open vocabulary, so only its shape is checked. */
export const VOCABULARY_WORD: RegExp = /^[a-z0-9][a-z0-9-]{0,63}$/;

/** Whether a string has the shape of a point id (`yyyymmddThhmmssSSS-xxxxxxxx`). */
export function isPointId(value: unknown): value is string {
  return typeof value === 'string' && POINT_ID.test(value);
}

/** A new point id: the UTC time of `createdAt` to the millisecond, a dash, 8 random hex digits. */
export function newPointId(createdAt: Date): string {
  const stamp = createdAt.toISOString().replace(/[-:]/g, '').replace('.', '').replace('Z', '');
  return `${stamp}-${randomBytes(4).toString('hex')}`;
}

/** Store key of a point's metadata. */
export function pointKey(id: string): string {
  return `points/${id}.json`;
}

/** Store key of a point's manifest blob (the list of its index segments). */
export function indexKey(id: string): string {
  return `indexes/${id}`;
}

/** The point id in a metadata key, or undefined if the key is not one. */
export function pointIdFromKey(key: string): string | undefined {
  const match = /^points\/(.+)\.json$/.exec(key);
  return match !== null && isPointId(match[1]) ? match[1] : undefined;
}

/** Reports a problem with one field; `field` is a dotted path. */
type Fail = (field: string, problem: string) => never;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function text(value: unknown, field: string, fail: Fail): string {
  if (typeof value !== 'string' || value === '') fail(field, 'must be a non-empty string');
  return value as string;
}

function timestamp(value: unknown, field: string, fail: Fail): string {
  const result = text(value, field, fail);
  if (Number.isNaN(Date.parse(result))) fail(field, `${JSON.stringify(result)} is not an ISO 8601 time`);
  return result;
}

function count(value: unknown, field: string, fail: Fail): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    fail(field, 'must be a non-negative integer');
  }
  return value as number;
}

function amount(value: unknown, field: string, fail: Fail): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0)
    fail(field, 'must be a non-negative number');
  return value as number;
}

function validity(value: unknown, field: string, fail: Fail): ChangeSetValidity {
  if (!isObject(value)) return fail(field, 'must be an object');
  let detail: { detail?: string } = {};
  if (value.detail !== undefined) {
    if (typeof value.detail !== 'string') fail(`${field}.detail`, 'must be a string');
    detail = { detail: value.detail as string };
  }
  if (value.kind === 'exact' || value.kind === 'superset') return { kind: value.kind, ...detail };
  if (value.kind !== 'full') return fail(`${field}.kind`, 'must be "exact", "superset" or "full"');
  // Open: a reason this drkit does not know (a newer core word, a provider's own) is kept as it is.
  if (typeof value.reason !== 'string' || !VOCABULARY_WORD.test(value.reason)) {
    fail(`${field}.reason`, 'must be a full-read reason (lowercase letters, digits and -, at most 64)');
  }
  const result: ChangeSetValidity = { kind: 'full', reason: value.reason as FullReadReason, ...detail };
  return result;
}

function checkpoint(value: unknown, field: string, fail: Fail): Checkpoint {
  if (!isObject(value)) return fail(field, 'must be an object');
  return {
    diskId: text(value.diskId, `${field}.diskId`, fail),
    token: text(value.token, `${field}.token`, fail),
    capacityBytes: count(value.capacityBytes, `${field}.capacityBytes`, fail),
    createdAt: timestamp(value.createdAt, `${field}.createdAt`, fail),
    ...(value.snapshotName === undefined
      ? {}
      : { snapshotName: text(value.snapshotName, `${field}.snapshotName`, fail) }),
  };
}

function newStats(value: unknown, field: string, fail: Fail): NewPointStats {
  if (!isObject(value)) return fail(field, 'must be an object');
  return {
    bytesRead: count(value.bytesRead, `${field}.bytesRead`, fail),
    bytesWritten: count(value.bytesWritten, `${field}.bytesWritten`, fail),
    bytesSkippedUnchanged: count(value.bytesSkippedUnchanged, `${field}.bytesSkippedUnchanged`, fail),
    bytesDeduplicated: count(value.bytesDeduplicated, `${field}.bytesDeduplicated`, fail),
    bytesZero: count(value.bytesZero, `${field}.bytesZero`, fail),
    seconds: amount(value.seconds, `${field}.seconds`, fail),
  };
}

function storedStats(value: Record<string, unknown>, field: string, fail: Fail): PointStats {
  return {
    ...newStats(value, field, fail),
    bytesStored: count(value.bytesStored, `${field}.bytesStored`, fail),
    chunksWritten: count(value.chunksWritten, `${field}.chunksWritten`, fail),
    segmentsWritten: count(value.segmentsWritten, `${field}.segmentsWritten`, fail),
  };
}

/** Checks that the four plain-byte counters add up to the capacity. */
function checkIdentity(stats: NewPointStats, capacityBytes: number, fail: Fail): void {
  const sum = stats.bytesWritten + stats.bytesDeduplicated + stats.bytesSkippedUnchanged + stats.bytesZero;
  if (sum !== capacityBytes) {
    fail(
      'stats',
      `bytesWritten + bytesDeduplicated + bytesSkippedUnchanged + bytesZero is ${sum}, not the capacity ${capacityBytes}`,
    );
  }
}

/** The fields shared by {@link NewPoint} and {@link RecoveryPoint}, checked, in a stable order. */
function describedPoint(value: Record<string, unknown>, fail: Fail): NewPoint {
  const capacityBytes = count(value.capacityBytes, 'capacityBytes', fail);
  if (capacityBytes === 0 || capacityBytes > MAX_CAPACITY_BYTES) {
    fail('capacityBytes', `must be from 1 to ${MAX_CAPACITY_BYTES} (256 TiB)`);
  }
  const chunkSize = count(value.chunkSize, 'chunkSize', fail);
  if (chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) {
    fail('chunkSize', `must be between ${MIN_CHUNK_SIZE} and ${MAX_CHUNK_SIZE} bytes`);
  }
  const point: {
    -readonly [K in keyof NewPoint]: NewPoint[K];
  } = {
    platformId: text(value.platformId, 'platformId', fail),
    hostId: text(value.hostId, 'hostId', fail),
    diskId: text(value.diskId, 'diskId', fail),
    hostName: text(value.hostName, 'hostName', fail),
    diskName: text(value.diskName, 'diskName', fail),
    createdAt: timestamp(value.createdAt, 'createdAt', fail),
    capacityBytes,
    chunkSize,
    validity: validity(value.validity, 'validity', fail),
    stats: newStats(value.stats, 'stats', fail),
  };
  checkIdentity(point.stats, capacityBytes, fail);
  if (value.parentId !== undefined) {
    if (!isPointId(value.parentId)) fail('parentId', 'must be a point id');
    point.parentId = value.parentId as string;
  }
  if (value.checkpoint !== undefined) point.checkpoint = checkpoint(value.checkpoint, 'checkpoint', fail);
  if (value.snapshotAt !== undefined) point.snapshotAt = timestamp(value.snapshotAt, 'snapshotAt', fail);
  if (value.jobId !== undefined) point.jobId = text(value.jobId, 'jobId', fail);
  if (value.taskId !== undefined) point.taskId = text(value.taskId, 'taskId', fail);
  if (value.snapshotName !== undefined) point.snapshotName = text(value.snapshotName, 'snapshotName', fail);
  if (value.consistency !== undefined) {
    if (typeof value.consistency !== 'string' || !VOCABULARY_WORD.test(value.consistency)) {
      fail('consistency', 'must be a consistency word (application, host, disk, none, or a newer one)');
    }
    point.consistency = value.consistency as string;
  }
  return point;
}

/**
 * Checks the description handed to `commit` and returns a clean copy (unknown fields dropped).
 *
 * @throws {@link InvalidArgumentError} naming the first invalid field.
 */
export function checkNewPoint(value: NewPoint): NewPoint {
  const fail: Fail = (field, problem) => {
    throw new InvalidArgumentError(`point.${field} ${problem}`);
  };
  if (!isObject(value)) return fail('', 'must be an object');
  return describedPoint(value, fail);
}

/**
 * The committed point built from its description, id, manifest digest and the stats only the session knows. A
 * description without `snapshotAt` gets its `createdAt`.
 */
export function recoveryPoint(
  id: string,
  point: NewPoint,
  indexDigest: string,
  written: Pick<PointStats, 'bytesStored' | 'chunksWritten' | 'segmentsWritten'>,
): RecoveryPoint {
  const { platformId, hostId, diskId, hostName, diskName, createdAt, capacityBytes, chunkSize } = point;
  return {
    id,
    platformId,
    hostId,
    diskId,
    hostName,
    diskName,
    createdAt,
    snapshotAt: point.snapshotAt ?? createdAt,
    ...(point.jobId === undefined ? {} : { jobId: point.jobId }),
    ...(point.taskId === undefined ? {} : { taskId: point.taskId }),
    ...(point.snapshotName === undefined ? {} : { snapshotName: point.snapshotName }),
    consistency: point.consistency ?? 'none',
    capacityBytes,
    chunkSize,
    chunkCount: chunkCountOf(capacityBytes, chunkSize),
    ...(point.parentId === undefined ? {} : { parentId: point.parentId }),
    validity: point.validity,
    ...(point.checkpoint === undefined ? {} : { checkpoint: point.checkpoint }),
    indexDigest,
    stats: {
      bytesRead: point.stats.bytesRead,
      bytesWritten: point.stats.bytesWritten,
      bytesSkippedUnchanged: point.stats.bytesSkippedUnchanged,
      bytesDeduplicated: point.stats.bytesDeduplicated,
      bytesZero: point.stats.bytesZero,
      bytesStored: written.bytesStored,
      chunksWritten: written.chunksWritten,
      segmentsWritten: written.segmentsWritten,
      seconds: point.stats.seconds,
    },
  };
}

/** The metadata blob of a point: `formatVersion` then the {@link RecoveryPoint} fields, as checked JSON. */
export function serializePoint(point: RecoveryPoint): Uint8Array {
  return encodeCheckedJson({ formatVersion: POINT_FORMAT_VERSION, ...point });
}

/** Marks the error of a metadata blob written by a newer drkit. */
const UNSUPPORTED = Symbol('unsupported-version');

/** Why a point metadata blob cannot be read. */
export type UnreadablePointProblem = 'corrupt' | 'unsupported-version';

/** What {@link readPointMetadata} found: the point, or why it cannot be read. */
export type PointMetadataReading =
  | { readonly ok: true; readonly point: RecoveryPoint }
  | { readonly ok: false; readonly problem: UnreadablePointProblem; readonly error: RepositoryCorruptError };

/**
 * Parses and checks a point's metadata JSON read from `key`, saying why it cannot be read rather than throwing:
 * `unsupported-version` when its `formatVersion` is an integer above {@link POINT_FORMAT_VERSION} (a newer
 * drkit wrote it; its other fields are not judged), `corrupt` for anything else that fails.
 */
export function readPointMetadata(bytes: Uint8Array, key: string): PointMetadataReading {
  try {
    return { ok: true, point: parsePoint(bytes, key) };
  } catch (error) {
    if (!RepositoryCorruptError.isInstance(error)) throw error;
    const unsupported = (error as { [UNSUPPORTED]?: boolean })[UNSUPPORTED] === true;
    return { ok: false, problem: unsupported ? 'unsupported-version' : 'corrupt', error };
  }
}

/**
 * Parses and checks a point's metadata JSON read from `key`.
 *
 * @throws {@link RepositoryCorruptError} naming the key and the first invalid field, or the unknown version.
 */
export function parsePoint(bytes: Uint8Array, key: string): RecoveryPoint {
  const fail: Fail = (field, problem) => {
    throw new RepositoryCorruptError(`point metadata ${key} is damaged: ${field} ${problem}`);
  };
  const checked = decodeCheckedJson(bytes, `point metadata ${key}`);
  if (checked === undefined) {
    throw new RepositoryCorruptError(`point metadata ${key} is damaged: it has no checksum line`);
  }
  const { value } = checked;
  if (!isObject(value)) return fail('the document', 'must be an object');
  const version = value.formatVersion;
  if (typeof version === 'number' && Number.isSafeInteger(version) && version > POINT_FORMAT_VERSION) {
    const error = new RepositoryCorruptError(
      `point metadata ${key} has formatVersion ${version}, written by a newer drkit; this drkit reads version ${POINT_FORMAT_VERSION}`,
    );
    Object.defineProperty(error, UNSUPPORTED, { value: true });
    throw error;
  }
  if (version !== POINT_FORMAT_VERSION) {
    fail('formatVersion', `is ${JSON.stringify(version)}; this drkit reads version ${POINT_FORMAT_VERSION}`);
  }
  const id = pointIdFromKey(key);
  if (value.id !== id) fail('id', `must be ${JSON.stringify(id)} (the key's id)`);
  const described = describedPoint(value, fail);
  const stored = storedStats(value.stats as Record<string, unknown>, 'stats', fail);
  const chunkCount = count(value.chunkCount, 'chunkCount', fail);
  if (chunkCount !== chunkCountOf(described.capacityBytes, described.chunkSize)) {
    fail('chunkCount', 'must be ceil(capacityBytes / chunkSize)');
  }
  if (typeof value.indexDigest !== 'string' || !DIGEST.test(value.indexDigest)) {
    fail('indexDigest', 'must be 64 lowercase hex digits');
  }
  const point = recoveryPoint(id as string, described, value.indexDigest as string, stored);
  if (value.lockedUntil === undefined && value.chunksLockedUntil === undefined) return point;
  const lockedUntil = timestamp(value.lockedUntil, 'lockedUntil', fail);
  const chunksLockedUntil = timestamp(value.chunksLockedUntil, 'chunksLockedUntil', fail);
  if (Date.parse(chunksLockedUntil) < Date.parse(lockedUntil)) {
    fail('chunksLockedUntil', 'must not be before lockedUntil');
  }
  return { ...point, lockedUntil, chunksLockedUntil };
}
