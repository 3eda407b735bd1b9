import { createHash, createHmac, randomBytes } from 'node:crypto';
import type { EmulatorClock } from './emulator-clock.js';

/** EBS direct API block size: 512 KiB. */
export const EBS_BLOCK_SIZE = 524_288;
/** Bytes of one GiB, the unit of volume sizes. */
export const GIB = 1024 ** 3;
/** Block tokens live seven days, page tokens 60 minutes (EBS direct API FAQ). */
export const BLOCK_TOKEN_TTL_MS = 7 * 24 * 3600 * 1000;
export const PAGE_TOKEN_TTL_MS = 60 * 60 * 1000;

/**
 * What a block an encrypted direct-API snapshot never received reads as on a volume created from it: a stand-in
 * for the decryption of zeros (deterministic, not zeros).
 */
export const UNWRITTEN_ENCRYPTED_BLOCK: Buffer = (() => {
  const block = Buffer.alloc(EBS_BLOCK_SIZE);
  let seed = createHash('sha256').update('drkit emulator: decrypt(zeros)').digest();
  for (let at = 0; at < block.length; at += seed.length) {
    seed.copy(block, at);
    seed = createHash('sha256').update(seed).digest();
  }
  return block;
})();

/** One written 512 KiB block. Immutable once made: volumes and snapshots share it. */
export interface BlockRecord {
  /** A write generation, unique across the emulator: two snapshots differ at a block iff their records differ. */
  readonly generation: number;
  readonly data: Buffer;
}

export interface EmulatorTag {
  readonly Key: string;
  readonly Value: string;
}

export interface VolumeState {
  readonly id: string;
  sizeGiB: number;
  readonly volumeType: string;
  readonly iops: number | undefined;
  readonly encrypted: boolean;
  readonly kmsKeyId: string | undefined;
  readonly availabilityZone: string;
  readonly createTime: Date;
  readonly tags: EmulatorTag[];
  /** Written blocks only, by block index: a sparse volume costs what it holds. */
  readonly blocks: Map<number, BlockRecord>;
  attachment:
    | { instanceId: string; device: string; attachTime: Date; deleteOnTermination: boolean }
    | undefined;
  /** The snapshot it was created from (EC2 CreateVolume). */
  readonly snapshotId?: string;
  /** CreateVolume's idempotency token. */
  readonly clientToken?: string;
  /** DescribeVolumes answers that saw it `creating`; undefined once `available`. */
  creatingPolls?: number | undefined;
}

export interface InstanceState {
  readonly id: string;
  readonly instanceType: string;
  state: 'pending' | 'running' | 'stopping' | 'stopped' | 'shutting-down' | 'terminated';
  readonly platform: 'windows' | undefined;
  readonly platformDetails: string;
  readonly rootDeviceName: string;
  readonly rootDeviceType: 'ebs' | 'instance-store';
  readonly launchTime: Date;
  readonly availabilityZone: string;
  readonly imageId: string;
  readonly tags: EmulatorTag[];
  /** EBS block device mappings, in attach order. */
  readonly mappings: { deviceName: string; volumeId: string }[];
}

export type SnapshotStatus = 'pending' | 'completed' | 'error';

export interface SnapshotState {
  readonly id: string;
  /** The volume it was taken of; `vol-ffffffff` for one written through StartSnapshot, as AWS reports it. */
  readonly volumeId: string;
  /** Snapshots of one lineage can be diffed with ListChangedBlocks. */
  readonly lineage: string;
  readonly sizeGiB: number;
  readonly blocks: Map<number, BlockRecord>;
  status: SnapshotStatus;
  /** DescribeSnapshots answers that saw it pending. */
  polls: number;
  /** Whether it may complete: an EC2 snapshot from the start, a direct one once CompleteSnapshot was called. */
  sealed: boolean;
  readonly startTime: Date;
  readonly description: string;
  readonly tags: EmulatorTag[];
  readonly encrypted: boolean;
  readonly kmsKeyId: string | undefined;
  readonly source: 'ec2' | 'direct';
  readonly parentSnapshotId: string | undefined;
  readonly clientToken: string | undefined;
  /** The parameters a StartSnapshot ClientToken was first used with, to detect a conflicting reuse. */
  readonly startFingerprint: string | undefined;
  /**
   * An encrypted snapshot written through the direct APIs (no parent, or a parent that is one too): a block it
   * never received reads on a volume created from it as the decryption of zeros, not as zeros (spec sheet,
   * "Encrypted-snapshot caveat": coldsnap#395).
   */
  readonly unwrittenReadsGarbage: boolean;
  /** Blocks written by PutSnapshotBlock (direct snapshots). */
  readonly putBlocks: Set<number>;
  /** Block indexes in ascending order, computed once the snapshot can be read. */
  sortedIndexes: number[] | undefined;
}

/** Decoded page token. */
export interface PageToken {
  readonly operation: 'ListSnapshotBlocks' | 'ListChangedBlocks';
  readonly snapshots: string;
  readonly next: number;
  readonly expiresAt: number;
  /** Pages served so far in this listing (for the short / empty page shapes). */
  readonly page: number;
}

/** Binary search: the first position in `sorted` whose value is >= `value`. */
export function lowerBound(sorted: readonly number[], value: number): number {
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (sorted[mid]! < value) low = mid + 1;
    else high = mid;
  }
  return low;
}

/** The emulated account's resources, with nothing about HTTP. */
export class EmulatorState {
  readonly clock: EmulatorClock;
  readonly volumes = new Map<string, VolumeState>();
  readonly instances = new Map<string, InstanceState>();
  readonly snapshots = new Map<string, SnapshotState>();
  readonly #tokenKey = randomBytes(32);
  #generation = 0;
  #sequence = 0;

  constructor(clock: EmulatorClock) {
    this.clock = clock;
  }

  /** A new id with a 17-digit hex suffix, deterministic in creation order. */
  nextId(prefix: 'i' | 'vol' | 'snap' | 'ami' | 'r'): string {
    this.#sequence++;
    const hash = createHash('sha256').update(`${prefix}:${this.#sequence}`).digest('hex').slice(0, 9);
    return `${prefix}-${this.#sequence.toString(16).padStart(8, '0')}${hash}`;
  }

  nextGeneration(): number {
    return ++this.#generation;
  }

  now(): Date {
    return new Date(this.clock.now());
  }

  /** Writes bytes at any offset: read-modify-write of each 512 KiB block touched, each a new generation. */
  writeVolume(volume: VolumeState, offset: number, data: Uint8Array): void {
    const capacity = volume.sizeGiB * GIB;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + data.length > capacity) {
      throw new RangeError(
        `write of ${data.length} bytes at ${offset} is outside volume ${volume.id} (${capacity} bytes)`,
      );
    }
    let done = 0;
    while (done < data.length) {
      const at = offset + done;
      const index = Math.floor(at / EBS_BLOCK_SIZE);
      const within = at - index * EBS_BLOCK_SIZE;
      const take = Math.min(EBS_BLOCK_SIZE - within, data.length - done);
      const block = Buffer.alloc(EBS_BLOCK_SIZE);
      volume.blocks.get(index)?.data.copy(block);
      block.set(data.subarray(done, done + take), within);
      volume.blocks.set(index, { generation: this.nextGeneration(), data: block });
      done += take;
    }
  }

  /**
   * Makes a range read as zeros. Whole blocks in it are forgotten (unwritten again, as a TRIM might leave them:
   * AWS does not document what a discard does to the next snapshot); partial blocks are written with zeros.
   */
  discardVolume(volume: VolumeState, offset: number, length: number): void {
    const end = offset + length;
    const capacity = volume.sizeGiB * GIB;
    if (!Number.isSafeInteger(offset) || offset < 0 || length <= 0 || end > capacity) {
      throw new RangeError(`discard of ${length} bytes at ${offset} is outside volume ${volume.id}`);
    }
    for (let index = Math.floor(offset / EBS_BLOCK_SIZE); index * EBS_BLOCK_SIZE < end; index++) {
      const start = index * EBS_BLOCK_SIZE;
      const from = Math.max(start, offset);
      const to = Math.min(start + EBS_BLOCK_SIZE, end);
      if (from === start && to === start + EBS_BLOCK_SIZE) volume.blocks.delete(index);
      else if (volume.blocks.has(index)) this.writeVolume(volume, from, Buffer.alloc(to - from));
    }
  }

  /** Reads bytes of a block map (unwritten blocks are zeros). */
  readBlocks(blocks: ReadonlyMap<number, BlockRecord>, offset: number, length: number): Buffer {
    const out = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const at = offset + done;
      const index = Math.floor(at / EBS_BLOCK_SIZE);
      const within = at - index * EBS_BLOCK_SIZE;
      const take = Math.min(EBS_BLOCK_SIZE - within, length - done);
      blocks.get(index)?.data.copy(out, done, within, within + take);
      done += take;
    }
    return out;
  }

  /**
   * The blocks a volume created from the snapshot holds: the snapshot's, and for one whose unwritten blocks read
   * as garbage ({@link SnapshotState.unwrittenReadsGarbage}) one shared non-zero block at every other index.
   */
  volumeBlocksOf(snapshot: SnapshotState): Map<number, BlockRecord> {
    const blocks = new Map(snapshot.blocks);
    if (!snapshot.unwrittenReadsGarbage) return blocks;
    const count = (snapshot.sizeGiB * GIB) / EBS_BLOCK_SIZE;
    const garbage = { generation: this.nextGeneration(), data: UNWRITTEN_ENCRYPTED_BLOCK };
    for (let index = 0; index < count; index++) if (!blocks.has(index)) blocks.set(index, garbage);
    return blocks;
  }

  sortedIndexes(snapshot: SnapshotState): number[] {
    if (snapshot.sortedIndexes === undefined || snapshot.status !== 'completed') {
      const sorted = [...snapshot.blocks.keys()].sort((a, b) => a - b);
      if (snapshot.status !== 'completed') return sorted;
      snapshot.sortedIndexes = sorted;
    }
    return snapshot.sortedIndexes;
  }

  #mac(text: string): Buffer {
    return createHmac('sha256', this.#tokenKey).update(text).digest().subarray(0, 12);
  }

  /** A block token: bound to the snapshot and index, valid seven days from now. Stateless (an HMAC). */
  blockToken(snapshotId: string, index: number): string {
    const expiresAt = this.clock.now() + BLOCK_TOKEN_TTL_MS;
    const head = Buffer.alloc(16);
    head.writeDoubleBE(index, 0);
    head.writeDoubleBE(expiresAt, 8);
    return Buffer.concat([head, this.#mac(`block:${snapshotId}:${index}:${expiresAt}`)]).toString('base64');
  }

  /** Checks a block token: `ok`, `expired`, or `invalid` (garbled, or for another snapshot or block). */
  checkBlockToken(token: string, snapshotId: string, index: number): 'ok' | 'expired' | 'invalid' {
    const raw = Buffer.from(token, 'base64');
    if (raw.length !== 28 || raw.toString('base64') !== token) return 'invalid';
    const tokenIndex = raw.readDoubleBE(0);
    const expiresAt = raw.readDoubleBE(8);
    const expected = this.#mac(`block:${snapshotId}:${tokenIndex}:${expiresAt}`);
    if (!expected.equals(raw.subarray(16)) || tokenIndex !== index) return 'invalid';
    return this.clock.now() >= expiresAt ? 'expired' : 'ok';
  }

  /** A page token (NextToken), valid 60 minutes from now. */
  pageToken(token: Omit<PageToken, 'expiresAt'>): string {
    const body = Buffer.from(
      JSON.stringify({
        o: token.operation,
        s: token.snapshots,
        n: token.next,
        p: token.page,
        e: this.clock.now() + PAGE_TOKEN_TTL_MS,
      }),
    );
    return Buffer.concat([this.#mac(`page:${body.toString('latin1')}`), body]).toString('base64');
  }

  /** Decodes a page token issued for this listing; `expired` or `invalid` otherwise. */
  readPageToken(
    text: string,
    operation: PageToken['operation'],
    snapshots: string,
  ): PageToken | 'expired' | 'invalid' {
    const raw = Buffer.from(text, 'base64');
    if (raw.length < 13 || raw.toString('base64') !== text) return 'invalid';
    const body = raw.subarray(12);
    if (!this.#mac(`page:${body.toString('latin1')}`).equals(raw.subarray(0, 12))) return 'invalid';
    const value = JSON.parse(body.toString()) as { o: string; s: string; n: number; p: number; e: number };
    if (value.o !== operation || value.s !== snapshots) return 'invalid';
    if (this.clock.now() >= value.e) return 'expired';
    return { operation, snapshots, next: value.n, page: value.p, expiresAt: value.e };
  }
}
