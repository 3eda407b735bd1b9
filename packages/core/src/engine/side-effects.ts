import { randomBytes, randomUUID } from 'node:crypto';
import {
  InvalidSettingsError,
  QuiesceFailedError,
  SourceProtocolError,
  TimeoutError,
} from '../errors/drkit-error.js';
import { VOCABULARY_WORD } from '../repository/point-metadata.js';
import type { LedgerEntry, Repository } from '../repository/types.js';
import type { Host, HostSnapshot, Logger, Platform, QuiesceMode } from '../spec/v2/index.js';
import { resolveSecondsSetting } from '../util/seconds-setting.js';
import type { LedgerLeases } from './ledger-leases.js';

/** A name for a new drkit snapshot: `drkit-<UTC yyyymmddThhmmss>-<6 hex>`, sortable by time. */
export function snapshotName(now = new Date()): string {
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, '');
  return `drkit-${stamp}-${randomBytes(3).toString('hex')}`;
}

/** Default time limit of taking one host snapshot, in seconds: 4 hours (a first EBS snapshot of a large volume). */
export const DEFAULT_SNAPSHOT_TIMEOUT_SECONDS = 4 * 3600;

/**
 * Validates a snapshot timeout: seconds above 0, at most 86400 (fractions allowed).
 *
 * @throws {@link InvalidSettingsError} naming `field`.
 * @internal
 */
export function resolveSnapshotTimeoutSeconds(value: number | undefined, field: string): number {
  return resolveSecondsSetting(value, DEFAULT_SNAPSHOT_TIMEOUT_SECONDS, field);
}

/** Default time limit of releasing one snapshot (the source's call and the ledger's update), in seconds. */
export const DEFAULT_RELEASE_TIMEOUT_SECONDS = 300;

/**
 * Validates a release timeout: seconds above 0, at most 86400 (fractions allowed).
 *
 * @throws {@link InvalidSettingsError} naming `field`.
 * @internal
 */
export function resolveReleaseTimeoutSeconds(value: number | undefined, field: string): number {
  return resolveSecondsSetting(value, DEFAULT_RELEASE_TIMEOUT_SECONDS, field);
}

/**
 * Runs `operation` with a signal of its own that aborts after `seconds` (and when `signal` aborts). Past the
 * deadline it rejects with a {@link TimeoutError}, also when the operation ignores its signal (the operation is
 * then left to itself).
 *
 * @internal
 */
export async function withDeadline<T>(
  seconds: number,
  what: string,
  operation: (signal: AbortSignal) => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  signal?.throwIfAborted();
  const controller = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const error = new TimeoutError(`${what} did not finish within ${seconds} s`);
      controller.abort(error);
      reject(error);
    }, seconds * 1000);
  });
  expired.catch(() => undefined);
  const onAbort = () => controller.abort(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const running = operation(controller.signal);
    running.catch(() => undefined); // it may reject after the deadline won: not an unhandled rejection
    return await Promise.race([running, expired]);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
}

/** Options of {@link createRecordedSnapshot}. */
export interface CreateRecordedSnapshotOptions {
  readonly signal?: AbortSignal;
  /** What the job asks for (a platform that cannot quiesce is asked with `none` for `preferred`). */
  readonly quiesce: QuiesceMode;
  /** Time limit of the platform's `createSnapshot`, in seconds (its `deadline`, and given up past it). */
  readonly snapshotTimeoutSeconds: number;
  /** Handed to the platform's `createSnapshot`. */
  readonly logger?: Logger;
  /** The engine's leases: the entry is recorded with its owner and a lease, which is renewed while it is held. */
  readonly leases: LedgerLeases;
  /** Time limit of the release that follows a failed create. */
  readonly releaseTimeoutSeconds: number;
  /** Told when that release fails too (its entry then stays in the ledger for `reconcile()`). */
  readonly onReleaseFailure?: (entry: LedgerEntry, error: unknown) => void;
}

/**
 * Takes the host snapshot through the ledger: the entry is written before the platform is asked, so a crash
 * between the two leaves a record that `reconcile()` can act on. The entry is held (its lease renewed) from then
 * on; the caller drops it ({@link LedgerLeases.drop}) before it settles the snapshot.
 *
 * `snapshotAt` is the leases' clock read just before the entry is recorded and the platform asked: the time the
 * snapshot's data is from (the entry's `createdAt`), recorded as the points' `snapshotAt`.
 */
export async function createRecordedSnapshot(
  platform: Platform,
  repository: Repository,
  host: Host,
  jobId: string,
  options: CreateRecordedSnapshotOptions,
): Promise<{ snapshot: HostSnapshot; entry: LedgerEntry; snapshotAt: string }> {
  const { signal, leases } = options;
  if (!platform.createSnapshot) {
    throw new TypeError(`platform ${platform.id} declares host snapshots but has no createSnapshot()`);
  }
  // Before anything is recorded: a platform that cannot quiesce is never asked for a required quiesced snapshot.
  const quiesce =
    options.quiesce === 'preferred' && !platform.capabilities.quiesce ? 'none' : options.quiesce;
  if (quiesce === 'required' && !platform.capabilities.quiesce) {
    throw new QuiesceFailedError(
      `host ${host.id}: the job requires a quiesced snapshot, and platform ${platform.id} (${platform.kind}) cannot quiesce`,
    );
  }
  const now = leases.now();
  let entry = leases.stamp({
    id: randomUUID(),
    kind: 'snapshot',
    platformId: platform.id,
    hostId: host.id,
    name: snapshotName(now),
    state: 'pending',
    jobId,
    createdAt: now.toISOString(),
  });
  await repository.ledger.record(entry, { signal });
  leases.hold(entry);
  let lateCall: Promise<HostSnapshot> | undefined;
  // Whether the platform's call has settled: one that outlives its deadline may still create the snapshot.
  let pending = false;
  try {
    const create = platform.createSnapshot.bind(platform);
    const logger = options.logger;
    // Bounded also when the platform ignores its deadline: past it the snapshot is released by name below.
    const snapshot = await withDeadline(
      options.snapshotTimeoutSeconds,
      `creating snapshot ${entry.name} of host ${host.id}`,
      (bounded) => {
        pending = true;
        const running = create({
          host,
          name: entry.name,
          quiesce,
          signal: bounded,
          deadline: Date.now() + options.snapshotTimeoutSeconds * 1000,
          ...(logger === undefined ? {} : { logger }),
        });
        lateCall = running;
        void running.then(
          () => {
            pending = false;
          },
          () => {
            pending = false;
          },
        );
        return running;
      },
      signal,
    );
    if (snapshot.providerId !== undefined) {
      entry = { ...entry, providerId: snapshot.providerId };
      await leases.rewrite(entry, signal);
    }
    checkSnapshot(platform, host, entry.name, snapshot, quiesce);
    return { snapshot, entry, snapshotAt: now.toISOString() };
  } catch (error) {
    await leases.drop(entry.id);
    const release = (what: LedgerEntry) =>
      releaseRecordedSnapshot(platform, repository, what, {
        timeoutSeconds: options.releaseTimeoutSeconds,
        ...(options.logger === undefined ? {} : { logger: options.logger }),
      }).catch((releaseError: unknown) => options.onReleaseFailure?.(what, releaseError));
    if (pending && lateCall) {
      // The call is still running and may yet create the snapshot: release by name only once it has settled, and
      // keep the ledger entry until then (if it never settles, reconcile() releases it).
      const recorded = entry;
      void lateCall.then(
        () => release(recorded),
        () => release(recorded),
      );
      options.onReleaseFailure?.(
        recorded,
        new TimeoutError(
          `the platform's createSnapshot of ${recorded.name} had not ended when it was given up; the snapshot is released when the call ends, and its ledger entry is kept until then (reconcile() releases it if the call never ends)`,
        ),
      );
      throw error;
    }
    // The snapshot may exist even though the call failed (a lost answer or an abort): release it by name, with
    // a deadline of its own rather than the (maybe aborted) signal, then forget it.
    await release(entry);
    throw error;
  }
}

/**
 * What a platform's snapshot must be: of this host, under this name, one reference per disk, quiesced when that was
 * required.
 *
 * @throws {@link SourceProtocolError} for a snapshot that breaks the contract; {@link QuiesceFailedError} for one
 * that is not application consistent although quiescing was required.
 */
function checkSnapshot(
  platform: Platform,
  host: Host,
  name: string,
  snapshot: HostSnapshot,
  quiesce: QuiesceMode,
) {
  const where = `platform ${platform.id} (${platform.kind}) answered createSnapshot of host ${host.id}`;
  if (
    snapshot === null ||
    typeof snapshot !== 'object' ||
    snapshot.hostId !== host.id ||
    snapshot.name !== name
  ) {
    throw new SourceProtocolError(`${where} with a snapshot of another host or name`);
  }
  if (typeof snapshot.consistency !== 'string' || !Array.isArray(snapshot.disks)) {
    throw new SourceProtocolError(`${where} without its consistency or its disks`);
  }
  if (!VOCABULARY_WORD.test(snapshot.consistency)) {
    throw new SourceProtocolError(
      `${where} with consistency ${JSON.stringify(snapshot.consistency)}: not a word of lowercase letters, digits and -`,
    );
  }
  const refs = new Set(snapshot.disks.map((d) => d.diskId));
  const missing = host.disks.filter((d) => !refs.has(d.id)).map((d) => d.id);
  if (missing.length > 0) {
    throw new SourceProtocolError(`${where} without a reference for disk(s) ${missing.join(', ')}`);
  }
  if (quiesce === 'required' && snapshot.consistency !== 'application') {
    throw new QuiesceFailedError(
      `host ${host.id}: the job requires a quiesced snapshot and platform ${platform.id} achieved ${snapshot.consistency}${snapshot.detail ? ` (${snapshot.detail})` : ''}`,
    );
  }
}

/**
 * Releases a recorded snapshot on the source (idempotent there) and then removes its ledger entry, within
 * `timeoutSeconds`. On failure the entry stays, for `reconcile()`.
 *
 * @throws {@link TimeoutError} past the deadline; `signal.reason` when aborted; the source's or the ledger's error.
 */
export async function releaseRecordedSnapshot(
  platform: Platform,
  repository: Repository,
  entry: LedgerEntry,
  options: { timeoutSeconds: number; signal?: AbortSignal; logger?: Logger },
): Promise<void> {
  const logger = options.logger;
  await withDeadline(
    options.timeoutSeconds,
    `releasing snapshot ${entry.name} of host ${entry.hostId}`,
    async (signal) => {
      await platform.releaseSnapshot?.({
        hostId: entry.hostId,
        name: entry.name,
        signal,
        ...(logger === undefined ? {} : { logger }),
      });
      await repository.ledger.remove(entry.id, { signal });
    },
    options.signal,
  );
}

/** Snapshot names the newest point of each disk of a host still needs as its base. */
export async function snapshotsInUse(
  repository: Repository,
  platformId: string,
  hostId: string,
  signal?: AbortSignal,
): Promise<Set<string>> {
  const newest = new Map<string, string | undefined>();
  for (const point of await repository.points({ platformId, hostId }, { signal })) {
    newest.set(point.diskId, point.checkpoint?.snapshotName); // points come oldest first
  }
  const names = new Set<string>();
  for (const name of newest.values()) if (name !== undefined) names.add(name);
  return names;
}
