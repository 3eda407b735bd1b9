import { createHash } from 'node:crypto';
import { copyFile, type FileHandle, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type AbandonReason,
  alignExtents,
  type CallOptions,
  type Change,
  type ChangedBlockReader,
  type ChangedBlockSession,
  type ChangeSetValidity,
  type Checkpoint,
  CORE_FULL_READ_REASONS,
  type Disk,
  type DiskSnapshot,
  DrkitError,
  type Extent,
  type ExtentReadSession,
  type FullReadReason,
  type Host,
  type HostSnapshot,
  type Logger,
  type Platform,
  type QuiesceMode,
  type ReadRequest,
} from '@drkit/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  checkReadResult,
  type ExtentReadStats,
  emptyExtentReadStats,
  readExtentsInOrder,
} from './contract-extent-reads.js';
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
  /**
   * How coarse an `exact` change set may be, in bytes: after small writes, the data an `exact` incremental
   * returns must lie within the written ranges rounded out to multiples of it (a source that tracks 64 KiB
   * blocks, or RBD objects, declares that). Default: the larger of the reader's `blockSize` and 64 KiB.
   * `superset` and `full` change sets are not held to it.
   */
  readonly exactGranularityBytes?: number;
}

/** One source disk prepared for the contract suite, and the means to change it behind the platform's back. */
export interface ChangedBlockReaderFixture {
  /** The platform under test: a v2 {@link @drkit/core!Platform}. */
  readonly platform: Platform;
  /** The host that `platform.hosts()` lists with the disk. */
  readonly hostId: string;
  /**
   * The disk to read. Its content is the fixture's choice; it should hold data in several places (not all
   * zeros, not one extent), so that several reads can be in flight on an `extents` reader.
   */
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
   * Takes the host's snapshot for one backup: a v2 {@link @drkit/core!HostSnapshot} with one
   * {@link @drkit/core!DiskSnapshot} per disk of the host; the suite opens the reader with it as `snapshot` and
   * this disk's entry as `diskSnapshot`. Default: `platform.createSnapshot({ host, name, quiesce: 'none' })` when
   * the platform's `capabilities.snapshots` is `host`, and no snapshot otherwise.
   */
  takeSnapshot?(
    options: { readonly host: Host; readonly name: string; readonly quiesce?: QuiesceMode } & CallOptions,
  ): Promise<HostSnapshot>;
  /** Releases a snapshot taken by `takeSnapshot`. Default: `platform.releaseSnapshot`. */
  releaseSnapshot?(snapshot: HostSnapshot, options?: CallOptions): Promise<void>;
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
 * Declares the vitest suite every v2 {@link @drkit/core!ChangedBlockReader} must pass, whichever way it reads: a
 * `stream` reader through `changes()`, an `extents` reader through `extents()` then `read()`, driven the way the
 * engine drives it (data extents cut at chunk boundaries, `maxConcurrentReads` reads in flight in order of
 * offset, every answer's length and `sha256` checksum checked), by a driver of the suite's own.
 *
 * It checks that the platform implements v2 and lists the disk; that the reader's declarations (`mode`,
 * `blockSize`, `maxConcurrentReads`) are usable; that a full read is sorted, disjoint, aligned, within capacity
 * and reproduces the disk byte for byte; that after random writes, a discard and a write at the last byte an
 * incremental is `exact` or `superset` and reproduces the new content over the previous one, and that an `exact`
 * one returns data only around what was written; that a grown and a shrunk disk report their new capacity and
 * content; that an `extents` reader answers `maxConcurrentReads` reads at once, each exactly the asked length;
 * that `readRange` (when offered) answers until the session is closed, also after the change set was read; that
 * a garbled or foreign checkpoint gives a full read with a reason, never a throw; that every backup ends with
 * `commit` exactly once (or `abandon` for a session the suite drops), that an abandoned session loses nothing
 * and that second calls and closing without either are harmless; that breaking out early and closing twice
 * release everything; and that an aborted signal rejects with its reason. When the platform has
 * `snapshots: 'host'` every backup reads a fresh v2 host snapshot, checked to hold one disk snapshot per disk.
 *
 * Call it at the top level of a test file.
 *
 * @throws nothing itself; each test fails with an assertion that names the offending change, extent or read.
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

    const context = (): ContractScenarioContext => {
      if (!fixture || !backups) throw new Error('the fixture was not created');
      return { fixture, backups, capabilities, seed };
    };

    it(
      'implements the v2 specification, declares a usable reader and lists the disk',
      async () => {
        const { fixture } = context();
        const { platform } = fixture;
        expect(platform.specificationVersion).toBe('v2');
        expect(typeof platform.id).toBe('string');
        expect(platform.id.length).toBeGreaterThan(0);
        expect(['host', 'none']).toContain(platform.capabilities.snapshots);
        expect(typeof platform.capabilities.quiesce).toBe('boolean');
        expect(typeof platform.capabilities.retainsSnapshotAsBase).toBe('boolean');
        expect(['exact', 'superset', 'none']).toContain(platform.capabilities.changeTracking);
        if (platform.capabilities.snapshots === 'host' && !fixture.takeSnapshot) {
          expect(typeof platform.createSnapshot, "snapshots: 'host' needs createSnapshot()").toBe('function');
        }
        expect(readerProblem(platform.changedBlockReader)).toBe('');
        const status = await platform.verify();
        expect(status, JSON.stringify(status)).toMatchObject({ status: 'normal' });
        if (status.status === 'normal') expect(status.hostCount).toBeGreaterThanOrEqual(1);
        const { host, disk } = await findDisk(fixture);
        expect(host.platformId).toBe(platform.id);
        expect(disk.hostId).toBe(host.id);
        expect(Number.isSafeInteger(disk.capacityBytes) && disk.capacityBytes > 0).toBe(true);
        expect((host.skippedDisks ?? []).map((skipped) => skipped.id)).not.toContain(disk.id);
      },
      timeout,
    );

    it(
      'a full read is sorted, disjoint, aligned, within capacity and reproduces the disk',
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

    it(
      "reads from a v2 host snapshot with one disk snapshot per disk (snapshots: 'host')",
      async (test) => {
        const outcome = await hostSnapshotScenario(context());
        if (outcome) test.skip(outcome);
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

        const written: Extent[] = [];
        for (const write of randomWrites(random, capacity, 12)) {
          await fixture.write(write.offset, randomBytes(bytes, write.length));
          written.push(write);
        }
        if (capabilities.canDiscard) {
          await fixture.discard(discarded.offset, discarded.length);
          written.push(discarded);
        }
        await fixture.write(capacity - 1, Uint8Array.of((await lastByte(full.imagePath, capacity)) ^ 0x5a));
        written.push({ offset: capacity - 1, length: 1 });

        const incremental = await backups.backup({ base: full.checkpoint });
        expect(['exact', 'superset']).toContain(incremental.validity.kind);
        expect(incremental.capacityBytes).toBe(capacity);
        await expectSameContent(incremental.imagePath, await fixture.readAll());
        if (incremental.validity.kind === 'exact') {
          assertExactWithin(incremental, written, exactGranularity(capabilities, backups.reader));
        }

        // Nothing changed since: still a valid incremental, still the same content.
        const quiet = await backups.backup({ base: incremental.checkpoint });
        expect(['exact', 'superset']).toContain(quiet.validity.kind);
        await expectSameContent(quiet.imagePath, await fixture.readAll());
        if (quiet.validity.kind === 'exact')
          expect(quiet.dataBytes, 'data of a quiet exact incremental').toBe(0);
      },
      timeout,
    );

    it.skipIf(!capabilities.canWrite)(
      'an exact incremental returns data only around what was written (superset readers are exempt)',
      async (test) => {
        const outcome = await exactIncrementalScenario(context());
        if (outcome) test.skip(outcome);
      },
      timeout,
    );

    it.skipIf(!capabilities.canGrow)(
      'a grown disk reports its new capacity and content, and its lineage goes on',
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
        expectValidityShape(next.validity, fixture.platform.kind);
        expect(next.disk.capacityBytes).toBe(capacity);
        expect(next.capacityBytes).toBe(capacity);
        expect(next.checkpoint.capacityBytes).toBe(capacity);
        await expectSameContent(next.imagePath, await fixture.readAll());

        // One more incremental on the grown disk: across the old end, from the grown point's checkpoint.
        if (capabilities.canWrite) {
          await fixture.write(full.capacityBytes - 100, randomBytes(createKeystream(`${seed}:grow-2`), 200));
        }
        const after = await backups.backup({ base: next.checkpoint });
        expect(['exact', 'superset']).toContain(after.validity.kind);
        expect(after.capacityBytes).toBe(capacity);
        await expectSameContent(after.imagePath, await fixture.readAll());
      },
      timeout,
    );

    it.skipIf(!capabilities.canShrink)(
      'a shrunk disk reports its new capacity and content, and its lineage goes on',
      async () => {
        const { fixture, backups } = context();
        const full = await backups.backup({});
        const capacity = full.capacityBytes - resizeStep;
        expect(capacity, 'the fixture disk is too small to shrink by resizeStepBytes').toBeGreaterThan(0);
        await fixture.resize(capacity);
        if (capabilities.canWrite) await fixture.write(capacity - 1, Uint8Array.of(0x3c));
        const next = await backups.backup({ base: full.checkpoint });
        expectValidityShape(next.validity, fixture.platform.kind);
        expect(next.disk.capacityBytes).toBe(capacity);
        expect(next.capacityBytes).toBe(capacity);
        expect(next.checkpoint.capacityBytes).toBe(capacity);
        await expectSameContent(next.imagePath, await fixture.readAll());

        if (capabilities.canWrite) {
          await fixture.write(
            Math.floor(capacity / 3),
            randomBytes(createKeystream(`${seed}:shrink-2`), 5000),
          );
        }
        const after = await backups.backup({ base: next.checkpoint });
        expect(['exact', 'superset']).toContain(after.validity.kind);
        expect(after.capacityBytes).toBe(capacity);
        await expectSameContent(after.imagePath, await fixture.readAll());
      },
      timeout,
    );

    it(
      'an extents reader answers maxConcurrentReads reads in flight at once, each exactly the asked length',
      async (test) => {
        const outcome = await parallelReadsScenario(context());
        if (outcome) test.skip(outcome);
      },
      timeout,
    );

    it(
      'readRange, when offered, returns the disk bytes',
      async (test) => {
        const { backups } = context();
        const full = await backups.backup({});
        const { session, end } = await backups.open({ base: full.checkpoint });
        try {
          if (!session.readRange) {
            test.skip('the reader offers no readRange');
            return;
          }
          const random = createSeededRandom(`${seed}:read-range`);
          await expectRangesMatch(session, full.imagePath, [
            { offset: 0, length: Math.min(4096, full.capacityBytes) },
            { offset: full.capacityBytes - 1, length: 1 },
            ...randomWrites(random, full.capacityBytes, 6),
          ]);
          await expect(session.readRange({ offset: full.capacityBytes, length: 1 })).rejects.toSatisfy(
            DrkitError.isInstance,
          );
        } finally {
          await end();
        }
      },
      timeout,
    );

    it(
      'readRange, when offered, still answers after the change set was read and committed, until close',
      async (test) => {
        const outcome = await readRangeAfterReadScenario(context());
        if (outcome) test.skip(outcome);
      },
      timeout,
    );

    it(
      'a garbled or foreign checkpoint gives a full read with a reason, never a throw, never wrong bytes',
      async () => {
        await checkpointFallbackScenario(context());
      },
      timeout,
    );

    it.skipIf(!capabilities.canWrite)(
      'an abandoned session, or one closed without an outcome, loses nothing; second calls are harmless',
      async () => {
        await abandonScenario(context());
        await secondCallsScenario(context());
      },
      timeout,
    );

    it(
      'breaking out of the read early and closing (twice) releases everything',
      async () => {
        const { fixture, backups } = context();
        const before = await fixture.countOpenResources?.();
        const { session, end } = await backups.open({});
        let seen = 0;
        try {
          for await (const change of backups.changes(session)) {
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
          const listing =
            early.session.mode === 'stream'
              ? early.session.changes({ signal: aborted })
              : early.session.extents({ signal: aborted });
          await expect(drain(listing)).rejects.toBe(reason);
        } finally {
          await early.end();
        }

        const reading = await backups.open({});
        try {
          const { session } = reading;
          if (session.mode === 'extents') {
            const piece = await firstDataPiece(session, backups.reader.blockSize);
            if (piece) await expect(session.read(piece, { signal: aborted })).rejects.toBe(reason);
          }
        } finally {
          await reading.end();
        }

        const controller = new AbortController();
        const midway = { reason: 'contract: a non-Error reason is passed through as is' };
        const { session, end } = await backups.open({});
        const stats = emptyExtentReadStats();
        let seen = 0;
        try {
          const iteration = (async () => {
            for await (const _change of backups.changes(session, { signal: controller.signal, stats })) {
              seen++;
              controller.abort(midway);
            }
          })();
          const outcome = await iteration.then(
            () => 'completed',
            (error: unknown) => error,
          );
          if (outcome === 'completed') {
            // A change set that was whole before the abort may end without noticing it; a reader call made
            // after it must reject.
            if (session.mode === 'stream') expect(seen, 'changes() went on after the abort').toBe(1);
            else expect(stats.succeededAfterAbort, 'reader calls that succeeded after the abort').toBe(0);
          } else {
            expect(outcome).toBe(midway);
          }
        } finally {
          await end();
        }
        if (before !== undefined) expect(await fixture.countOpenResources?.()).toBe(before);
      },
      timeout,
    );
  });
}

/**
 * What a scenario of the suite needs. The suite's own tests run the scenarios against broken readers.
 *
 * @internal exported for the suite's own tests.
 */
export interface ContractScenarioContext {
  readonly fixture: ChangedBlockReaderFixture;
  readonly backups: ContractBackups;
  readonly capabilities: ChangedBlockReaderContractCapabilities;
  readonly seed: string | number;
}

/**
 * After small writes far apart, an `exact` incremental reproduces the disk and returns data only within the
 * written ranges rounded out to the fixture's granularity.
 *
 * @returns why it could not check exactness (the reader is `superset`), or undefined.
 * @internal exported for the suite's own tests.
 */
export async function exactIncrementalScenario(c: ContractScenarioContext): Promise<string | undefined> {
  const { fixture, backups } = c;
  const full = await backups.backup({});
  const capacity = full.capacityBytes;
  const bytes = createKeystream(`${c.seed}:exact`);
  const written = smallWrites(capacity);
  for (const write of written) await fixture.write(write.offset, randomBytes(bytes, write.length));
  const incremental = await backups.backup({ base: full.checkpoint });
  await expectSameContent(incremental.imagePath, await fixture.readAll());
  if (incremental.validity.kind !== 'exact') {
    return `the incremental is ${incremental.validity.kind}: only exact change sets are held to what was written`;
  }
  assertExactWithin(incremental, written, exactGranularity(c.capabilities, backups.reader));
  return undefined;
}

/**
 * Asserts that the data of an `exact` change set lies within `written` rounded out to `granularity`.
 *
 * @throws an `Error` naming the first range of data outside.
 * @internal exported for the suite's own tests.
 */
export function assertExactWithin(
  backup: ContractBackup,
  written: readonly Extent[],
  granularity: number,
): void {
  const allowed = alignExtents(written, granularity, backup.capacityBytes);
  for (const range of backup.dataRanges) {
    const inside = allowed.some(
      (a) => a.offset <= range.offset && range.offset + range.length <= a.offset + a.length,
    );
    if (!inside) {
      throw new Error(
        `the exact incremental returned data at [${range.offset}, ${range.offset + range.length}), outside what ` +
          `was written since its base rounded out to ${granularity} bytes (${describeExtents(allowed)}): a reader ` +
          'that returns more than what changed must say superset (or declare a coarser exactGranularityBytes)',
      );
    }
  }
}

/**
 * Full, then an incremental read and abandoned, then one read and closed without an outcome: an incremental from
 * the full's checkpoint still holds every change since (nothing was lost).
 *
 * @internal exported for the suite's own tests.
 */
export async function abandonScenario(c: ContractScenarioContext): Promise<void> {
  const { fixture, backups } = c;
  const random = createSeededRandom(`${c.seed}:abandon`);
  const bytes = createKeystream(`${c.seed}:abandon-bytes`);
  const full = await backups.backup({});
  const capacity = full.capacityBytes;
  for (const write of randomWrites(random, capacity, 4)) {
    await fixture.write(write.offset, randomBytes(bytes, write.length));
  }
  const abandoned = await backups.read({ base: full.checkpoint });
  await expectSameContent(abandoned.backup.imagePath, await fixture.readAll());
  await abandoned.abandon({ kind: 'failed', error: new Error('contract: the repository failed on purpose') });
  await abandoned.close();

  for (const write of randomWrites(random, capacity, 3)) {
    await fixture.write(write.offset, randomBytes(bytes, write.length));
  }
  const unfinished = await backups.read({ base: full.checkpoint });
  await unfinished.close();

  const next = await backups.backup({ base: full.checkpoint });
  try {
    await expectSameContent(next.imagePath, await fixture.readAll());
  } catch (error) {
    throw new Error(
      'an incremental from the last committed checkpoint lost changes that an abandoned session (or one closed ' +
        `without an outcome) had read: abandon must not advance the source's change tracking. ${(error as Error).message}`,
    );
  }
}

/**
 * A second `commit`, an `abandon` after a commit, a second `abandon` and calls after `close` resolve or reject
 * with a drkit error, and disturb nothing: the next incremental still reproduces the disk.
 *
 * @internal exported for the suite's own tests.
 */
export async function secondCallsScenario(c: ContractScenarioContext): Promise<void> {
  const { fixture, backups } = c;
  const bytes = createKeystream(`${c.seed}:second-calls`);
  const first = await backups.read({});
  await first.commit();
  const point = { pointId: first.backup.pointId, checkpoint: first.backup.checkpoint };
  await expectHarmless('a second commit', first.session.commit(point));
  await expectHarmless('abandon after commit', first.session.abandon(contractAbandonReason()));
  await first.close();
  await expectHarmless('commit after close', first.session.commit(point));

  const capacity = first.backup.capacityBytes;
  await fixture.write(Math.floor(capacity / 3), randomBytes(bytes, 3000));
  const dropped = await backups.read({ base: first.backup.checkpoint });
  await dropped.abandon(contractAbandonReason());
  await expectHarmless('a second abandon', dropped.session.abandon(contractAbandonReason()));
  await dropped.close();
  await expectHarmless('abandon after close', dropped.session.abandon(contractAbandonReason()));

  const next = await backups.backup({ base: first.backup.checkpoint });
  await expectSameContent(next.imagePath, await fixture.readAll());
}

/**
 * For an `extents` reader: a full read cut into small chunks keeps `maxConcurrentReads` reads in flight and
 * reproduces the disk; then `maxConcurrentReads` reads of listed pieces (of one block, two, or up to a chunk)
 * issued at once all answer exactly the asked bytes.
 *
 * @returns why it could not run (a stream reader, too little data), or undefined.
 * @internal exported for the suite's own tests.
 */
export async function parallelReadsScenario(c: ContractScenarioContext): Promise<string | undefined> {
  const { fixture, backups } = c;
  const reader = backups.reader;
  if (reader.mode !== 'extents') return 'a stream reader has no reads to run in parallel';
  const chunkSize = Math.max(reader.blockSize, 64 * 1024);
  const full = await backups.backup({ chunkSize });
  await expectSameContent(full.imagePath, await fixture.readAll());
  const stats = full.reads!;
  const wanted = Math.min(reader.maxConcurrentReads, stats.reads);
  expect(stats.peakInFlight, 'reads the suite had in flight at once').toBe(wanted);
  if (stats.reads < reader.maxConcurrentReads) {
    return `the disk's data makes only ${stats.reads} reads of ${chunkSize} bytes: give the fixture more data`;
  }

  const { session, end } = await backups.open({ chunkSize });
  try {
    if (session.mode !== 'extents') throw new Error('the session is not an extents session');
    const pieces: ReadRequest[] = [];
    for await (const extent of session.extents()) {
      if (extent.kind !== 'data') continue;
      const extentEnd = extent.offset + extent.length;
      for (let offset = extent.offset; offset < extentEnd; ) {
        const chunkEnd = Math.min(extentEnd, (Math.floor(offset / chunkSize) + 1) * chunkSize);
        // Pieces of one block, two blocks, and the rest of the chunk, in turn: a read answers what it is asked.
        const blocks = (pieces.length % 3) + 1;
        const pieceEnd = blocks === 3 ? chunkEnd : Math.min(chunkEnd, offset + blocks * reader.blockSize);
        if (pieces.length < 4 * reader.maxConcurrentReads) {
          pieces.push({
            offset,
            length: pieceEnd - offset,
            ...(extent.token === undefined ? {} : { token: extent.token }),
          });
        }
        offset = pieceEnd;
      }
    }
    const image = await open(full.imagePath, 'r');
    try {
      for (let start = 0; start < pieces.length; start += reader.maxConcurrentReads) {
        const batch = pieces.slice(start, start + reader.maxConcurrentReads);
        const answers = await Promise.all(batch.map((piece) => session.read(piece)));
        for (const [index, piece] of batch.entries()) {
          const change = checkReadResult(answers[index]!, piece);
          const data = change.kind === 'data' ? change.data : new Uint8Array(0);
          const expected = Buffer.alloc(piece.length);
          await image.read(expected, 0, piece.length, piece.offset);
          if (!Buffer.from(data.buffer, data.byteOffset, data.byteLength).equals(expected)) {
            throw new Error(
              `read({ offset: ${piece.offset}, length: ${piece.length} }), one of ${batch.length} in flight at ` +
                'once, answered other bytes than the disk holds there',
            );
          }
        }
      }
    } finally {
      await image.close();
    }
  } finally {
    await end();
  }
  return undefined;
}

/**
 * An incremental read to its end, then `readRange` still answers the disk's bytes, also after `commit`, until
 * `close`.
 *
 * @returns why it could not run (no `readRange`), or undefined.
 * @internal exported for the suite's own tests.
 */
export async function readRangeAfterReadScenario(c: ContractScenarioContext): Promise<string | undefined> {
  const { backups } = c;
  const full = await backups.backup({});
  const read = await backups.read({ base: full.checkpoint });
  try {
    const { session } = read;
    if (!session.readRange) return 'the reader offers no readRange';
    const random = createSeededRandom(`${c.seed}:read-range-after`);
    const capacity = read.backup.capacityBytes;
    const ranges = [
      { offset: 0, length: Math.min(4096, capacity) },
      { offset: capacity - 1, length: 1 },
      ...randomWrites(random, capacity, 4),
    ];
    try {
      await expectRangesMatch(session, read.backup.imagePath, ranges);
      await read.commit();
      await expectRangesMatch(session, read.backup.imagePath, ranges);
    } catch (error) {
      throw new Error(
        `readRange failed once the change set was read: it must answer until the session is closed. ${(error as Error).message}`,
      );
    }
    return undefined;
  } finally {
    await read.close();
  }
}

/**
 * Opens the reader with checkpoints it cannot use: a garbled token, an empty one, another provider's token shape,
 * a change id of another source, and the checkpoint of another disk. Each must open a full read with a reason
 * (neither `first-backup` nor `requested`) and reproduce the disk.
 *
 * @internal exported for the suite's own tests.
 */
export async function checkpointFallbackScenario(c: ContractScenarioContext): Promise<void> {
  const { fixture, backups } = c;
  const full = await backups.backup({});
  const checkpoint = full.checkpoint;
  const half = checkpoint.token.slice(0, Math.floor(checkpoint.token.length / 2));
  const unusable: [string, Checkpoint][] = [
    ['a garbled token', { ...checkpoint, token: `${half}\u0000\u00ff}{garbled` }],
    ['an empty token', { ...checkpoint, token: '' }],
    [
      "another provider's token",
      {
        ...checkpoint,
        token: JSON.stringify({
          format: 'drkit-contract-foreign',
          version: 1,
          snapshot: 'pool/image@drkit-1',
        }),
      },
    ],
    ["another source's change id", { ...checkpoint, token: '52 4f 1e 9a 00 11 22 33/17' }],
    ["another disk's checkpoint", { ...checkpoint, diskId: `${checkpoint.diskId}~another-disk` }],
  ];
  for (const [what, base] of unusable) {
    let backup: ContractBackup;
    try {
      backup = await backups.backup({ base });
    } catch (error) {
      throw new Error(
        `a backup from ${what} failed (${(error as Error).message}): a reader given a base it cannot use must ` +
          'open a full read and say why in its validity, not throw',
      );
    }
    expect(backup.validity.kind, `validity of a read from ${what}`).toBe('full');
    if (backup.validity.kind === 'full') {
      expect(
        fullReadReasonProblem(backup.validity.reason, fixture.platform.kind),
        `reason of a read from ${what}`,
      ).toBe('');
      expect(['first-backup', 'requested'], `reason of a read from ${what}`).not.toContain(
        backup.validity.reason,
      );
    }
    await expectSameContent(backup.imagePath, await fixture.readAll());
  }
}

/**
 * When the platform has `snapshots: 'host'`: its snapshot is a v2 host snapshot with one disk snapshot per disk of
 * the host (checked by every backup of the suite), and a read of it reproduces the disk.
 *
 * @returns why it could not run (no snapshots), or undefined.
 * @internal exported for the suite's own tests.
 */
export async function hostSnapshotScenario(c: ContractScenarioContext): Promise<string | undefined> {
  const { fixture, backups } = c;
  if (fixture.platform.capabilities.snapshots !== 'host' && !fixture.takeSnapshot) {
    return "the platform reads disks live (snapshots: 'none')";
  }
  const { snapshot, diskSnapshot, end } = await backups.open({});
  try {
    expect(snapshot).toBeDefined();
    expect(diskSnapshot?.diskId).toBe(fixture.diskId);
  } finally {
    await end();
  }
  const full = await backups.backup({});
  await expectSameContent(full.imagePath, await fixture.readAll());
  return undefined;
}

/** The result of one backup the suite made: the session's facts and the disk rebuilt from its changes. */
export interface ContractBackup {
  /** The id the suite gave the point when it committed it. */
  readonly pointId: string;
  readonly disk: Disk;
  readonly validity: ChangeSetValidity;
  readonly capacityBytes: number;
  readonly checkpoint: Checkpoint;
  /** A file holding the disk as rebuilt from the changes over the base (or zeros for a full read). */
  readonly imagePath: string;
  readonly dataBytes: number;
  readonly zeroBytes: number;
  /** The ranges the change set gave data for, sorted and merged. */
  readonly dataRanges: readonly Extent[];
  /** For an `extents` session: what the suite's driver saw. */
  readonly reads?: ExtentReadStats;
}

/** A session the suite read to its end and has not told its outcome yet. */
export interface ContractRead {
  readonly session: ChangedBlockSession;
  readonly backup: ContractBackup;
  /**
   * Tells the session its point is committed (`commit({ pointId, checkpoint })`), once; the point becomes a base
   * later reads may rebuild on.
   */
  commit(): Promise<void>;
  /** Tells the session it ends without a point (`abandon(reason)`), once. */
  abandon(reason?: AbandonReason): Promise<void>;
  /**
   * Closes the session and settles its snapshot: kept as the next base when the point was committed and the
   * platform retains snapshots as bases, else released. Idempotent.
   */
  close(): Promise<void>;
}

/** A session the suite opened outside of a backup. */
export interface ContractSession {
  readonly session: ChangedBlockSession;
  readonly disk: Disk;
  readonly chunkSize: number;
  readonly snapshot?: HostSnapshot;
  readonly diskSnapshot?: DiskSnapshot;
  /** Closes the session (with no outcome) and releases its snapshot. */
  end(): Promise<void>;
}

/** What the suite opens a session with. */
export interface ContractOpenOptions {
  readonly base?: Checkpoint;
  readonly fullReason?: FullReadReason;
  /** The lineage's chunk size. Default: the larger of the reader's block size and 1 MiB. */
  readonly chunkSize?: number;
  readonly signal?: AbortSignal;
}

/** How many committed images the suite keeps to rebuild incrementals on (the newest ones). */
const KEPT_IMAGES = 2;
/** The Sync Proxy's default HTTP communication timeout, which the suite hands to every session. */
const REQUEST_TIMEOUT_SECONDS = 600;

/**
 * Runs backups the way the engine does and rebuilds every point in a temporary folder: snapshot (when the
 * platform has them), open with a chunk size and an `allocate` that hands out dirty buffers, read the change set
 * (`changes()`, or `extents()` and `read()` through {@link readExtentsInOrder}), rebuild it over its base,
 * `commit` exactly once (or `abandon`), close, settle the snapshot.
 *
 * @internal exported for the suite's own tests.
 */
export class ContractBackups {
  readonly #fixture: ChangedBlockReaderFixture;
  readonly #directory: string;
  readonly #retained: HostSnapshot[] = [];
  /** Rebuilt images of committed points, by their checkpoint, newest last. */
  readonly #images = new Map<string, string>();
  #count = 0;

  private constructor(fixture: ChangedBlockReaderFixture, directory: string) {
    this.#fixture = fixture;
    this.#directory = directory;
  }

  static async create(fixture: ChangedBlockReaderFixture): Promise<ContractBackups> {
    return new ContractBackups(fixture, await mkdtemp(join(tmpdir(), 'drkit-contract-')));
  }

  get reader(): ChangedBlockReader {
    return this.#fixture.platform.changedBlockReader;
  }

  /** The chunk size the suite uses unless a test says otherwise. */
  defaultChunkSize(): number {
    return Math.max(this.reader.blockSize, 1024 * 1024);
  }

  /**
   * Takes a snapshot when the platform has them and opens a session on it, outside of a backup. `end()` closes
   * the session and releases the snapshot.
   */
  async open(options: ContractOpenOptions): Promise<ContractSession & { readonly logProblems: string[] }> {
    const reader = this.reader;
    const problem = readerProblem(reader);
    if (problem) throw new Error(problem);
    const chunkSize = options.chunkSize ?? this.defaultChunkSize();
    if (chunkSize % reader.blockSize !== 0)
      throw new Error('the suite chose a chunk size off the block size');
    const { host, disk } = await findDisk(this.#fixture);
    const snapshot = await this.#takeSnapshot(host);
    const release = async () => {
      if (snapshot) await this.#release(snapshot);
    };
    const diskSnapshot = snapshot?.disks.find((entry) => entry.diskId === disk.id);
    const { logger, problems } = checkingLogger();
    let session: ChangedBlockSession;
    try {
      session = await reader.open({
        disk,
        ...(snapshot ? { snapshot, diskSnapshot: diskSnapshot! } : {}),
        ...(options.base ? { base: options.base } : {}),
        ...(options.fullReason ? { fullReason: options.fullReason } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
        chunkSize,
        // Content undefined, as the engine's recycled buffers: a reader must fill every byte it hands back.
        allocate: (length) => new Uint8Array(length).fill(0xdb),
        requestTimeoutSeconds: REQUEST_TIMEOUT_SECONDS,
        deadline: Date.now() + REQUEST_TIMEOUT_SECONDS * 1000,
        logger,
      });
    } catch (error) {
      await release();
      throw error;
    }
    try {
      expect(session.mode, "the session's mode is the reader's").toBe(reader.mode);
      expect(
        Number.isSafeInteger(session.capacityBytes) && session.capacityBytes >= 0,
        `capacity ${session.capacityBytes}`,
      ).toBe(true);
      expectValidityShape(session.validity, this.#fixture.platform.kind);
      if (!options.base && options.fullReason) {
        expect(session.validity).toMatchObject({ kind: 'full', reason: options.fullReason });
      }
    } catch (error) {
      await session.close().finally(release);
      throw error;
    }
    const end = async () => {
      try {
        await session.close();
      } finally {
        await release();
      }
    };
    return {
      session,
      disk,
      chunkSize,
      ...(snapshot ? { snapshot } : {}),
      ...(diskSnapshot ? { diskSnapshot } : {}),
      end,
      logProblems: problems,
    };
  }

  /** The change set of `session`, whichever its mode, read the way the engine reads it. */
  changes(
    session: ChangedBlockSession,
    options: { signal?: AbortSignal; chunkSize?: number; stats?: ExtentReadStats } = {},
  ): AsyncIterable<Change> {
    if (session.mode === 'stream') return session.changes(options.signal ? { signal: options.signal } : {});
    const reader = this.reader;
    return readExtentsInOrder(session, {
      capacityBytes: session.capacityBytes,
      blockSize: reader.blockSize,
      chunkSize: options.chunkSize ?? this.defaultChunkSize(),
      maxConcurrentReads: reader.maxConcurrentReads,
      readDeadlineMs: REQUEST_TIMEOUT_SECONDS * 1000,
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.stats ? { stats: options.stats } : {}),
    });
  }

  /**
   * Opens a session and reads its change set to the end, rebuilding the disk over its base; the caller then
   * tells the outcome and closes. When reading fails, the session is abandoned and closed before this rejects.
   */
  async read(options: Omit<ContractOpenOptions, 'signal'>): Promise<ContractRead> {
    const opened = await this.open(options);
    const { session, disk, snapshot } = opened;
    const index = this.#count++;
    const pointId = `contract-point-${index}`;
    const imagePath = join(this.#directory, `point-${index}.img`);
    let told = false;
    let closed = false;
    let committed = false;
    const close = async () => {
      if (closed) return;
      closed = true;
      try {
        await session.close();
      } finally {
        if (!committed) await rm(imagePath, { force: true });
        if (snapshot) {
          if (committed) await this.#afterCommit(snapshot);
          else await this.#release(snapshot);
        }
      }
    };
    let backup: ContractBackup;
    try {
      backup = await this.#rebuild(session, disk, options, pointId, imagePath, opened.chunkSize);
      expect(opened.logProblems, 'calls of the logger it was given').toEqual([]);
    } catch (error) {
      told = true;
      await session.abandon({ kind: 'failed', error }).catch(() => undefined);
      await close();
      throw error;
    }
    return {
      session,
      backup,
      commit: async () => {
        if (told) throw new Error('the suite told this session its outcome already');
        told = true;
        await session.commit(
          { pointId, checkpoint: backup.checkpoint },
          { deadline: Date.now() + REQUEST_TIMEOUT_SECONDS * 1000 },
        );
        committed = true;
        this.#keepImage(backup);
      },
      abandon: async (reason = contractAbandonReason()) => {
        if (told) throw new Error('the suite told this session its outcome already');
        told = true;
        await session.abandon(reason, { deadline: Date.now() + REQUEST_TIMEOUT_SECONDS * 1000 });
      },
      close,
    };
  }

  /** Snapshot (when the platform has them), open, read every change, rebuild, commit, close. */
  async backup(options: Omit<ContractOpenOptions, 'signal'>): Promise<ContractBackup> {
    const read = await this.read(options);
    try {
      await read.commit();
    } finally {
      await read.close();
    }
    return read.backup;
  }

  async #rebuild(
    session: ChangedBlockSession,
    disk: Disk,
    options: Omit<ContractOpenOptions, 'signal'>,
    pointId: string,
    imagePath: string,
    chunkSize: number,
  ): Promise<ContractBackup> {
    const capacity = session.capacityBytes;
    const validity = session.validity;
    const overZeros = validity.kind === 'full';
    let baseImage: string | undefined;
    if (!overZeros) {
      if (!options.base) {
        throw new Error(
          `the reader opened a ${validity.kind} change set without a base: it must read in full`,
        );
      }
      baseImage = this.#images.get(checkpointKey(options.base));
      if (!baseImage) {
        throw new Error(
          `the reader opened a ${validity.kind} change set from a base this suite never committed (a garbled or ` +
            "foreign checkpoint, another disk's): it must read in full and say why",
        );
      }
    }
    if (baseImage) await copyFile(baseImage, imagePath);
    else await (await open(imagePath, 'w')).close();
    const image = await open(imagePath, 'r+');
    let dataBytes = 0;
    let zeroBytes = 0;
    const dataRanges: { offset: number; length: number }[] = [];
    const stats = session.mode === 'extents' ? emptyExtentReadStats() : undefined;
    try {
      await image.truncate(capacity);
      const checker = new ChangeSetChecker(capacity);
      for await (const change of this.changes(session, { chunkSize, ...(stats ? { stats } : {}) })) {
        checker.accept(change);
        if (change.kind === 'data') {
          dataBytes += change.data.length;
          const last = dataRanges.at(-1);
          if (last && last.offset + last.length === change.offset) last.length += change.data.length;
          else dataRanges.push({ offset: change.offset, length: change.data.length });
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
    expect(typeof checkpoint.token).toBe('string');
    expect(Number.isNaN(Date.parse(checkpoint.createdAt)), 'checkpoint.createdAt is ISO 8601').toBe(false);
    return {
      pointId,
      disk,
      validity,
      capacityBytes: capacity,
      checkpoint,
      imagePath,
      dataBytes,
      zeroBytes,
      dataRanges,
      ...(stats ? { reads: stats } : {}),
    };
  }

  #keepImage(backup: ContractBackup): void {
    this.#images.set(checkpointKey(backup.checkpoint), backup.imagePath);
    while (this.#images.size > KEPT_IMAGES) {
      const [oldest, path] = this.#images.entries().next().value!;
      this.#images.delete(oldest);
      void rm(path, { force: true });
    }
  }

  async #takeSnapshot(host: Host): Promise<HostSnapshot | undefined> {
    const fixture = this.#fixture;
    const name = `drkit-contract-${Date.now()}-${this.#count}`;
    let snapshot: HostSnapshot;
    if (fixture.takeSnapshot) {
      snapshot = await fixture.takeSnapshot({ host, name, quiesce: 'none' });
    } else {
      if (fixture.platform.capabilities.snapshots !== 'host') return undefined;
      if (!fixture.platform.createSnapshot) {
        throw new Error("the platform declares snapshots: 'host' but has no createSnapshot()");
      }
      snapshot = await fixture.platform.createSnapshot({ host, name, quiesce: 'none' });
    }
    const problem = hostSnapshotProblem(snapshot, host, name);
    if (problem) {
      await this.#release(snapshot).catch(() => undefined);
      throw new Error(problem);
    }
    return snapshot;
  }

  /** Keeps the newest committed snapshot when the platform diffs against it; releases the older ones. */
  async #afterCommit(snapshot: HostSnapshot): Promise<void> {
    this.#retained.push(snapshot);
    const keep = this.#fixture.platform.capabilities.retainsSnapshotAsBase ? 1 : 0;
    while (this.#retained.length > keep) await this.#release(this.#retained.shift()!);
  }

  async #release(snapshot: HostSnapshot): Promise<void> {
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
 * What is wrong with a reader's declarations, or ''. The mode is `stream` or `extents`; the block size a power of
 * two; `maxConcurrentReads` a positive integer, 1 for a stream reader.
 *
 * @internal exported for the suite's own tests.
 */
export function readerProblem(reader: ChangedBlockReader): string {
  const { mode, blockSize, maxConcurrentReads } = reader;
  if (mode !== 'stream' && mode !== 'extents') return `the reader declares an unknown mode ${String(mode)}`;
  if (!Number.isSafeInteger(blockSize) || blockSize < 1 || (blockSize & (blockSize - 1)) !== 0) {
    return `the reader declares block size ${String(blockSize)}, not a power of two`;
  }
  if (!Number.isSafeInteger(maxConcurrentReads) || maxConcurrentReads < 1) {
    return `the reader declares ${String(maxConcurrentReads)} concurrent reads; at least 1`;
  }
  if (mode === 'stream' && maxConcurrentReads !== 1) {
    return `a stream reader declares ${maxConcurrentReads} concurrent reads; it reads one stream (1)`;
  }
  return '';
}

/**
 * What is wrong with a host snapshot, or '': the host and name asked for, one disk snapshot with a non-empty
 * `ref` per disk of the host, a consistency word (not `application`: the suite never asks to quiesce).
 *
 * @internal exported for the suite's own tests.
 */
export function hostSnapshotProblem(snapshot: HostSnapshot, host: Host, name: string): string {
  if (typeof snapshot !== 'object' || snapshot === null) return 'the snapshot is not an object';
  if (snapshot.hostId !== host.id) return `the snapshot is of host ${snapshot.hostId}, asked ${host.id}`;
  if (snapshot.name !== name) return `the snapshot is named ${snapshot.name}, asked ${name}`;
  if (!Array.isArray(snapshot.disks)) return 'the snapshot has no `disks` (one DiskSnapshot per disk)';
  const ids = snapshot.disks.map((entry) => entry?.diskId);
  const wanted = host.disks.map((disk) => disk.id);
  if (new Set(ids).size !== ids.length) return `the snapshot names a disk twice: ${ids.join(', ')}`;
  if (ids.length !== wanted.length || wanted.some((id) => !ids.includes(id))) {
    return `the snapshot covers disks ${ids.join(', ')}, the host has ${wanted.join(', ')}: one DiskSnapshot per disk`;
  }
  const empty = snapshot.disks.find((entry) => typeof entry.ref !== 'string' || entry.ref.length === 0);
  if (empty) return `the snapshot of disk ${empty.diskId} has no ref`;
  if (typeof snapshot.consistency !== 'string' || snapshot.consistency.length === 0) {
    return 'the snapshot says nothing of its consistency';
  }
  if (snapshot.consistency === 'application') {
    return "the snapshot claims application consistency, but the suite asked for quiesce: 'none'";
  }
  return '';
}

/**
 * What is wrong with a full-read reason, or '': one of the core words, or a provider's own word (lowercase
 * letters, digits and `-`, at most 64 characters) prefixed with the platform's kind.
 *
 * @internal exported for the suite's own tests.
 */
export function fullReadReasonProblem(reason: unknown, kind: string): string {
  if (typeof reason !== 'string') return `the reason ${String(reason)} is not a word`;
  if ((CORE_FULL_READ_REASONS as readonly string[]).includes(reason)) return '';
  if (!/^[a-z0-9-]{1,64}$/.test(reason)) {
    return `the reason ${JSON.stringify(reason)} is not lowercase letters, digits and "-" (at most 64)`;
  }
  if (!reason.startsWith(`${kind}-`)) {
    return `the reason ${reason} is not a core word and not prefixed with the platform's kind (${kind}-)`;
  }
  return '';
}

function expectValidityShape(validity: ChangeSetValidity, kind: string): void {
  expect(['exact', 'superset', 'full']).toContain(validity?.kind);
  if (validity.kind === 'full') expect(fullReadReasonProblem(validity.reason, kind)).toBe('');
  if (validity.detail !== undefined) expect(typeof validity.detail).toBe('string');
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

function checkpointKey(checkpoint: Checkpoint): string {
  const { diskId, token, capacityBytes, createdAt, snapshotName } = checkpoint;
  return JSON.stringify([diskId, token, capacityBytes, createdAt, snapshotName ?? null]);
}

function exactGranularity(capabilities: ChangedBlockReaderContractCapabilities, reader: ChangedBlockReader) {
  return capabilities.exactGranularityBytes ?? Math.max(reader.blockSize, 64 * 1024);
}

function contractAbandonReason(): AbandonReason {
  return { kind: 'failed', error: new Error('contract: the session is dropped on purpose') };
}

/** A call that may resolve or reject with a drkit error, and nothing worse. */
async function expectHarmless(what: string, call: Promise<void>): Promise<void> {
  try {
    await call;
  } catch (error) {
    if (!DrkitError.isInstance(error)) {
      throw new Error(`${what} threw ${String(error)}: it must resolve, or reject with a drkit error`);
    }
  }
}

/** The first block of the first listed data extent of a fresh session, or undefined when it lists none. */
async function firstDataPiece(
  session: ExtentReadSession,
  blockSize: number,
): Promise<ReadRequest | undefined> {
  for await (const extent of session.extents()) {
    if (extent.kind !== 'data') continue;
    return {
      offset: extent.offset,
      length: Math.min(extent.length, blockSize),
      ...(extent.token === undefined ? {} : { token: extent.token }),
    };
  }
  return undefined;
}

async function expectRangesMatch(
  session: ChangedBlockSession,
  imagePath: string,
  ranges: readonly Extent[],
): Promise<void> {
  const image = await open(imagePath, 'r');
  try {
    for (const range of ranges) {
      const actual = await session.readRange!(range);
      const expected = Buffer.alloc(range.length);
      await image.read(expected, 0, range.length, range.offset);
      expect(actual.length, `readRange(${range.offset}, ${range.length}) length`).toBe(range.length);
      expect(
        Buffer.from(actual.buffer, actual.byteOffset, actual.length).equals(expected),
        `readRange(${range.offset}, ${range.length}) bytes`,
      ).toBe(true);
    }
  } finally {
    await image.close();
  }
}

/** A logger that records calls not in the `(fields, message)` order the spec's {@link Logger} has. */
function checkingLogger(): { logger: Logger; problems: string[] } {
  const problems: string[] = [];
  const method =
    (level: string) =>
    (fields: unknown, message: unknown): void => {
      if (typeof fields !== 'object' || fields === null || Array.isArray(fields)) {
        problems.push(`logger.${level} got ${typeof fields} fields: call it with (fields, message)`);
      } else if (typeof message !== 'string') {
        problems.push(`logger.${level} got no message string: call it with (fields, message)`);
      }
    };
  return {
    logger: { debug: method('debug'), info: method('info'), warn: method('warn'), error: method('error') },
    problems,
  };
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

function describeExtents(extents: readonly Extent[]): string {
  const shown = extents.slice(0, 8).map((e) => `[${e.offset}, ${e.offset + e.length})`);
  return extents.length > 8 ? `${shown.join(' ')} and ${extents.length - 8} more` : shown.join(' ');
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

/** Three small writes far apart: one byte, 100 bytes across a 4 KiB boundary, one aligned 4 KiB block. */
function smallWrites(capacity: number): Extent[] {
  const block = (fraction: number) => Math.floor((capacity * fraction) / 4096) * 4096;
  return [
    { offset: Math.floor(capacity * 0.2), length: 1 },
    { offset: Math.max(0, block(0.5) - 50), length: 100 },
    { offset: block(0.8), length: 4096 },
  ].map((write) => ({
    offset: Math.min(write.offset, capacity - 1),
    length: Math.max(1, Math.min(write.length, capacity - Math.min(write.offset, capacity - 1))),
  }));
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
