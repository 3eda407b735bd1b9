import {
  type AbandonReason,
  type CallOptions,
  type Change,
  type ChangedBlockReader,
  type ChangeSetValidity,
  type Checkpoint,
  type CommittedPoint,
  type Disk,
  type DiskSnapshot,
  type HostSnapshot,
  InvalidArgumentError,
  type Logger,
  NotFoundError,
  type OpenChangedBlocksOptions,
  parseCheckpointToken,
  SourceProtocolError,
  type StreamReadSession,
  withCallDeadline,
} from '@drkit/core';
import type { CephImageRef, ResolvedCluster } from './ceph-rbd-options.js';
import { parseExportDiff } from './export-diff-parser.js';
import { openRbdStream, type RbdCallOptions, type RbdStream, runRbdJson } from './rbd-command.js';

/** Default piece size when the engine passes no usable chunk size: one 4 MiB RBD object. */
const DEFAULT_PIECE_SIZE = 4 * 1024 * 1024;
/** `rbd export-diff` cuts nothing finer than a 512-byte sector: the reader's block size. */
const RBD_BLOCK_SIZE = 512;
/** The name of this reader's checkpoint token format. */
const TOKEN_FORMAT = 'drkit-ceph-rbd';
/** Snapshot names drkit passes to rbd: no spaces, `/` or `@`, not starting with `-`. */
const SNAPSHOT_PATTERN = /^[A-Za-z0-9_.][A-Za-z0-9_.+:-]{0,254}$/;

/** What a checkpoint token of this reader records. Serialized as JSON; never a secret. */
interface CephRbdToken {
  readonly format: 'drkit-ceph-rbd';
  readonly version: 1;
  readonly cluster: string;
  readonly pool: string;
  readonly image: string;
  /** The RBD image id (`rbd info` `id`): a recreated image with the same name has another one. */
  readonly imageId: string;
  /** The snapshot this checkpoint's point was read from; the base of the next incremental. */
  readonly snapshot: string;
}

/** What `rbd info --format json` says about an image or a snapshot of it (the fields drkit reads). @internal */
export interface RbdImageInfo {
  readonly id: string;
  readonly size: number;
  readonly features: readonly string[];
  readonly flags: readonly string[];
}

/** Checks a snapshot name before it goes to rbd's argv. @internal */
export function assertSnapshotName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || !SNAPSHOT_PATTERN.test(name)) {
    throw new InvalidArgumentError(
      `${JSON.stringify(name)} is not a usable RBD snapshot name: letters, digits, "_", ".", "+", ":" and "-", ` +
        'not starting with "-"',
    );
  }
}

/**
 * `rbd info --format json POOL/IMAGE[@SNAP]`.
 *
 * @throws {@link @drkit/core!NotFoundError} when the image or snapshot does not exist; the errors of the rbd command.
 * @internal
 */
export async function rbdInfo(
  cluster: ResolvedCluster,
  spec: string,
  options: RbdCallOptions,
): Promise<RbdImageInfo> {
  const value = await runRbdJson(cluster.connection, ['info', spec], options);
  const info = value as Partial<Record<keyof RbdImageInfo, unknown>> | null;
  if (
    typeof info !== 'object' ||
    info === null ||
    typeof info.id !== 'string' ||
    typeof info.size !== 'number' ||
    !Number.isSafeInteger(info.size) ||
    info.size < 0
  ) {
    throw new SourceProtocolError(
      `rbd info ${spec} on Ceph cluster ${cluster.name} did not report an image id and size: ` +
        `${JSON.stringify(value)?.slice(0, 200)}`,
    );
  }
  const strings = (list: unknown) => (Array.isArray(list) ? list.filter((x) => typeof x === 'string') : []);
  return { id: info.id, size: info.size, features: strings(info.features), flags: strings(info.flags) };
}

/** The token, when this reader wrote it (format and version 1, every field); else undefined. */
function parseToken(text: string): CephRbdToken | undefined {
  if (typeof text !== 'string') return undefined;
  const token = parseCheckpointToken(text, TOKEN_FORMAT, 1, [
    'cluster',
    'pool',
    'image',
    'imageId',
    'snapshot',
  ]);
  if (!token || !SNAPSHOT_PATTERN.test(token.snapshot)) return undefined;
  return token as CephRbdToken;
}

/** Why a whole-object diff cannot be trusted between these snapshots, or undefined when it can. */
function fastDiffProblem(
  spec: string,
  from: [string, RbdImageInfo],
  to: [string, RbdImageInfo],
): string | undefined {
  if (!to[1].features.includes('fast-diff') || !to[1].features.includes('object-map')) {
    return (
      `${spec} has no object map with fast-diff (features: ${to[1].features.join(', ') || 'none'}); enable ` +
      `them with \`rbd feature enable ${spec} object-map fast-diff\` and \`rbd object-map rebuild ${spec}\``
    );
  }
  for (const [name, info] of [from, to]) {
    const bad = info.flags.filter((flag) => flag === 'object map invalid' || flag === 'fast diff invalid');
    if (bad.length > 0) {
      return `the object map of ${spec}@${name} is flagged ${bad.map((f) => `"${f}"`).join(' and ')}`;
    }
  }
  return undefined;
}

/** @internal */
export interface CephRbdReaderContext {
  readonly clusters: ReadonlyMap<string, ResolvedCluster>;
  /** The image of a disk listed by the platform. @throws {@link @drkit/core!NotFoundError} */
  imageOf(disk: Disk): CephImageRef;
}

/**
 * An open read of one RBD image at one drkit snapshot, a {@link @drkit/core!StreamReadSession}: `changes()` runs
 * `rbd export-diff` and parses its stream; data comes in buffers of at most one chunk, cut at multiples of the
 * engine's chunk size.
 *
 * It offers no `readRange`: `rbd` has no cheap random read of a snapshot (no `rbd-nbd`, no librbd binding for
 * Node), so the engine completes partly changed chunks from the parent point.
 *
 * `commit` and `abandon` have nothing to advance on the source: the base of the next incremental is the RBD
 * snapshot this session reads, which the engine keeps or releases through its ledger. Both only record the
 * session's {@link CephRbdChangedBlockSession.outcome}: the first of them (or `close`) decides it; a second call of
 * either, or a call after `close`, changes nothing and resolves.
 */
export interface CephRbdChangedBlockSession extends StreamReadSession {
  /** The image read, `pool/image`, and the drkit cluster name. */
  readonly image: CephImageRef;
  /** The RBD image id at the snapshot. */
  readonly imageId: string;
  /** The snapshot read. */
  readonly snapshotName: string;
  /** The snapshot the diff starts from, for an incremental. */
  readonly fromSnapshotName: string | undefined;
  /**
   * How the session ended: `committed` once `commit` was told, `abandoned` once `abandon` was told or it was
   * closed with neither; undefined while it is open without an outcome.
   */
  readonly outcome: 'committed' | 'abandoned' | undefined;
  /**
   * Records that the point holding this read is committed. A no-op on the source (see the interface); only the
   * first outcome counts, and a call after `close` is harmless. Never rejects.
   */
  commit(point: CommittedPoint, options?: CallOptions): Promise<void>;
  /**
   * Records that the task ended without a point. A no-op on the source: the snapshot the engine releases or
   * keeps is the only state, so nothing is advanced. Only the first outcome counts; a call after `close` is
   * harmless. Never rejects.
   */
  abandon(reason: AbandonReason, options?: CallOptions): Promise<void>;
}

/**
 * The {@link @drkit/core!ChangedBlockReader} of a Ceph RBD platform: a `stream` reader (`rbd export-diff` is one
 * ordered stream), of 512-byte blocks (a sector, the finest unit export-diff reports), one read at a time.
 */
export interface CephRbdChangedBlockReader extends ChangedBlockReader {
  readonly mode: 'stream';
  readonly blockSize: 512;
  readonly maxConcurrentReads: 1;
  /**
   * Opens a read of the disk's image at the host snapshot: the snapshot named by `diskSnapshot.ref`
   * (`<cluster>/<pool>/<image>@<snapshot>`, as {@link CephRbdPlatform.createSnapshot} returns it), or without
   * one `snapshot.name`. Without `base`: a full read (`fullReason`, or `first-backup`) of
   * `rbd export-diff IMAGE@SNAP`. With a base: `rbd export-diff --from-snap BASE` when the base snapshot still
   * exists on the same image — `exact` in `exact` mode (to the byte inside the extent each RBD object had at the
   * base; a write past an object's end comes from that end, zeros in between: exact to within one object); in
   * `fast` mode a `superset` from `--whole-object` when the object maps of both snapshots are valid, else `exact`
   * with a `detail` naming the object map problem (an exact diff does not depend on the object map, so no full
   * read is needed: `tracking-unreliable` is never returned). A full read instead, with the reason, when the base checkpoint is not one this reader wrote for
   * this disk (garbled, another version, another provider's, or another disk's: `checkpoint-invalid`), the image
   * was recreated (another RBD id: `disk-recreated`) or the base snapshot is gone (`base-snapshot-missing`).
   *
   * Timeouts: each `rbd` command of the session (the `rbd info` calls here, the `export-diff` that `changes()`
   * reads) is bounded by `requestTimeoutSeconds` when it is given — the Sync Proxy's HTTP communication timeout,
   * which then replaces the cluster's `timeoutSeconds` for Ceph's own timeouts too — and by the cluster's
   * `timeoutSeconds` otherwise. A command unanswered that long fails with a `TimeoutError` (a stream: no output
   * for that long while it is read). `deadline` bounds `open` as a whole; `signal` aborts it.
   *
   * `logger` (here, or later in `changes()`) is told at debug level of each rbd command (its argv, never the key)
   * and of the read decided.
   *
   * @throws {@link @drkit/core!InvalidArgumentError} without a snapshot, with a `diskSnapshot` of another image or
   * disk, or with an invalid `requestTimeoutSeconds`;
   * {@link @drkit/core!NotFoundError} when the image or the snapshot does not exist;
   * {@link @drkit/core!AuthenticationError}, {@link @drkit/core!UnreachableError}, {@link @drkit/core!PermissionError} for
   * access problems; {@link @drkit/core!TimeoutError} past `deadline` or a request timeout. Rejects with
   * `signal.reason` when aborted.
   */
  open(options: OpenChangedBlocksOptions): Promise<CephRbdChangedBlockSession>;
}

/** Parses a snapshot reference `<cluster>/<pool>/<image>@<snapshot>`. @internal */
export function parseSnapshotRef(ref: string): (CephImageRef & { readonly snapshot: string }) | undefined {
  const match = /^([^/@]+)\/([^/@]+)\/([^/@]+)@([^/@]+)$/.exec(ref);
  if (!match) return undefined;
  return { cluster: match[1]!, pool: match[2]!, image: match[3]!, snapshot: match[4]! };
}

/** The reference of an image's snapshot, `<cluster>/<pool>/<image>@<snapshot>`. @internal */
export function snapshotRef(ref: CephImageRef, snapshot: string): string {
  return `${ref.cluster}/${ref.pool}/${ref.image}@${snapshot}`;
}

/**
 * The snapshot to read: the one `diskSnapshot` names (checked against the disk's image), else `snapshot.name`.
 *
 * @throws {@link @drkit/core!InvalidArgumentError} when there is none, or it is of another disk or image.
 */
function snapshotToRead(
  disk: Disk,
  ref: CephImageRef,
  snapshot: HostSnapshot | undefined,
  diskSnapshot: DiskSnapshot | undefined,
): string {
  if (diskSnapshot) {
    if (diskSnapshot.diskId !== disk.id) {
      throw new InvalidArgumentError(
        `the disk snapshot given is of disk ${diskSnapshot.diskId}, not ${disk.id}: pass this disk's entry of ` +
          'snapshot.disks',
      );
    }
    const parsed = parseSnapshotRef(diskSnapshot.ref);
    if (!parsed || parsed.cluster !== ref.cluster || parsed.pool !== ref.pool || parsed.image !== ref.image) {
      throw new InvalidArgumentError(
        `disk ${disk.id}: the snapshot reference ${JSON.stringify(diskSnapshot.ref)} is not of its image ` +
          `${ref.cluster}/${ref.pool}/${ref.image} (expected "${snapshotRef(ref, '<snapshot>')}")`,
      );
    }
    assertSnapshotName(parsed.snapshot);
    if (snapshot && snapshot.name !== parsed.snapshot) {
      throw new InvalidArgumentError(
        `disk ${disk.id}: the snapshot reference names snapshot ${parsed.snapshot}, the host snapshot is ` +
          `${snapshot.name}`,
      );
    }
    return parsed.snapshot;
  }
  if (!snapshot) {
    throw new InvalidArgumentError(
      `disk ${disk.id}: a Ceph RBD read needs the host snapshot of this backup (the platform takes host ` +
        'snapshots): pass `snapshot` and `diskSnapshot`',
    );
  }
  assertSnapshotName(snapshot.name);
  return snapshot.name;
}

/**
 * Creates the reader of a Ceph RBD platform.
 *
 * @internal use {@link createCephRbdPlatform}.
 */
export function createCephRbdChangedBlockReader(context: CephRbdReaderContext): CephRbdChangedBlockReader {
  return {
    mode: 'stream',
    blockSize: RBD_BLOCK_SIZE,
    maxConcurrentReads: 1,
    async open(options: OpenChangedBlocksOptions): Promise<CephRbdChangedBlockSession> {
      const { disk, snapshot, diskSnapshot, base } = options;
      options.signal?.throwIfAborted();
      const ref = context.imageOf(disk);
      const cluster = context.clusters.get(ref.cluster);
      if (!cluster) throw new NotFoundError(`disk ${disk.id}: no Ceph cluster is named ${ref.cluster}`);
      const snapshotName = snapshotToRead(disk, ref, snapshot, diskSnapshot);
      const requestTimeoutSeconds = options.requestTimeoutSeconds;
      if (
        requestTimeoutSeconds !== undefined &&
        (typeof requestTimeoutSeconds !== 'number' ||
          !Number.isFinite(requestTimeoutSeconds) ||
          requestTimeoutSeconds <= 0)
      ) {
        throw new InvalidArgumentError(
          `requestTimeoutSeconds must be a number of seconds above 0, got ${String(requestTimeoutSeconds)}`,
        );
      }
      const spec = `${ref.pool}/${ref.image}`;
      using scope = withCallDeadline(options, `opening the read of ${spec}@${snapshotName}`);
      const rbd: RbdCallOptions = {
        signal: scope.signal,
        requestTimeoutSeconds,
        logger: options.logger,
      };
      // The token of another disk's checkpoint is never used, even when it parses: read in full (decideRead).
      const token = base && base.diskId === disk.id ? parseToken(base.token) : undefined;
      // Start the export-diff this read most likely needs while rbd info runs: it connects meanwhile, then waits
      // on a full pipe until changes() reads it. It is replaced when the checks decide on another read.
      const guess = !base
        ? exportDiffArgs(spec, snapshotName, undefined, false)
        : token
          ? exportDiffArgs(spec, snapshotName, token.snapshot, cluster.incrementalMode === 'fast')
          : exportDiffArgs(spec, snapshotName, undefined, false);
      const early = openRbdStream(cluster.connection, guess, rbd);
      early.catch(() => undefined);
      try {
        const read = await decideRead(cluster, ref, spec, snapshotName, token, options, rbd);
        const started = await early;
        let stream: RbdStream | undefined;
        if (guess.join('\n') === read.args.join('\n')) stream = started;
        else await started.close();
        options.logger?.debug(
          {
            diskId: disk.id,
            cluster: cluster.name,
            image: spec,
            snapshot: snapshotName,
            fromSnapshot: read.fromSnapshot,
            validity: read.validity,
          },
          'ceph rbd read opened',
        );
        return new CephRbdSession({ ...read, stream });
      } catch (error) {
        await early.then((started) => started.close()).catch(() => undefined);
        throw error;
      }
    },
  };
}

/** The arguments of `rbd export-diff` for a read. */
function exportDiffArgs(
  spec: string,
  snapshotName: string,
  fromSnapshot: string | undefined,
  wholeObject: boolean,
): string[] {
  const args = ['export-diff', '--no-progress'];
  if (fromSnapshot !== undefined) args.push('--from-snap', fromSnapshot);
  if (wholeObject) args.push('--whole-object');
  args.push(`${spec}@${snapshotName}`, '-');
  return args;
}

/** Looks at the image and the base snapshot with rbd info and decides the read: validity and export-diff. */
async function decideRead(
  cluster: ResolvedCluster,
  ref: CephImageRef,
  spec: string,
  snapshotName: string,
  token: CephRbdToken | undefined,
  options: OpenChangedBlocksOptions,
  rbd: RbdCallOptions,
): Promise<Omit<SessionSettings, 'stream'>> {
  const { disk, base, fullReason } = options;
  const { signal } = rbd;
  const [info, baseInfo] = await Promise.all([
    rbdInfo(cluster, `${spec}@${snapshotName}`, rbd).catch((error: unknown) => {
      if (NotFoundError.isInstance(error)) {
        throw new NotFoundError(
          `disk ${disk.id}: image ${spec} or its snapshot ${snapshotName} does not exist on Ceph cluster ` +
            `${cluster.name}: ${error.message}`,
          { cause: error },
        );
      }
      throw error;
    }),
    token
      ? rbdInfo(cluster, `${spec}@${token.snapshot}`, rbd).catch((error: unknown) => {
          if (NotFoundError.isInstance(error)) return undefined;
          throw error;
        })
      : undefined,
  ]);
  signal?.throwIfAborted();

  let validity: ChangeSetValidity;
  let fromSnapshot: string | undefined;
  let wholeObject = false;
  if (!base) {
    validity = { kind: 'full', reason: fullReason ?? 'first-backup' };
  } else if (base.diskId !== disk.id) {
    validity = {
      kind: 'full',
      reason: 'checkpoint-invalid',
      detail: `the base checkpoint belongs to disk ${describeDiskId(base.diskId)}, not ${disk.id}: reading ${spec} in full`,
    };
  } else if (!token) {
    validity = {
      kind: 'full',
      reason: 'checkpoint-invalid',
      detail: `${describeForeignToken(base.token)}: reading ${spec} in full`,
    };
  } else if (token.imageId !== info.id || token.pool !== ref.pool || token.image !== ref.image) {
    validity = {
      kind: 'full',
      reason: 'disk-recreated',
      detail:
        `${spec} has RBD id ${info.id}; the base checkpoint recorded ${token.pool}/${token.image} with id ` +
        `${token.imageId}: the image was deleted and created again`,
    };
  } else if (!baseInfo) {
    validity = {
      kind: 'full',
      reason: 'base-snapshot-missing',
      detail: `the base snapshot ${spec}@${token.snapshot} no longer exists (removed outside drkit?)`,
    };
  } else if (token.snapshot === snapshotName) {
    throw new InvalidArgumentError(
      `disk ${disk.id}: the base checkpoint was taken at snapshot ${snapshotName}, the one being read`,
    );
  } else {
    fromSnapshot = token.snapshot;
    if (cluster.incrementalMode === 'exact') {
      validity = { kind: 'exact' };
    } else {
      const problem = fastDiffProblem(spec, [token.snapshot, baseInfo], [snapshotName, info]);
      if (problem) {
        validity = { kind: 'exact', detail: `fast mode fell back to an exact diff because ${problem}` };
      } else {
        wholeObject = true;
        validity = {
          kind: 'superset',
          detail: 'whole 4 MiB objects that changed, from the object map (fast-diff)',
        };
      }
    }
  }
  const chunkSize = options.chunkSize;
  const pieceSize =
    chunkSize !== undefined && Number.isSafeInteger(chunkSize) && chunkSize > 0
      ? chunkSize
      : DEFAULT_PIECE_SIZE;
  return {
    cluster,
    disk,
    ref,
    info,
    snapshotName,
    fromSnapshot,
    args: exportDiffArgs(spec, snapshotName, fromSnapshot, wholeObject),
    validity,
    pieceSize,
    allocate: options.allocate,
    requestTimeoutSeconds: rbd.requestTimeoutSeconds,
    logger: rbd.logger,
  };
}

/** A checkpoint's disk id for a message: quoted, at most 200 characters. */
function describeDiskId(diskId: unknown): string {
  if (typeof diskId !== 'string') return `(not a string: ${typeof diskId})`;
  return JSON.stringify(diskId.length > 200 ? `${diskId.slice(0, 200)}…` : diskId);
}

/** Why a checkpoint token is not one of this reader's, in words (never the whole token). */
function describeForeignToken(text: unknown): string {
  const prefix = "the base checkpoint was not written by drkit's Ceph RBD reader";
  if (typeof text !== 'string') return `${prefix} (its token is not text)`;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return `${prefix} (its token is not JSON)`;
  }
  const format = (value as { format?: unknown } | null)?.format;
  const version = (value as { version?: unknown } | null)?.version;
  if (typeof format === 'string' && format !== TOKEN_FORMAT) {
    return `${prefix} (its token is of format ${JSON.stringify(format.slice(0, 64))}, not ${TOKEN_FORMAT})`;
  }
  if (format === TOKEN_FORMAT && version !== 1) {
    return `${prefix} version 1 (its token is of version ${JSON.stringify(version)})`;
  }
  return `${prefix} (format ${TOKEN_FORMAT} version 1 with cluster, pool, image, imageId and snapshot)`;
}

interface SessionSettings {
  readonly cluster: ResolvedCluster;
  readonly disk: Disk;
  readonly ref: CephImageRef;
  readonly info: RbdImageInfo;
  readonly snapshotName: string;
  readonly fromSnapshot: string | undefined;
  /** The arguments of rbd export-diff. */
  readonly args: readonly string[];
  /** The export-diff already started with these arguments, if any. */
  readonly stream: RbdStream | undefined;
  readonly validity: ChangeSetValidity;
  readonly pieceSize: number;
  readonly allocate: ((length: number) => Uint8Array) | undefined;
  /** Bounds each rbd command of the session, when given (see {@link RbdCallOptions.requestTimeoutSeconds}). */
  readonly requestTimeoutSeconds: number | undefined;
  /** The logger `open` was given; `changes()` may pass its own. */
  readonly logger: Logger | undefined;
}

class CephRbdSession implements CephRbdChangedBlockSession {
  readonly mode = 'stream' as const;
  readonly capacityBytes: number;
  readonly validity: ChangeSetValidity;
  readonly image: CephImageRef;
  readonly imageId: string;
  readonly snapshotName: string;
  readonly fromSnapshotName: string | undefined;
  readonly #settings: SessionSettings;
  readonly #openedAt = new Date().toISOString();
  #iterated = false;
  #closed = false;
  #outcome: 'committed' | 'abandoned' | undefined;
  #stream: RbdStream | undefined;

  constructor(settings: SessionSettings) {
    this.#settings = settings;
    this.capacityBytes = settings.info.size;
    this.validity = settings.validity;
    this.image = settings.ref;
    this.imageId = settings.info.id;
    this.snapshotName = settings.snapshotName;
    this.fromSnapshotName = settings.fromSnapshot;
    this.#stream = settings.stream;
  }

  get outcome(): 'committed' | 'abandoned' | undefined {
    return this.#outcome;
  }

  changes(options: CallOptions = {}): AsyncIterable<Change> {
    return this.#changes(options.signal, options.logger ?? this.#settings.logger);
  }

  async *#changes(signal: AbortSignal | undefined, logger: Logger | undefined): AsyncGenerator<Change> {
    const s = this.#settings;
    const spec = `${s.ref.pool}/${s.ref.image}`;
    if (this.#closed) throw new InvalidArgumentError(`the session on ${spec}@${s.snapshotName} is closed`);
    if (this.#iterated) {
      throw new InvalidArgumentError(
        `changes() of ${spec}@${s.snapshotName} was already iterated: open a new session to read it again`,
      );
    }
    this.#iterated = true;
    signal?.throwIfAborted();
    const stream =
      this.#stream ??
      (await openRbdStream(s.cluster.connection, s.args, {
        signal,
        requestTimeoutSeconds: s.requestTimeoutSeconds,
        logger,
      }));
    this.#stream = stream;
    try {
      try {
        const events = parseExportDiff(stream.chunks({ signal }), {
          pieceSize: s.pieceSize,
          ...(s.allocate ? { allocate: s.allocate } : {}),
          ...(signal ? { signal } : {}),
        });
        for await (const event of events) {
          switch (event.kind) {
            case 'from-snapshot':
              if (event.name !== s.fromSnapshot) {
                throw new SourceProtocolError(
                  `rbd export-diff of ${spec} starts from snapshot "${event.name}", expected ` +
                    `${s.fromSnapshot === undefined ? 'none' : `"${s.fromSnapshot}"`}`,
                );
              }
              break;
            case 'to-snapshot':
              if (event.name !== s.snapshotName) {
                throw new SourceProtocolError(
                  `rbd export-diff of ${spec} reads snapshot "${event.name}", expected "${s.snapshotName}"`,
                );
              }
              break;
            case 'size':
              if (event.sizeBytes !== this.capacityBytes) {
                throw new SourceProtocolError(
                  `rbd export-diff of ${spec}@${s.snapshotName} declares ${event.sizeBytes} bytes, rbd info ` +
                    `reported ${this.capacityBytes}`,
                );
              }
              break;
            case 'data':
              yield { kind: 'data', offset: event.offset, data: event.data };
              break;
            case 'zero':
              yield { kind: 'zero', offset: event.offset, length: event.length };
              break;
          }
        }
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        // A short or broken stream of an rbd that failed: rbd's own error says more.
        if (SourceProtocolError.isInstance(error) && stream.ended) await stream.wait();
        throw error;
      }
      await stream.wait();
    } finally {
      this.#stream = undefined;
      await stream.close();
    }
  }

  checkpoint(): Checkpoint {
    const s = this.#settings;
    const token: CephRbdToken = {
      format: TOKEN_FORMAT,
      version: 1,
      cluster: s.ref.cluster,
      pool: s.ref.pool,
      image: s.ref.image,
      imageId: s.info.id,
      snapshot: s.snapshotName,
    };
    return {
      diskId: s.disk.id,
      token: JSON.stringify(token),
      capacityBytes: this.capacityBytes,
      createdAt: this.#openedAt,
      snapshotName: s.snapshotName,
    };
  }

  async commit(_point: CommittedPoint, _options?: CallOptions): Promise<void> {
    this.#outcome ??= 'committed';
  }

  async abandon(_reason: AbandonReason, _options?: CallOptions): Promise<void> {
    this.#outcome ??= 'abandoned';
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#outcome ??= 'abandoned';
    const stream = this.#stream;
    this.#stream = undefined;
    await stream?.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
