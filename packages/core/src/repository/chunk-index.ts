import { createHash, createHmac } from 'node:crypto';
import { zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import { InvalidArgumentError, NotFoundError, RepositoryCorruptError } from '../errors/drkit-error.js';
import { CHUNK_ID_BYTES, chunkIdFromHash, isZeroId } from './chunk-id.js';
import type { Store } from './store.js';
import type { IndexSegment, PointIndex } from './types.js';

// Format v2 of a point's chunk list: positions are grouped in segments of SEGMENT_CHUNKS; each segment's ids are
// a content-addressed blob (`segments/<h2>/<id>`), an all-zero segment is the zero id (not stored), and the
// point's manifest (`indexes/<point id>`) lists the segment ids. The layout is in docs/repository-format.md.

/** Chunk positions per index segment (the last segment of a disk may have fewer). */
export const SEGMENT_CHUNKS = 1024;
/** The smallest chunk size a lineage may use. */
export const MIN_CHUNK_SIZE: number = 256 * 1024;
/** The largest chunk size a lineage may use. */
export const MAX_CHUNK_SIZE: number = 4 * 1024 * 1024;
/** The largest disk a point may describe: 2^48 bytes (256 TiB). */
export const MAX_CAPACITY_BYTES: number = 2 ** 48;
/** The largest chunk count of a point: {@link MAX_CAPACITY_BYTES} in {@link MIN_CHUNK_SIZE} chunks (2^30). */
export const MAX_CHUNK_COUNT: number = MAX_CAPACITY_BYTES / MIN_CHUNK_SIZE;
/** The largest segment count of a manifest: {@link MAX_CHUNK_COUNT} / {@link SEGMENT_CHUNKS} (2^20). */
export const MAX_SEGMENT_COUNT: number = MAX_CHUNK_COUNT / SEGMENT_CHUNKS;

/** The four bytes every segment blob starts with: ASCII `DRKS`. */
export const SEGMENT_MAGIC: Uint8Array = new Uint8Array([0x44, 0x52, 0x4b, 0x53]);
/** The four bytes every manifest blob starts with: ASCII `DRKM`. */
export const MANIFEST_MAGIC: Uint8Array = new Uint8Array([0x44, 0x52, 0x4b, 0x4d]);
/** The segment and manifest blob format version this code writes and reads. */
export const INDEX_FORMAT_VERSION = 2;
/** Size of the segment blob header; the payload follows it, then a 32-byte SHA-256 trailer. */
export const SEGMENT_HEADER_BYTES = 12;
/** Size of the manifest blob header; the payload follows it, then a 32-byte SHA-256 trailer. */
export const MANIFEST_HEADER_BYTES = 32;
/** Key prefix of the segment blobs. */
export const SEGMENT_PREFIX = 'segments/';

const ZERO_ID = new Uint8Array(CHUNK_ID_BYTES);
/** The ids of an all-zero segment, shared by every one (never modified). */
const ZERO_SEGMENT = new Uint8Array(SEGMENT_CHUNKS * CHUNK_ID_BYTES);

/** Number of chunks of a disk: `ceil(capacityBytes / chunkSize)`. */
export function chunkCountOf(capacityBytes: number, chunkSize: number): number {
  return Math.ceil(capacityBytes / chunkSize);
}

/** Number of segments of a disk of `chunkCount` chunks: `ceil(chunkCount / SEGMENT_CHUNKS)`. */
export function segmentCountOf(chunkCount: number): number {
  return Math.ceil(chunkCount / SEGMENT_CHUNKS);
}

/**
 * Checks a disk layout against the format's limits.
 *
 * @returns the problem in words, or undefined when the layout is valid.
 */
export function layoutProblem(capacityBytes: number, chunkSize: number): string | undefined {
  if (!Number.isSafeInteger(chunkSize) || chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) {
    return `chunk size ${chunkSize} is not an integer from ${MIN_CHUNK_SIZE} to ${MAX_CHUNK_SIZE}`;
  }
  if (!Number.isSafeInteger(capacityBytes) || capacityBytes < 1 || capacityBytes > MAX_CAPACITY_BYTES) {
    return `capacity ${capacityBytes} is not an integer from 1 to ${MAX_CAPACITY_BYTES} (256 TiB)`;
  }
  return undefined;
}

/** Store key of a segment blob: `segments/<first two hex digits>/<64 hex>`. */
export function segmentKey(id: Uint8Array | string): string {
  const hex = typeof id === 'string' ? id : chunkIdFromHash(id);
  return `${SEGMENT_PREFIX}${hex.slice(0, 2)}/${hex}`;
}

/** The segment id (hex) in a segment key, or undefined when the key is not one. */
export function segmentIdFromKey(key: string): string | undefined {
  const match = /^segments\/([0-9a-f]{2})\/([0-9a-f]{64})$/.exec(key);
  return match !== null && match[2]!.startsWith(match[1]!) ? match[2] : undefined;
}

/** Payload of a segment or manifest body: zstd when it shrinks the bytes, else raw. */
function compress(plain: Uint8Array): { codec: 0 | 1; payload: Uint8Array } {
  const packed = zstdCompressSync(plain);
  return packed.byteLength < plain.byteLength
    ? { codec: 1, payload: new Uint8Array(packed.buffer, packed.byteOffset, packed.byteLength) }
    : { codec: 0, payload: plain };
}

/** The plain body of a payload, or the problem in words. */
function decompress(codec: number, payload: Uint8Array, plainLength: number): Uint8Array | string {
  if (codec === 0) {
    return payload.byteLength === plainLength
      ? payload
      : `raw payload is ${payload.byteLength} bytes, plain length is ${plainLength}`;
  }
  if (codec !== 1) return `unknown codec ${codec}`;
  if (payload.byteLength >= plainLength) {
    return `zstd payload of ${payload.byteLength} bytes is not smaller than its plain length ${plainLength}`;
  }
  let plain: Buffer;
  try {
    plain = zstdDecompressSync(payload, { maxOutputLength: plainLength });
  } catch (error) {
    return `its zstd payload does not decode (${(error as Error).message})`;
  }
  if (plain.byteLength !== plainLength) {
    return `its zstd payload decodes to ${plain.byteLength} bytes, plain length is ${plainLength}`;
  }
  return new Uint8Array(plain.buffer, plain.byteOffset, plain.byteLength);
}

function sha256(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(bytes).digest());
}

/** A segment's id: SHA-256 of its plain ids, or HMAC-SHA-256 under the id key of an encrypted repository. */
function segmentIdOf(ids: Uint8Array, idKey: Uint8Array | undefined): Uint8Array {
  return idKey === undefined ? sha256(ids) : new Uint8Array(createHmac('sha256', idKey).update(ids).digest());
}

/**
 * Encodes the ids of one segment (`32 × n` bytes, `n` from 1 to {@link SEGMENT_CHUNKS}) as a segment blob: the
 * 12-byte header (`DRKS`, version 2, codec, two zero bytes, plain length uint32 LE), the payload, and a SHA-256
 * of everything before it.
 *
 * @param idKey - The id key of an encrypted repository: the id is then HMAC-SHA-256 of the plain ids under it.
 * @returns the segment's id (SHA-256 of the plain ids) and blob, or the zero id and no blob when every id is
 * zero (an all-zero segment is never stored).
 * @throws {@link InvalidArgumentError} when the length is not a multiple of 32 in range.
 */
export function encodeSegment(
  ids: Uint8Array,
  idKey?: Uint8Array,
): { id: Uint8Array; blob: Uint8Array | undefined } {
  const n = ids.byteLength / CHUNK_ID_BYTES;
  if (!Number.isInteger(n) || n < 1 || n > SEGMENT_CHUNKS) {
    throw new InvalidArgumentError(`a segment holds 1 to ${SEGMENT_CHUNKS} ids, not ${ids.byteLength} bytes`);
  }
  let zero = true;
  for (let i = 0; i < ids.byteLength; i++) {
    if (ids[i] !== 0) {
      zero = false;
      break;
    }
  }
  if (zero) return { id: ZERO_ID, blob: undefined };
  const { codec, payload } = compress(ids);
  const bodyBytes = SEGMENT_HEADER_BYTES + payload.byteLength;
  const blob = new Uint8Array(bodyBytes + 32);
  blob.set(SEGMENT_MAGIC, 0);
  blob[4] = INDEX_FORMAT_VERSION;
  blob[5] = codec;
  new DataView(blob.buffer).setUint32(8, ids.byteLength, true);
  blob.set(payload, SEGMENT_HEADER_BYTES);
  blob.set(sha256(blob.subarray(0, bodyBytes)), bodyBytes);
  return { id: segmentIdOf(ids, idKey), blob };
}

/**
 * Decodes and checks a segment blob: the SHA-256 trailer, magic, version, codec, reserved bytes, plain length
 * (`32 × chunkCount`), the payload, and that the SHA-256 of the plain ids is `id`.
 *
 * @param chunkCount - Positions the manifest says this segment has.
 * @param what - Names the blob in error messages (its key and point).
 * @param idKey - The id key of an encrypted repository (see {@link encodeSegment}).
 * @throws {@link RepositoryCorruptError} naming the blob when any check fails.
 */
export function decodeSegment(
  blob: Uint8Array,
  id: Uint8Array,
  chunkCount: number,
  what: string,
  idKey?: Uint8Array,
): Uint8Array {
  const fail = (problem: string): never => {
    throw new RepositoryCorruptError(`${what} is damaged: ${problem}`);
  };
  if (blob.byteLength < SEGMENT_HEADER_BYTES + 32) {
    fail(`${blob.byteLength} bytes is shorter than its header and trailer`);
  }
  const bodyBytes = blob.byteLength - 32;
  if (Buffer.compare(sha256(blob.subarray(0, bodyBytes)), blob.subarray(bodyBytes)) !== 0) {
    fail('its SHA-256 trailer does not match its content');
  }
  for (let i = 0; i < 4; i++) if (blob[i] !== SEGMENT_MAGIC[i]) fail('it does not start with "DRKS"');
  if (blob[4] !== INDEX_FORMAT_VERSION) fail(`unknown segment format version ${blob[4]}`);
  if (blob[6] !== 0 || blob[7] !== 0) fail('reserved header bytes are not zero');
  const plainLength = new DataView(blob.buffer, blob.byteOffset, blob.byteLength).getUint32(8, true);
  if (plainLength !== chunkCount * CHUNK_ID_BYTES) {
    fail(`its plain length is ${plainLength} bytes; ${chunkCount} positions need ${chunkCount * 32}`);
  }
  const plain = decompress(blob[5]!, blob.subarray(SEGMENT_HEADER_BYTES, bodyBytes), plainLength);
  if (typeof plain === 'string') return fail(plain);
  if (Buffer.compare(segmentIdOf(plain, idKey), id) !== 0) {
    fail('its ids do not hash to the segment id in its key');
  }
  return plain;
}

/** What {@link decodeManifest} returns. */
export interface Manifest {
  readonly chunkSize: number;
  readonly capacityBytes: number;
  readonly chunkCount: number;
  readonly segmentCount: number;
  /** `32 × segmentCount` bytes: segment `s` at `32 s`, the zero id for an all-zero segment. */
  readonly segmentIds: Uint8Array;
}

/**
 * Encodes a point's manifest: the 32-byte header (`DRKM`, version 2, codec, two zero bytes, chunk size uint32,
 * capacity uint64, segment chunks uint32, segment count uint32, payload length uint32), the payload (the segment
 * ids, zstd or raw) and a SHA-256 of everything before it.
 *
 * @throws {@link InvalidArgumentError} when the layout is out of range or the ids do not fit it.
 */
export function encodeManifest(layout: {
  readonly chunkSize: number;
  readonly capacityBytes: number;
  readonly segmentIds: Uint8Array;
}): Uint8Array {
  const { chunkSize, capacityBytes, segmentIds } = layout;
  const problem = layoutProblem(capacityBytes, chunkSize);
  if (problem !== undefined) throw new InvalidArgumentError(`cannot write the manifest: ${problem}`);
  const segmentCount = segmentCountOf(chunkCountOf(capacityBytes, chunkSize));
  if (segmentIds.byteLength !== segmentCount * CHUNK_ID_BYTES) {
    throw new InvalidArgumentError(
      `a ${capacityBytes}-byte disk in ${chunkSize}-byte chunks has ${segmentCount} segments, not ${segmentIds.byteLength / 32}`,
    );
  }
  const { codec, payload } = compress(segmentIds);
  const bodyBytes = MANIFEST_HEADER_BYTES + payload.byteLength;
  const blob = new Uint8Array(bodyBytes + 32);
  const view = new DataView(blob.buffer);
  blob.set(MANIFEST_MAGIC, 0);
  blob[4] = INDEX_FORMAT_VERSION;
  blob[5] = codec;
  view.setUint32(8, chunkSize, true);
  view.setBigUint64(12, BigInt(capacityBytes), true);
  view.setUint32(20, SEGMENT_CHUNKS, true);
  view.setUint32(24, segmentCount, true);
  view.setUint32(28, payload.byteLength, true);
  blob.set(payload, MANIFEST_HEADER_BYTES);
  blob.set(sha256(blob.subarray(0, bodyBytes)), bodyBytes);
  return blob;
}

/**
 * Decodes and checks a manifest blob: magic, version, the exact length, the SHA-256 trailer, reserved bytes, the
 * layout's limits, the segment size, the count, and the payload.
 *
 * @throws {@link RepositoryCorruptError} naming the blob when any check fails.
 */
export function decodeManifest(blob: Uint8Array, what = 'manifest blob'): Manifest {
  const fail = (problem: string): never => {
    throw new RepositoryCorruptError(`${what} is damaged: ${problem}; the point cannot be restored from it`);
  };
  if (blob.byteLength < MANIFEST_HEADER_BYTES + 32)
    fail(`${blob.byteLength} bytes is shorter than a manifest`);
  for (let i = 0; i < 4; i++) if (blob[i] !== MANIFEST_MAGIC[i]) fail('it does not start with "DRKM"');
  if (blob[4] !== INDEX_FORMAT_VERSION) fail(`unknown manifest format version ${blob[4]}`);
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const payloadBytes = view.getUint32(28, true);
  const bodyBytes = MANIFEST_HEADER_BYTES + payloadBytes;
  if (blob.byteLength !== bodyBytes + 32) {
    fail(`it is ${blob.byteLength} bytes but its header declares ${bodyBytes + 32}`);
  }
  if (Buffer.compare(sha256(blob.subarray(0, bodyBytes)), blob.subarray(bodyBytes)) !== 0) {
    fail('its SHA-256 trailer does not match its content');
  }
  if (blob[6] !== 0 || blob[7] !== 0) fail('reserved header bytes are not zero');
  const chunkSize = view.getUint32(8, true);
  const capacity = view.getBigUint64(12, true);
  if (capacity > BigInt(MAX_CAPACITY_BYTES)) fail(`capacity ${capacity} is above ${MAX_CAPACITY_BYTES}`);
  const capacityBytes = Number(capacity);
  const problem = layoutProblem(capacityBytes, chunkSize);
  if (problem !== undefined) fail(problem);
  if (view.getUint32(20, true) !== SEGMENT_CHUNKS) {
    fail(`segment size ${view.getUint32(20, true)} is not ${SEGMENT_CHUNKS}`);
  }
  const chunkCount = chunkCountOf(capacityBytes, chunkSize);
  const segmentCount = segmentCountOf(chunkCount);
  if (view.getUint32(24, true) !== segmentCount) {
    fail(`it has ${view.getUint32(24, true)} segments but its layout has ${segmentCount}`);
  }
  const plain = decompress(blob[5]!, blob.subarray(MANIFEST_HEADER_BYTES, bodyBytes), segmentCount * 32);
  if (typeof plain === 'string') return fail(plain);
  return { chunkSize, capacityBytes, chunkCount, segmentCount, segmentIds: plain };
}

/** Segments {@link StoredPointIndex} keeps decoded (the last ones read). */
const CACHED_SEGMENTS = 4;
/** Segment reads {@link StoredPointIndex.segments} keeps in flight. */
const READ_AHEAD = 4;

/**
 * A point's index over its manifest (in memory: 32 bytes per segment) and its segments (read on demand, a few
 * cached): memory does not grow with the disk beyond the manifest.
 *
 * @internal
 */
export class StoredPointIndex implements PointIndex {
  readonly chunkCount: number;
  readonly segmentCount: number;
  readonly chunkSize: number;
  readonly capacityBytes: number;
  private readonly cache = new Map<number, Promise<IndexSegment>>();
  /** Segment blobs read so far (for tests and reports). */
  segmentsRead = 0;

  constructor(
    private readonly store: Store,
    private readonly manifest: Manifest,
    /** Names the point in messages. */
    private readonly pointId: string,
    /** The id key of an encrypted repository. */
    private readonly idKey: Uint8Array | undefined = undefined,
  ) {
    this.chunkCount = manifest.chunkCount;
    this.segmentCount = manifest.segmentCount;
    this.chunkSize = manifest.chunkSize;
    this.capacityBytes = manifest.capacityBytes;
  }

  private checkSegment(s: number): void {
    if (!Number.isInteger(s) || s < 0 || s >= this.segmentCount) {
      throw new InvalidArgumentError(`segment ${s} is outside 0..${this.segmentCount - 1}`);
    }
  }

  /** Positions of segment `s`. */
  segmentLength(s: number): number {
    return Math.min(SEGMENT_CHUNKS, this.chunkCount - s * SEGMENT_CHUNKS);
  }

  segmentId(s: number): Uint8Array {
    this.checkSegment(s);
    return this.manifest.segmentIds.subarray(s * CHUNK_ID_BYTES, (s + 1) * CHUNK_ID_BYTES);
  }

  isZeroSegment(s: number): boolean {
    this.checkSegment(s);
    return isZeroId(this.manifest.segmentIds, s * CHUNK_ID_BYTES);
  }

  private async load(s: number, signal: AbortSignal | undefined): Promise<IndexSegment> {
    const count = this.segmentLength(s);
    const base = { number: s, firstPosition: s * SEGMENT_CHUNKS, chunkCount: count };
    if (this.isZeroSegment(s)) {
      return { ...base, zero: true, ids: ZERO_SEGMENT.subarray(0, count * CHUNK_ID_BYTES) };
    }
    const id = this.segmentId(s);
    const key = segmentKey(id);
    let blob: Uint8Array;
    try {
      blob = await this.store.get(key, { signal });
    } catch (error) {
      if (NotFoundError.isInstance(error)) {
        throw new RepositoryCorruptError(
          `segment blob ${key} (segment ${s} of point ${this.pointId}) is missing: the point cannot be restored; run verify`,
          { cause: error },
        );
      }
      throw error;
    }
    this.segmentsRead++;
    const ids = decodeSegment(
      blob,
      id,
      count,
      `segment blob ${key} (segment ${s} of point ${this.pointId})`,
      this.idKey,
    );
    return { ...base, zero: false, ids };
  }

  segment(s: number, options: { signal?: AbortSignal } = {}): Promise<IndexSegment> {
    this.checkSegment(s);
    const cached = this.cache.get(s);
    if (cached !== undefined) {
      this.cache.delete(s);
      this.cache.set(s, cached);
      return cached;
    }
    const loading = this.load(s, options.signal);
    this.cache.set(s, loading);
    loading.catch(() => this.cache.delete(s));
    while (this.cache.size > CACHED_SEGMENTS) this.cache.delete(this.cache.keys().next().value!);
    return loading;
  }

  async idAt(i: number, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
    if (!Number.isInteger(i) || i < 0 || i >= this.chunkCount) {
      throw new InvalidArgumentError(`chunk position ${i} is outside 0..${this.chunkCount - 1}`);
    }
    const s = Math.floor(i / SEGMENT_CHUNKS);
    if (this.isZeroSegment(s)) return ZERO_ID;
    const k = i - s * SEGMENT_CHUNKS;
    return (await this.segment(s, options)).ids.subarray(k * CHUNK_ID_BYTES, (k + 1) * CHUNK_ID_BYTES);
  }

  async *segments(options: { signal?: AbortSignal } = {}): AsyncGenerator<IndexSegment> {
    const { signal } = options;
    // Reads of the next non-zero segments, at most READ_AHEAD at once; zero segments cost no read at all.
    const ahead = new Map<number, Promise<IndexSegment>>();
    const ids = this.manifest.segmentIds;
    const zeroAt = (s: number) => isZeroId(ids, s * CHUNK_ID_BYTES);
    let scan = 0;
    const fill = (from: number) => {
      scan = Math.max(scan, from);
      while (scan < this.segmentCount && ahead.size < READ_AHEAD) {
        if (!zeroAt(scan)) {
          const loading = this.load(scan, signal);
          loading.catch(() => undefined);
          ahead.set(scan, loading);
        }
        scan++;
      }
    };
    for (let s = 0; s < this.segmentCount; s++) {
      if (zeroAt(s)) {
        const count = this.segmentLength(s);
        yield {
          number: s,
          firstPosition: s * SEGMENT_CHUNKS,
          chunkCount: count,
          zero: true,
          ids: ZERO_SEGMENT.subarray(0, count * CHUNK_ID_BYTES),
        };
        continue;
      }
      fill(s);
      const loading = ahead.get(s) ?? this.load(s, signal);
      ahead.delete(s);
      const segment = await loading;
      fill(s + 1);
      signal?.throwIfAborted();
      yield segment;
    }
  }
}

/**
 * Reads a point's manifest blob, checks it against the digest and layout the metadata records, and returns the
 * index over it.
 *
 * @throws {@link RepositoryCorruptError} naming the blob when it is missing, damaged or disagrees with the point.
 * @internal
 */
export async function openPointIndex(
  store: Store,
  point: { id: string; indexDigest: string; chunkSize: number; capacityBytes: number },
  key: string,
  where: string,
  signal: AbortSignal | undefined,
  idKey?: Uint8Array,
): Promise<StoredPointIndex> {
  let blob: Uint8Array;
  try {
    blob = await store.get(key, { signal });
  } catch (error) {
    if (NotFoundError.isInstance(error)) {
      throw new RepositoryCorruptError(
        `point ${point.id} has no manifest blob ${key} in the ${where}: the point cannot be restored; run verify`,
        { cause: error },
      );
    }
    throw error;
  }
  const digest = createHash('sha256').update(blob).digest('hex');
  if (digest !== point.indexDigest) {
    throw new RepositoryCorruptError(
      `manifest blob ${key} hashes to ${digest}, point ${point.id} records ${point.indexDigest}: the manifest is damaged`,
    );
  }
  const manifest = decodeManifest(blob, `manifest blob ${key}`);
  if (manifest.chunkSize !== point.chunkSize || manifest.capacityBytes !== point.capacityBytes) {
    throw new RepositoryCorruptError(
      `manifest blob ${key} describes a ${manifest.capacityBytes}-byte disk in ${manifest.chunkSize}-byte chunks, point ${point.id} a ${point.capacityBytes}-byte disk in ${point.chunkSize}-byte chunks`,
    );
  }
  return new StoredPointIndex(store, manifest, point.id, idKey);
}
