import { createHash } from 'node:crypto';
import { copyFile, type FileHandle, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type CallOptions,
  type Change,
  type ChangedBlockSession,
  type ChangeSetValidity,
  type Checkpoint,
  type Disk,
  DrkitError,
  type FullReadReason,
  type Host,
  type Platform,
  type SnapshotRef,
} from '@drkit/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createKeystream, createSeededRandom, hashDiskImage, type SeededRandom } from './disk-image.js';

/**
 * The disk's current content, as {@link ChangedBlockReaderFixture.readAll} returns it: the bytes themselves, or
 * for a big disk their SHA-256 (hex) and length.
 */
export type ContractDiskContent = Uint8Array | { readonly sha256: string; readonly capacityBytes: number };

/** What the fixture can do to its source disk, declared up front so that tests skip honestly. */
export interface ChangedBlockReaderContractCapabilities {
  /** `write()` changes the disk: the incremental tests run. */
  readonly canWrite: boolean;
  /** `discard()` makes a range read as zeros (a trim, a punched hole, an unmap). */
  readonly canDiscard: boolean;
  /** `resize()` can make the disk larger. */
  readonly canGrow: boolean;
  /** `resize()` can make the disk smaller. */
  readonly canShrink: boolean;
  /** How much the resize tests grow or shrink the disk, in bytes. Default 1 MiB + 4 KiB. */
  readonly resizeStepBytes?: number;
}

/** One source disk prepared for the contract suite, and the means to change it behind the platform's back. */
export interface ChangedBlockReaderFixture {
  /** The platform under test. */
  readonly platform: Platform;
  /** The host that `platform.hosts()` lists with the disk. */
  readonly hostId: string;
  /** The disk to read; its content is the fixture's choice (it should not be all zeros). */
  readonly diskId: string;
  /** Writes `data` at `offset` (any offset and length inside the disk). */
  write(offset: number, data: Uint8Array, options?: CallOptions): Promise<void>;
  /** Makes `[offset, offset + length)` read as zeros. Only called when `canDiscard`. */
  discard(offset: number, length: number, options?: CallOptions): Promise<void>;
  /** Changes the disk's capacity. Only called when `canGrow` / `canShrink`. */
  resize(capacityBytes: number, options?: CallOptions): Promise<void>;
  /** The disk's current content, read directly from the source (not through the reader under test). */
  readAll(options?: CallOptions): Promise<ContractDiskContent>;
  /**
   * How many resources (file descriptors, connections, mapped devices) the platform holds right now; lets the
   * suite check that sessions release theirs. Optional.
   */
  countOpenResources?(): Promise<number> | number;
  /**
   * Takes the host's snapshot for one backup. Default: `platform.createSnapshot`, when the platform's
   * `capabilities.snapshots` is `host`.
   */
  takeSnapshot?(options: { host: Host; name: string } & CallOptions): Promise<SnapshotRef>;
  /** Releases a snapshot taken by `takeSnapshot`. Default: `platform.releaseSnapshot`. */
  releaseSnapshot?(snapshot: SnapshotRef, options?: CallOptions): Promise<void>;
  /** Removes everything the fixture created. Called after every test, also a failed one. */
  cleanup(): Promise<void>;
}

/** Options of {@link describeChangedBlockReaderContract}. */
export interface ChangedBlockReaderContractOptions {
  /** Names the suite (`local disk`, `vmware (vcsim)`). */
  readonly name: string;
  /** What the fixture can do; tests that need more are skipped. */
  readonly capabilities: ChangedBlockReaderContractCapabilities;
  /** Prepares a fresh source disk; called before every test. */
  readonly createFixture: (options: CallOptions) => Promise<ChangedBlockReaderFixture>;
  /** Per-test timeout in milliseconds. Default 60 000. */
  readonly timeoutMs?: number;
  /** Seed of the random writes, so a failure reproduces. Default `drkit-contract`. */
  readonly seed?: string | number;
}

/**
 * Declares the vitest suite every {@link @drkit/core!ChangedBlockReader} must pass: the platform lists the disk; a full read
 * is sorted, disjoint, within capacity and reproduces the disk byte for byte; after random writes, a discard
 * and a write at the last byte an incremental from the previous checkpoint is `exact` or `superset` and
 * reproduces the new content over the previous one; a resized disk reports its new capacity and content;
 * breaking out of `changes()` and closing (twice) releases everything; an aborted signal rejects with its
 * reason. Call it at the top level of a test file.
 *
 * @throws nothing itself; each test fails with an assertion that names the offending change.
 *
 * @example
 * ```ts
 * describeChangedBlockReaderContract({
 *   name: 'local disk',
 *   capabilities: { canWrite: true, canDiscard: true, canGrow: true, canShrink: true },
 *   createFixture: async () => createMyFixture(),
 * });
 * ```
 */
export function describeChangedBlockReaderContract(options: ChangedBlockReaderContractOptions): void {
  const { capabilities } = options;
  const timeout = options.timeoutMs ?? 60_000;
  const seed = options.seed ?? 'drkit-contract';
  const resizeStep = capabilities.resizeStepBytes ?? 1024 * 1024 + 4096;

  describe(`ChangedBlockReader contract: ${options.name}`, () => {
    let fixture: ChangedBlockReaderFixture | undefined;
    let backups: ContractBackups | undefined;

    beforeEach(async () => {
      fixture = await options.createFixture({});
      backups = await ContractBackups.create(fixture);
    }, timeout);

    afterEach(async () => {
      const current = fixture;
      const currentBackups = backups;
      fixture = undefined;
      backups = undefined;
      try {
        await currentBackups?.dispose();
      } finally {
        await current?.cleanup();
      }
    }, timeout);

    const context = (): { fixture: ChangedBlockReaderFixture; backups: ContractBackups } => {
      if (!fixture || !backups) throw new Error('the fixture was not created');
      return { fixture, backups };
    };

    it(
      'implements the v1 specification and lists the disk',
      async () => {
        const { fixture } = context();
        const { platform } = fixture;
        expect(platform.specificationVersion).toBe('v1');
        expect(typeof platform.id).toBe('string');
        expect(['host', 'none']).toContain(platform.capabilities.snapshots);
        expect(['exact', 'superset', 'none']).toContain(platform.capabilities.changeTracking);
        const status = await platform.verify();
        expect(status, JSON.stringify(status)).toMatchObject({ status: 'normal' });
        if (status.status === 'normal') expect(status.hostCount).toBeGreaterThanOrEqual(1);
        const { host, disk } = await findDisk(fixture);
        expect(host.platformId).toBe(platform.id);
        expect(disk.hostId).toBe(host.id);
        expect(Number.isSafeInteger(disk.capacityBytes) && disk.capacityBytes > 0).toBe(true);
      },
      timeout,
    );

    it(
      'a full read is sorted, disjoint, within capacity and reproduces the disk',
      async () => {
        const { fixture, backups } = context();
        const full = await backups.backup({});
        expect(full.validity).toEqual({ kind: 'full', reason: 'first-backup' });
        expect(full.capacityBytes).toBe(full.disk.capacityBytes);
        await expectSameContent(full.imagePath, await fixture.readAll());
        expect(full.checkpoint.diskId).toBe(fixture.diskId);
        expect(full.checkpoint.capacityBytes).toBe(full.capacityBytes);
        expect(typeof full.checkpoint.token).toBe('string');
        expect(Number.isNaN(Date.parse(full.checkpoint.createdAt))).toBe(false);
        expect(full.dataBytes + full.zeroBytes).toBeGreaterThan(0);
      },
      timeout,
    );

    it(
      'records the full-read reason it is given',
      async () => {
        const { backups } = context();
        const { session, end } = await backups.open({ fullReason: 'requested' });
        try {
          expect(session.validity).toMatchObject({ kind: 'full', reason: 'requested' });
        } finally {
          await end();
        }
      },
      timeout,
    );

    it.skipIf(!capabilities.canWrite)(
      'an incremental after writes, a discard and a last-byte write reproduces the new content',
      async () => {
        const { fixture, backups } = context();
        const random = createSeededRandom(`${seed}:incremental`);
        const bytes = createKeystream(`${seed}:incremental-bytes`);
        const { disk } = await findDisk(fixture);
        const capacity = disk.capacityBytes;
        // Data where the discard will land, so that the discard changes something the full read saw.
        const discarded = discardRange(capacity);
        if (capabilities.canDiscard)
          await fixture.write(discarded.offset, randomBytes(bytes, discarded.length));
        const full = await backups.backup({});
        await expectSameContent(full.imagePath, await fixture.readAll());

        for (const write of randomWrites(random, capacity, 12)) {
          await fixture.write(write.offset, randomBytes(bytes, write.length));
        }
        if (capabilities.canDiscard) await fixture.discard(discarded.offset, discarded.length);
        await fixture.write(capacity - 1, Uint8Array.of((await lastByte(full.imagePath, capacity)) ^ 0x5a));

        const incremental = await backups.backup({ base: full.checkpoint });
        expect(['exact', 'superset']).toContain(incremental.validity.kind);
        expect(incremental.capacityBytes).toBe(capacity);
        await expectSameContent(incremental.imagePath, await fixture.readAll());

        // Nothing changed since: still a valid incremental, still the same content.
        const quiet = await backups.backup({ base: incremental.checkpoint });
        expect(['exact', 'superset']).toContain(quiet.validity.kind);
        await expectSameContent(quiet.imagePath, await fixture.readAll());
      },
      timeout,
    );

    it.skipIf(!capabilities.canGrow)(
      'a grown disk reports its new capacity and content',
      async () => {
        const { fixture, backups } = context();
        const full = await backups.backup({});
        const capacity = full.capacityBytes + resizeStep;
        await fixture.resize(capacity);
        if (capabilities.canWrite) {
          const bytes = createKeystream(`${seed}:grow`);
          await fixture.write(full.capacityBytes + 512, randomBytes(bytes, 4096));
          await fixture.write(capacity - 1, Uint8Array.of(0xa5));
        }
        const next = await backups.backup({ base: full.checkpoint });
        expect(next.disk.capacityBytes).toBe(capacity);
        expect(next.capacityBytes).toBe(capacity);
        expect(next.checkpoint.capacityBytes).toBe(capacity);
        await expectSameContent(next.imagePath, await fixture.readAll());
      },
      timeout,
    );

    it.skipIf(!capabilities.canShrink)(
      'a shrunk disk reports its new capacity and content',
      async () => {
        const { fixture, backups } = context();
        const full = await backups.backup({});
        const capacity = full.capacityBytes - resizeStep;
        expect(capacity, 'the fixture disk is too small to shrink by resizeStepBytes').toBeGreaterThan(0);
        await fixture.resize(capacity);
        if (capabilities.canWrite) await fixture.write(capacity - 1, Uint8Array.of(0x3c));
        const next = await backups.backup({ base: full.checkpoint });
        expect(next.disk.capacityBytes).toBe(capacity);
        expect(next.capacityBytes).toBe(capacity);
        await expectSameContent(next.imagePath, await fixture.readAll());
      },
      timeout,
    );

    it(
      'breaking out of changes() early and closing (twice) releases everything',
      async () => {
        const { fixture, backups } = context();
        const before = await fixture.countOpenResources?.();
        const { session, end } = await backups.open({});
        let seen = 0;
        try {
          for await (const change of session.changes()) {
            expect(['data', 'zero']).toContain(change.kind);
            seen++;
            break;
          }
          expect(seen).toBeLessThanOrEqual(1);
          await session.close();
          await session.close();
          await session[Symbol.asyncDispose]();
        } finally {
          await end();
        }
        if (before !== undefined) expect(await fixture.countOpenResources?.()).toBe(before);
        // Nothing stays locked: the disk can be read again in full.
        const again = await backups.backup({});
        await expectSameContent(again.imagePath, await fixture.readAll());
        if (before !== undefined) expect(await fixture.countOpenResources?.()).toBe(before);
      },
      timeout,
    );

    it(
      'an aborted signal rejects with its reason, never wrapped',
      async () => {
        const { fixture, backups } = context();
        const { platform } = fixture;
        const before = await fixture.countOpenResources?.();
        const reason = new Error('contract: aborted on purpose');
        const aborted = AbortSignal.abort(reason);
        await expect(platform.verify({ signal: aborted })).rejects.toBe(reason);
        await expect(drain(platform.hosts({ signal: aborted }))).rejects.toBe(reason);
        await expect(backups.open({ signal: aborted })).rejects.toBe(reason);

        const early = await backups.open({});
        try {
          await expect(drain(early.session.changes({ signal: aborted }))).rejects.toBe(reason);
        } finally {
          await early.end();
        }

        const controller = new AbortController();
        const midway = { reason: 'contract: a non-Error reason is passed through as is' };
        const { session, end } = await backups.open({});
        let seen = 0;
        try {
          const iteration = (async () => {
            for await (const _change of session.changes({ signal: controller.signal })) {
              seen++;
              controller.abort(midway);
            }
          })();
          const outcome = await iteration.then(
            () => 'completed',
            (error: unknown) => error,
          );
          // A change set of one change may end before the abort is noticed; any longer one must reject.
          if (outcome === 'completed') expect(seen, 'changes() went on after the abort').toBe(1);
          else expect(outcome).toBe(midway);
        } finally {
          await end();
        }
        if (before !== undefined) expect(await fixture.countOpenResources?.()).toBe(before);
      },
      timeout,
    );

    it(
      'readRange, when offered, returns the disk bytes',
      async () => {
        const { backups } = context();
        const full = await backups.backup({});
        const { session, end } = await backups.open({ base: full.checkpoint });
        try {
          if (!session.readRange) return;
          const random = createSeededRandom(`${seed}:read-range`);
          const image = await open(full.imagePath, 'r');
          try {
            const ranges = [
              { offset: 0, length: Math.min(4096, full.capacityBytes) },
              { offset: full.capacityBytes - 1, length: 1 },
              ...randomWrites(random, full.capacityBytes, 6),
            ];
            for (const range of ranges) {
              const actual = await session.readRange(range);
              const expected = Buffer.alloc(range.length);
              await image.read(expected, 0, range.length, range.offset);
              expect(actual.length).toBe(range.length);
              expect(Buffer.from(actual.buffer, actual.byteOffset, actual.length).equals(expected)).toBe(
                true,
              );
            }
            await expect(session.readRange({ offset: full.capacityBytes, length: 1 })).rejects.toSatisfy(
              DrkitError.isInstance,
            );
          } finally {
            await image.close();
          }
        } finally {
          await end();
        }
      },
      timeout,
    );
  });
}

/** The host and disk the fixture names, as the platform lists them now. */
async function findDisk(
  fixture: ChangedBlockReaderFixture,
  options: CallOptions = {},
): Promise<{ host: Host; disk: Disk }> {
  for await (const host of fixture.platform.hosts(options)) {
    if (host.id !== fixture.hostId) continue;
    const disk = host.disks.find((candidate) => candidate.id === fixture.diskId);
    if (disk) return { host, disk };
    throw new Error(`host ${host.id} does not list disk ${fixture.diskId}`);
  }
  throw new Error(`platform ${fixture.platform.id} does not list host ${fixture.hostId}`);
}

/** The result of one backup the suite made: the session's facts and the disk rebuilt from its changes. */
interface ContractBackup {
  readonly disk: Disk;
  readonly validity: ChangeSetValidity;
  readonly capacityBytes: number;
  readonly checkpoint: Checkpoint;
  /** A file holding the disk as rebuilt from the changes over the previous backup (or zeros for a full read). */
  readonly imagePath: string;
  readonly dataBytes: number;
  readonly zeroBytes: number;
}

/** Runs backups the way the engine does and rebuilds every point in a temporary folder. */
class ContractBackups {
  readonly #fixture: ChangedBlockReaderFixture;
  readonly #directory: string;
  readonly #retained: SnapshotRef[] = [];
  #count = 0;
  #latest: ContractBackup | undefined;

  private constructor(fixture: ChangedBlockReaderFixture, directory: string) {
    this.#fixture = fixture;
    this.#directory = directory;
  }

  static async create(fixture: ChangedBlockReaderFixture): Promise<ContractBackups> {
    return new ContractBackups(fixture, await mkdtemp(join(tmpdir(), 'drkit-contract-')));
  }

  /**
   * Takes a snapshot when the platform has them and opens a session on it, outside of a backup. `end()` closes
   * the session and releases the snapshot.
   */
  async open(options: { base?: Checkpoint; fullReason?: FullReadReason; signal?: AbortSignal }): Promise<{
    session: ChangedBlockSession;
    disk: Disk;
    end: () => Promise<void>;
  }> {
    const { host, disk } = await findDisk(this.#fixture);
    const snapshot = await this.#takeSnapshot(host);
    const release = async () => {
      if (snapshot) await this.#release(snapshot);
    };
    let session: ChangedBlockSession;
    try {
      session = await this.#fixture.platform.changedBlockReader.open({
        disk,
        ...(snapshot ? { snapshot } : {}),
        ...(options.base ? { base: options.base } : {}),
        ...(options.fullReason ? { fullReason: options.fullReason } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } catch (error) {
      await release();
      throw error;
    }
    const end = async () => {
      try {
        await session.close();
      } finally {
        await release();
      }
    };
    return { session, disk, end };
  }

  /** Snapshot (when the platform has them), open, read every change, rebuild, checkpoint, close. */
  async backup(options: { base?: Checkpoint; fullReason?: FullReadReason }): Promise<ContractBackup> {
    const fixture = this.#fixture;
    const { platform } = fixture;
    const { host, disk } = await findDisk(fixture);
    const snapshot = await this.#takeSnapshot(host);
    const index = this.#count++;
    const imagePath = join(this.#directory, `point-${index}.img`);
    let session: ChangedBlockSession | undefined;
    try {
      session = await platform.changedBlockReader.open({
        disk,
        ...(snapshot ? { snapshot } : {}),
        ...(options.base ? { base: options.base } : {}),
        ...(options.fullReason ? { fullReason: options.fullReason } : {}),
      });
      const capacity = session.capacityBytes;
      expect(Number.isSafeInteger(capacity) && capacity >= 0, `capacity ${capacity}`).toBe(true);
      const validity = session.validity;
      const overZeros = validity.kind === 'full';
      if (!overZeros && options.base && !this.#latest) {
        throw new Error('an incremental needs a previous backup of this suite to rebuild on');
      }
      if (overZeros || !this.#latest) {
        await (await open(imagePath, 'w')).close();
      } else {
        await copyFile(this.#latest.imagePath, imagePath);
      }
      const image = await open(imagePath, 'r+');
      let dataBytes = 0;
      let zeroBytes = 0;
      try {
        await image.truncate(capacity);
        const checker = new ChangeSetChecker(capacity);
        for await (const change of session.changes()) {
          checker.accept(change);
          if (change.kind === 'data') {
            dataBytes += change.data.length;
            await writeFully(image, change.data, change.offset);
          } else {
            zeroBytes += change.length;
            // Over zeros a zero change is already there.
            if (!overZeros) await writeZeros(image, change.offset, change.length);
          }
        }
        checker.finish();
      } finally {
        await image.close();
      }
      const checkpoint = session.checkpoint();
      expect(checkpoint.diskId).toBe(disk.id);
      expect(checkpoint.capacityBytes).toBe(capacity);
      const backup: ContractBackup = {
        disk,
        validity,
        capacityBytes: capacity,
        checkpoint,
        imagePath,
        dataBytes,
        zeroBytes,
      };
      if (this.#latest) await rm(this.#latest.imagePath, { force: true });
      this.#latest = backup;
      return backup;
    } finally {
      await session?.close();
      if (snapshot) await this.#afterBackup(snapshot);
    }
  }

  async #takeSnapshot(host: Host): Promise<SnapshotRef | undefined> {
    const fixture = this.#fixture;
    const name = `drkit-contract-${Date.now()}-${this.#count}`;
    if (fixture.takeSnapshot) return fixture.takeSnapshot({ host, name });
    if (fixture.platform.capabilities.snapshots !== 'host') return undefined;
    if (!fixture.platform.createSnapshot) {
      throw new Error("the platform declares snapshots: 'host' but has no createSnapshot()");
    }
    return fixture.platform.createSnapshot({ host, name });
  }

  /** Keeps the newest snapshot when the platform diffs against it; releases the older ones. */
  async #afterBackup(snapshot: SnapshotRef): Promise<void> {
    this.#retained.push(snapshot);
    const keep = this.#fixture.platform.capabilities.retainsSnapshotAsBase ? 1 : 0;
    while (this.#retained.length > keep) await this.#release(this.#retained.shift()!);
  }

  async #release(snapshot: SnapshotRef): Promise<void> {
    const fixture = this.#fixture;
    if (fixture.releaseSnapshot) await fixture.releaseSnapshot(snapshot);
    else await fixture.platform.releaseSnapshot?.({ hostId: snapshot.hostId, name: snapshot.name });
  }

  async dispose(): Promise<void> {
    try {
      while (this.#retained.length > 0) await this.#release(this.#retained.shift()!);
    } finally {
      await rm(this.#directory, { recursive: true, force: true });
    }
  }
}

/**
 * Checks a change set as it streams: every change well formed, sorted, disjoint, inside the capacity, and data
 * buffers not reused (a yielded buffer belongs to the consumer). Throws an `Error` naming the offending change.
 *
 * @internal exported for the suite's own tests.
 */
export class ChangeSetChecker {
  readonly #capacity: number;
  #index = 0;
  #end = 0;
  #previousData: { index: number; data: Uint8Array; sha256: string } | undefined;

  constructor(capacityBytes: number) {
    this.#capacity = capacityBytes;
  }

  accept(change: Change): void {
    const index = this.#index++;
    const where = `change #${index} (${describeChange(change)})`;
    if (change.kind !== 'data' && change.kind !== 'zero') throw new Error(`${where}: unknown kind`);
    const length = change.kind === 'data' ? change.data?.length : change.length;
    if (change.kind === 'data' && !(change.data instanceof Uint8Array)) {
      throw new Error(`${where}: data is not a Uint8Array`);
    }
    if (!Number.isSafeInteger(change.offset) || change.offset < 0)
      throw new Error(`${where}: malformed offset`);
    if (!Number.isSafeInteger(length) || length <= 0) throw new Error(`${where}: length must be positive`);
    if (change.offset < this.#end) {
      throw new Error(
        `${where}: starts before the end of the previous change (${this.#end}): unsorted or overlapping`,
      );
    }
    if (change.offset + length > this.#capacity) {
      throw new Error(`${where}: ends at ${change.offset + length}, past the capacity ${this.#capacity}`);
    }
    this.#end = change.offset + length;
    this.#checkPreviousBufferUntouched();
    if (change.kind === 'data') {
      this.#previousData = { index, data: change.data, sha256: sha256(change.data) };
    }
  }

  /** Call after the last change. */
  finish(): void {
    this.#checkPreviousBufferUntouched();
  }

  #checkPreviousBufferUntouched(): void {
    const previous = this.#previousData;
    if (previous && sha256(previous.data) !== previous.sha256) {
      throw new Error(
        `change #${previous.index}: its data buffer changed after it was yielded; a yielded buffer belongs to ` +
          'the consumer and must not be reused',
      );
    }
  }
}

function describeChange(change: Change): string {
  if (change.kind === 'data') return `data at ${change.offset}, ${change.data?.length} bytes`;
  if (change.kind === 'zero') return `zero at ${change.offset}, ${change.length} bytes`;
  return JSON.stringify(change);
}

/**
 * Asserts that the file at `imagePath` holds exactly `expected`, naming the first differing byte.
 *
 * @internal exported for the suite's own tests.
 */
export async function expectSameContent(imagePath: string, expected: ContractDiskContent): Promise<void> {
  if (expected instanceof Uint8Array) {
    const image = await open(imagePath, 'r');
    try {
      const { size } = await image.stat();
      expect(size, 'rebuilt disk size').toBe(expected.length);
      const step = 4 * 1024 * 1024;
      const buffer = Buffer.alloc(step);
      for (let offset = 0; offset < size; offset += step) {
        const length = Math.min(step, size - offset);
        await image.read(buffer, 0, length, offset);
        const actual = buffer.subarray(0, length);
        const wanted = Buffer.from(expected.buffer, expected.byteOffset + offset, length);
        if (!actual.equals(wanted)) {
          let at = 0;
          while (actual[at] === wanted[at]) at++;
          throw new Error(
            `the disk rebuilt from the changes differs from the source at byte ${offset + at}: ` +
              `rebuilt ${actual[at]}, source ${wanted[at]}`,
          );
        }
      }
    } finally {
      await image.close();
    }
    return;
  }
  const image = await open(imagePath, 'r');
  const { size } = await image.stat().finally(() => image.close());
  expect(size, 'rebuilt disk size').toBe(expected.capacityBytes);
  expect(await hashDiskImage(imagePath), 'SHA-256 of the disk rebuilt from the changes').toBe(
    expected.sha256,
  );
}

const ZEROS = Buffer.alloc(1024 * 1024);

async function writeZeros(handle: FileHandle, offset: number, length: number): Promise<void> {
  for (let done = 0; done < length; ) {
    const take = Math.min(ZEROS.length, length - done);
    await writeFully(handle, ZEROS.subarray(0, take), offset + done);
    done += take;
  }
}

async function writeFully(handle: FileHandle, data: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < data.length; ) {
    const { bytesWritten } = await handle.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

async function lastByte(imagePath: string, capacity: number): Promise<number> {
  const image = await open(imagePath, 'r');
  try {
    const buffer = Buffer.alloc(1);
    await image.read(buffer, 0, 1, capacity - 1);
    return buffer[0]!;
  } finally {
    await image.close();
  }
}

/** A 4 KiB-aligned range of up to 64 KiB near the middle of the disk. */
function discardRange(capacity: number): { offset: number; length: number } {
  const length = Math.min(64 * 1024, Math.max(1, Math.floor(capacity / 4 / 4096) * 4096));
  const offset = Math.min(capacity - length, Math.floor(capacity / 2 / 4096) * 4096);
  return { offset, length };
}

/** `count` ranges inside the disk: half 4 KiB-aligned, half at any byte, 1 byte to 64 KiB. */
function randomWrites(
  random: SeededRandom,
  capacity: number,
  count: number,
): { offset: number; length: number }[] {
  return Array.from({ length: count }, (_, index) => {
    const aligned = index % 2 === 0;
    const length = Math.min(
      capacity,
      aligned ? 4096 * (1 + (random.uint32() % 16)) : 1 + (random.uint32() % 65536),
    );
    let offset = Math.floor(random.float() * (capacity - length + 1));
    if (aligned) offset -= offset % 4096;
    return { offset, length };
  });
}

function randomBytes(keystream: (target: Uint8Array) => void, length: number): Uint8Array {
  const data = new Uint8Array(length);
  keystream(data);
  return data;
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

async function drain(iterable: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of iterable);
}
