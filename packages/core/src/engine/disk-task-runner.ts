import { SourceProtocolError } from '../errors/drkit-error.js';
import { CHUNK_BLOB_HEADER_BYTES } from '../repository/chunk-blob.js';
import { chunkIdFromHash, isZeroId } from '../repository/chunk-id.js';
import { SEGMENT_CHUNKS } from '../repository/chunk-index.js';
import { VOCABULARY_WORD } from '../repository/point-metadata.js';
import type {
  BackupSession,
  PointIndex,
  PointIndexBuilder,
  RecoveryPoint,
  Repository,
} from '../repository/types.js';
import type {
  AbandonReason,
  Change,
  ChangedBlockSession,
  ChangeSetValidity,
  DiskTask,
  DiskTaskProgress,
  DiskTaskResult,
  Logger,
  Platform,
} from '../spec/v2/index.js';
import { deadlineAfter } from '../util/call-deadline.js';
import { describeError } from '../util/describe-error.js';
import type { ChunkWorkerPool } from '../workers/chunk-worker-pool.js';
import { zstdCompressBound } from '../workers/chunk-worker-pool.js';
import { BufferPool } from './buffer-pool.js';
import { orderedExtentReads } from './extent-reads.js';
import { ProgressTracker } from './progress-tracker.js';
import { withDeadline } from './side-effects.js';
import { resolveStallTimeoutSeconds, StallWatchdog } from './stall-watchdog.js';

/** Everything {@link runDiskTask} needs besides the task. */
export interface DiskTaskContext {
  readonly platform: Platform;
  readonly repository: Repository;
  readonly pool: ChunkWorkerPool;
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: DiskTaskProgress) => void;
  /**
   * Seconds without progress (no byte read from the source, no chunk completed) after which the task fails with
   * a {@link TaskStalledError}. Default 600 (a Sync Proxy's default `httpTimeoutSeconds`). The commit is not
   * watched.
   */
  readonly stallTimeoutSeconds?: number;
  /**
   * How long one request to the source may go unanswered, in seconds (the proxy's `httpTimeoutSeconds`): handed to
   * the reader's `open` as `requestTimeoutSeconds`, and the `deadline` of each call the runner makes to the
   * session (`open`, `read`, `readRange`, `commit`, `abandon`). Default: none (the reader's own; the stall
   * watchdog still bounds the task).
   */
  readonly requestTimeoutSeconds?: number;
  /** Where the task writes what it does; handed to the reader's calls. */
  readonly logger?: Logger;
  /** Waits between attempts of a throttled read (for tests). */
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/**
 * The most reads the engine keeps in flight on one list-then-read session, whatever its reader declares.
 */
export const MAX_CONCURRENT_READS = 64;

/**
 * Chunks of answers a list-then-read session may hold per read in flight: reads complete out of order, and an
 * answer that arrives ahead of an earlier, slower one (or while the chunk pipeline is busy) waits for its turn
 * within this budget instead of stopping the next read. At most {@link MAX_CONCURRENT_READS} chunks in all (with
 * 1 MiB chunks, 64 MiB of answers per disk task at most).
 */
export const READ_BUFFER_CHUNKS_PER_READ = 2;

/**
 * What the reader declares must fit the task: a block size that is a power of two dividing the chunk size, a
 * positive concurrency, a known mode.
 *
 * @throws {@link SourceProtocolError} naming what is wrong.
 */
function checkReader(platform: Platform, task: DiskTask): void {
  const { mode, blockSize, maxConcurrentReads } = platform.changedBlockReader;
  const where = `the reader of platform ${platform.id}`;
  if (mode !== 'stream' && mode !== 'extents') {
    throw new SourceProtocolError(`${where} declares an unknown mode ${String(mode)}`);
  }
  if (!Number.isSafeInteger(blockSize) || blockSize < 1 || (blockSize & (blockSize - 1)) !== 0) {
    throw new SourceProtocolError(`${where} declares block size ${blockSize}, not a power of two`);
  }
  if (task.chunkSize % blockSize !== 0) {
    throw new SourceProtocolError(
      `${where} reads blocks of ${blockSize} bytes, which the lineage's chunk size ${task.chunkSize} is not a multiple of`,
    );
  }
  if (!Number.isSafeInteger(maxConcurrentReads) || maxConcurrentReads < 1) {
    throw new SourceProtocolError(`${where} declares ${maxConcurrentReads} concurrent reads; at least 1`);
  }
}

/**
 * A session's validity must be one the engine can record: a known kind, and for `full` a reason of the open
 * vocabulary's shape. Checked when the session opens, so a bad word fails the task before the disk is read.
 *
 * @throws {@link SourceProtocolError}
 */
function checkValidity(validity: ChangeSetValidity, task: DiskTask): void {
  const where = `the reader of disk ${task.disk.id} opened a session with validity ${JSON.stringify(validity)}`;
  if (validity === null || typeof validity !== 'object') throw new SourceProtocolError(where);
  if (validity.kind !== 'exact' && validity.kind !== 'superset' && validity.kind !== 'full') {
    throw new SourceProtocolError(`${where}: the kind must be exact, superset or full`);
  }
  if (
    validity.kind === 'full' &&
    (typeof validity.reason !== 'string' || !VOCABULARY_WORD.test(validity.reason))
  ) {
    throw new SourceProtocolError(`${where}: a full read's reason must be lowercase letters, digits and -`);
  }
  if (validity.detail !== undefined && typeof validity.detail !== 'string') {
    throw new SourceProtocolError(`${where}: the detail must be a string`);
  }
}

/** One piece of the chunk being assembled. */
type Piece = { start: number; end: number; data?: Uint8Array };

/** The reader's validity, with the engine's words about the full-read reason it asked for added. */
function recordedValidity(validity: ChangeSetValidity, task: DiskTask): ChangeSetValidity {
  const extra = task.fullReadDetail;
  if (extra === undefined || validity.kind !== 'full' || validity.reason !== task.fullReason) return validity;
  return { ...validity, detail: validity.detail === undefined ? extra : `${validity.detail}; ${extra}` };
}

/**
 * Runs one disk task: opens the reader on the snapshot, assembles the change set into chunks aligned to the disk,
 * hashes and compresses them in the worker pool, stores new chunks and commits the recovery point. Chunks the
 * change set does not touch are taken from the parent point by id, without reading them.
 *
 * A task that makes no progress for `stallTimeoutSeconds` (a source or a chunk worker that hangs) is stopped: its
 * signal is aborted, its backup session released at once (so it no longer holds the repository's lock), and the
 * source session closed in the background.
 *
 * @throws {@link SourceProtocolError} when the reader breaks its contract (unsorted, overlapping or out-of-bounds
 * changes, or a `readRange` answer longer or shorter than asked); {@link TaskStalledError} when the task makes no progress for `stallTimeoutSeconds`;
 * {@link InvalidSettingsError} for an invalid `stallTimeoutSeconds`; any error of the source, the chunk workers
 * or the repository. Nothing is committed when it throws.
 */
export async function runDiskTask(task: DiskTask, context: DiskTaskContext): Promise<DiskTaskResult> {
  const { platform, repository, pool, logger } = context;
  const reader = platform.changedBlockReader;
  checkReader(platform, task);
  // The bound of the calls that end a session (`commit`, `abandon`, `close`), which no signal or watchdog covers:
  // the request timeout, else the stall timeout. A reader that ignores its deadline is given up on past it.
  const endSeconds = () => context.requestTimeoutSeconds ?? stallTimeoutSeconds;
  const bounded = <T>(what: string, operation: () => Promise<T>) =>
    withDeadline(endSeconds(), what, () => operation());
  const callOptions = () => ({
    ...(context.requestTimeoutSeconds === undefined
      ? {}
      : { deadline: deadlineAfter(context.requestTimeoutSeconds) }),
    ...(logger === undefined ? {} : { logger }),
  });
  const stallTimeoutSeconds = resolveStallTimeoutSeconds(context.stallTimeoutSeconds, 'stallTimeoutSeconds');
  const started = performance.now();
  const progress = new ProgressTracker(
    { taskId: task.id, hostId: task.host.id, diskId: task.disk.id },
    context.onProgress,
  );
  progress.setState('reading');

  // The session's lock first: the parent is then read under it, so none of its chunks can be pruned before
  // the new point (which references them) commits.
  await using backup = await repository.beginBackup({
    platformId: task.platformId,
    hostId: task.host.id,
    diskId: task.disk.id,
    signal: context.signal,
  });
  const c = progress.counters;
  // Answers of reads that arrived ahead of their turn are progress too (the next chunk may wait for a slow read).
  let bytesAnswered = 0;
  const watchdog = new StallWatchdog({
    taskId: task.id,
    timeoutSeconds: stallTimeoutSeconds,
    progress: () => c.bytesRead + c.bytesDone + bytesAnswered,
    signal: context.signal,
  });
  // Declared after the backup session, so disposed before it: the watch ends, then the session is released.
  using _watch = { [Symbol.dispose]: () => watchdog.stop() };
  const { signal } = watchdog;
  const maxInFlight = pool.size * 2 + 2;
  // A list-then-read source's reads in flight, and the answers it may hold (in flight or waiting for their
  // turn): each at most one chunk, so memory stays bounded by the budget, whatever the disk's size.
  const readConcurrency =
    reader.mode === 'extents' ? Math.min(reader.maxConcurrentReads, MAX_CONCURRENT_READS) : 0;
  const readBufferChunks = Math.min(readConcurrency * READ_BUFFER_CHUNKS_PER_READ, MAX_CONCURRENT_READS);
  const buffers = {
    input: new BufferPool(task.chunkSize, maxInFlight + 4 + Math.max(readConcurrency, readBufferChunks)),
    output: new BufferPool(CHUNK_BLOB_HEADER_BYTES + zstdCompressBound(task.chunkSize), maxInFlight + 2),
  };
  // When the data is from: the engine's time just before the host snapshot, else now, as the read session opens.
  const snapshotAt = task.snapshotAt ?? new Date().toISOString();
  // Opening the source (a snapshot diff that may take a while to start) overlaps reading the parent.
  const diskSnapshot = task.snapshot?.disks.find((d) => d.diskId === task.disk.id);
  if (task.snapshot && !diskSnapshot) {
    throw new SourceProtocolError(
      `the snapshot ${task.snapshot.name} has no reference for disk ${task.disk.id}`,
    );
  }
  const opening = reader.open({
    disk: task.disk,
    ...(task.snapshot === undefined ? {} : { snapshot: task.snapshot, diskSnapshot }),
    ...(context.requestTimeoutSeconds === undefined
      ? {}
      : { requestTimeoutSeconds: context.requestTimeoutSeconds }),
    ...callOptions(),
    base: task.base,
    fullReason: task.fullReason,
    chunkSize: task.chunkSize,
    allocate: (length) => (length === task.chunkSize ? buffers.input.take() : new Uint8Array(length)),
    waiting: (resource) => {
      logger?.debug({ taskId: task.id, resource }, 'the read session waits for a shared resource');
      return watchdog.pause();
    },
    signal,
  });
  let adopted: Awaited<ReturnType<typeof backup.adoptPoint>> | undefined;
  let damaged = new Set<string>();
  let source: ChangedBlockSession;
  try {
    adopted =
      task.parentPointId === undefined
        ? undefined
        : await watchdog.guard(backup.adoptPoint(task.parentPointId, { signal }));
    if (adopted) damaged = await watchdog.guard(repository.damagedChunks({ signal }));
    source = await watchdog.guard(opening);
  } catch (error) {
    // A session that opened after all is abandoned (the task failed before it read) and closed, in the background.
    void opening.then(
      async (session) => {
        const cancelled = context.signal?.aborted === true;
        await bounded(`abandoning the read session of disk ${task.disk.id}`, () =>
          session.abandon(
            { kind: cancelled ? 'cancelled' : 'failed', error: cancelled ? context.signal?.reason : error },
            callOptions(),
          ),
        ).catch(() => undefined);
        await closeQuietly(session);
      },
      () => undefined,
    );
    throw error;
  }
  const session = source;
  /** Closes a session within the bound; a failure is logged, never thrown. */
  async function closeQuietly(what: ChangedBlockSession): Promise<void> {
    try {
      await bounded(`closing the read session of disk ${task.disk.id}`, () => what.close());
    } catch (error) {
      logger?.warn({ taskId: task.id, error: describeError(error) }, 'the read session failed to close');
    }
  }
  // The session's outcome, told exactly once: `commit` once the point is committed, else `abandon` as the task
  // ends. Neither uses the job's signal (a source must hear of a point committed just before an abort), each is
  // bounded by the request timeout.
  let told = false;
  let failure: unknown;
  const abandon = async () => {
    if (told) return;
    told = true;
    const reason: AbandonReason = {
      kind: context.signal?.aborted ? 'cancelled' : 'failed',
      error: context.signal?.aborted ? context.signal.reason : failure,
    };
    try {
      await bounded(`abandoning the read session of disk ${task.disk.id}`, () =>
        session.abandon(reason, callOptions()),
      );
    } catch (error) {
      logger?.warn({ taskId: task.id, error: describeError(error) }, 'the read session failed to abandon');
    }
  };
  // A stalled source may hang in abandon() and close() as it hung in reading: then both run in the background,
  // and the backup session (disposed next) releases its lock at once. Neither ever throws: a point committed
  // stays a success, and a task's own error is never hidden behind a close error.
  await using _closeSource = {
    [Symbol.asyncDispose]: async () => {
      const end = async () => {
        await abandon();
        await closeQuietly(session);
      };
      if (!watchdog.fired) return end();
      void end();
    },
  };
  const parent = adopted?.point;
  const parentIndex = adopted?.index;
  let assembler: ChunkAssembler;
  try {
    if (session.mode !== reader.mode) {
      throw new SourceProtocolError(
        `the reader of platform ${platform.id} declares mode ${reader.mode} but opened a ${String(session.mode)} session`,
      );
    }
    checkValidity(session.validity, task);
    assembler = new ChunkAssembler({
      task,
      session,
      backup,
      repository,
      pool,
      parent,
      parentIndex,
      damaged,
      progress,
      signal,
      buffers,
      maxInFlight,
      requestTimeoutSeconds: context.requestTimeoutSeconds,
    });
    const changes =
      session.mode === 'stream'
        ? session.changes({ signal })
        : orderedExtentReads(session.capacityBytes, {
            session,
            diskId: task.disk.id,
            chunkSize: task.chunkSize,
            blockSize: reader.blockSize,
            concurrency: readConcurrency,
            bufferBytes: readBufferChunks * task.chunkSize,
            onAnswer: (bytes) => {
              bytesAnswered += bytes;
            },
            signal,
            ...(context.requestTimeoutSeconds === undefined
              ? {}
              : { requestTimeoutSeconds: context.requestTimeoutSeconds }),
            ...(logger === undefined ? {} : { logger }),
            ...(context.sleep === undefined ? {} : { sleep: context.sleep }),
          });
    await watchdog.guard(assembler.run(changes));
  } catch (error) {
    failure = error;
    throw error;
  }
  watchdog.stop();

  progress.setState('committing');
  const seconds = (performance.now() - started) / 1000;
  const consistency = task.snapshot?.consistency ?? 'none';
  let point: RecoveryPoint;
  try {
    point = await backup.commit(
      {
        platformId: task.platformId,
        hostId: task.host.id,
        hostName: task.host.name,
        diskId: task.disk.id,
        diskName: task.disk.name,
        createdAt: new Date().toISOString(),
        snapshotAt,
        jobId: task.jobId,
        taskId: task.id,
        ...(task.snapshot === undefined ? {} : { snapshotName: task.snapshot.name }),
        capacityBytes: session.capacityBytes,
        chunkSize: task.chunkSize,
        parentId: parent?.id,
        validity: recordedValidity(session.validity, task),
        consistency,
        checkpoint: session.checkpoint(),
        stats: {
          bytesRead: c.bytesRead,
          bytesWritten: assembler.plainBytesWritten,
          bytesSkippedUnchanged: c.bytesSkippedUnchanged,
          bytesDeduplicated: c.bytesDeduplicated,
          bytesZero: c.bytesZero,
          seconds,
        },
      },
      assembler.index,
      { signal },
    );
  } catch (error) {
    failure = error;
    throw error;
  }
  // The point is durable: the source may now advance its own change tracking.
  told = true;
  let sourceCommitError: unknown;
  try {
    if (point.checkpoint === undefined)
      throw new SourceProtocolError('the committed point has no checkpoint');
    const checkpoint = point.checkpoint;
    await bounded(`committing the read session of disk ${task.disk.id}`, () =>
      session.commit({ pointId: point.id, checkpoint }, callOptions()),
    );
  } catch (error) {
    sourceCommitError = error;
    logger?.warn(
      { taskId: task.id, pointId: point.id, error: describeError(error) },
      'the read session failed to commit',
    );
  }
  progress.setState('done');
  return {
    taskId: task.id,
    pointId: point.id,
    validity: point.validity,
    consistency,
    ...(sourceCommitError === undefined ? {} : { sourceCommitError }),
    capacityBytes: point.capacityBytes,
    chunkCount: point.chunkCount,
    seconds,
    ...c,
  };
}

interface AssemblerOptions {
  task: DiskTask;
  session: ChangedBlockSession;
  backup: BackupSession;
  repository: Repository;
  pool: ChunkWorkerPool;
  parent: RecoveryPoint | undefined;
  parentIndex: PointIndex | undefined;
  damaged: Set<string>;
  progress: ProgressTracker;
  signal: AbortSignal | undefined;
  buffers: { input: BufferPool; output: BufferPool };
  maxInFlight: number;
  requestTimeoutSeconds: number | undefined;
}

/** Chunks checked after a chunk found stored during which every new chunk is probed: 32. */
const PROBE_AFTER_HIT = 32;
/** Without a recent hit, one new chunk in this many is probed, to notice when stored chunks start: 32. */
const PROBE_SAMPLE = 32;

/**
 * Whether a chunk is hashed and looked up in the store before it is compressed (a probe: one more round trip to
 * the worker) or hashed and compressed in one go. Probing pays where chunks are often stored already (a disk
 * cloned from a template another disk came from): those then cost their hash only. A backup of new data would
 * only pay the round trip, so after a run of chunks none of which was stored, one chunk in {@link PROBE_SAMPLE}
 * is probed, and every chunk for {@link PROBE_AFTER_HIT} checks after one that was.
 */
class PresenceProbe {
  private checks = 0;
  private lastHit = Number.NEGATIVE_INFINITY;

  probes(): boolean {
    return this.checks - this.lastHit <= PROBE_AFTER_HIT || this.checks % PROBE_SAMPLE === 0;
  }

  learned(held: boolean): void {
    if (held) this.lastHit = this.checks;
    this.checks += 1;
  }
}

/**
 * Turns a stream of changes into chunks, with a bounded number of chunks in flight, and builds the new point's
 * index segment by segment: a segment is written once every chunk below it is settled, so memory holds only the
 * few segments the window spans, whatever the disk's size; untouched segments stay the parent's.
 */
class ChunkAssembler {
  readonly index: PointIndexBuilder;
  chunksWritten = 0;
  /** Plain bytes of the chunks stored (the point's `stats.bytesWritten`). */
  plainBytesWritten = 0;
  private readonly chunkSize: number;
  private readonly capacity: number;
  private readonly chunkCount: number;
  private readonly validity: ChangeSetValidity;
  /** Whether untouched bytes keep the parent's content (else they are zeros). */
  private readonly baseIsParent: boolean;
  private readonly parentCapacity: number;
  /** Chunks being encoded and stored, by position. */
  private readonly inFlight = new Map<Promise<void>, number>();
  private readonly maxInFlight: number;
  private readonly presence = new PresenceProbe();
  private failure: unknown;
  private current = -1;
  /** Bytes of the chunks the change set touched (the others are the parent's, or zeros for a full read). */
  private touchedBytes = 0;
  /** Of those, bytes of positions whose parent chunk has the same length (those an incremental inherits). */
  private touchedShared = 0;
  private pieces: Piece[] = [];
  /** Chunks whose parent copy differs in length from the new chunk (resize): rebuilt unless touched. Sorted. */
  private readonly boundary: number[] = [];
  /** Segments below this one were handed to the index to write. */
  private flushedSegments = 0;
  /** Positions below this one no later change can touch (changes are sorted): where the current change starts. */
  private frontier = 0;

  constructor(private readonly o: AssemblerOptions) {
    this.chunkSize = o.task.chunkSize;
    this.capacity = o.session.capacityBytes;
    this.validity = o.session.validity;
    this.baseIsParent = this.validity.kind !== 'full' && o.parent !== undefined;
    if (this.validity.kind !== 'full' && o.parent === undefined) {
      throw new SourceProtocolError(
        `the reader of disk ${o.task.disk.id} returned an incremental change set but there is no parent point`,
      );
    }
    if (o.parent && o.parent.chunkSize !== this.chunkSize) {
      throw new SourceProtocolError(
        `chunk size ${this.chunkSize} differs from the parent's ${o.parent.chunkSize}`,
      );
    }
    this.parentCapacity = o.parent?.capacityBytes ?? 0;
    this.chunkCount = Math.ceil(this.capacity / this.chunkSize);
    this.index = o.backup.createIndex({
      capacityBytes: this.capacity,
      chunkSize: this.chunkSize,
      ...(o.parentIndex === undefined ? {} : { base: o.parentIndex, inherit: this.baseIsParent }),
    });
    this.maxInFlight = o.maxInFlight;
    o.progress.totalBytes = this.baseIsParent ? 0 : this.capacity;
    if (this.baseIsParent) {
      // Only the last chunk of either disk can differ in length (a resize): those positions are rebuilt.
      const shared = Math.min(this.chunkCount, o.parentIndex?.chunkCount ?? 0);
      for (const i of new Set([shared - 1, this.chunkCount - 1, (o.parentIndex?.chunkCount ?? 0) - 1])) {
        if (i >= 0 && i < shared && !this.sameLength(i)) this.boundary.push(i);
      }
      this.boundary.sort((a, b) => a - b);
    }
  }

  private chunkLength(i: number, capacity: number): number {
    return Math.max(0, Math.min(this.chunkSize, capacity - i * this.chunkSize));
  }

  /** Whether position `i` has a parent chunk of the same length (an incremental inherits it when untouched). */
  private sameLength(i: number): boolean {
    const parentCount = this.o.parentIndex?.chunkCount ?? 0;
    return i < parentCount && this.chunkLength(i, this.capacity) === this.chunkLength(i, this.parentCapacity);
  }

  /** Bytes an incremental inherits when nothing touches them. */
  private inheritableBytes(): number {
    const shared = Math.min(this.chunkCount, this.o.parentIndex?.chunkCount ?? 0);
    if (shared === 0) return 0;
    const last = shared - 1;
    return last * this.chunkSize + (this.sameLength(last) ? this.chunkLength(last, this.capacity) : 0);
  }

  async run(changes: AsyncIterable<Change>): Promise<void> {
    const { progress } = this.o;
    let end = 0;
    for await (const change of changes) {
      const length = change.kind === 'data' ? change.data.byteLength : change.length;
      if (!Number.isSafeInteger(change.offset) || change.offset < end || length <= 0) {
        throw new SourceProtocolError(
          `the reader yielded an unsorted, overlapping or empty change at offset ${change.offset} (previous end ${end})`,
        );
      }
      if (change.offset + length > this.capacity) {
        throw new SourceProtocolError(
          `the reader yielded a change ending at ${change.offset + length}, past the capacity ${this.capacity}`,
        );
      }
      end = change.offset + length;
      if (change.kind === 'data') progress.counters.bytesRead += length;
      if (this.baseIsParent) progress.totalBytes += length;
      await this.add(change);
      if (this.failure) throw this.failure;
    }
    if (this.current >= 0) await this.finish(this.current);
    while (this.boundary.length > 0) await this.finish(this.boundary[0]!);
    await Promise.all(this.inFlight.keys());
    if (this.failure) throw this.failure;
    const c = progress.counters;
    if (this.baseIsParent) {
      // Untouched chunks keep the parent's id (unchanged); past the parent's end they are zeros.
      const inherited = this.inheritableBytes() - this.touchedShared;
      c.bytesSkippedUnchanged += inherited;
      c.bytesZero += this.capacity - this.touchedBytes - inherited;
    } else {
      // In a full read, chunks no change touched are zeros: count them as such.
      c.bytesZero += this.capacity - this.touchedBytes;
    }
    c.bytesDone = Math.max(c.bytesDone, progress.totalBytes);
  }

  /** Finishes the boundary chunks before position `i` (their turn in disk order has come). */
  private async finishBoundaryBefore(i: number): Promise<void> {
    while (this.boundary.length > 0 && this.boundary[0]! < i && this.boundary[0] !== this.current) {
      await this.finish(this.boundary[0]!);
    }
  }

  /** Hands the index every segment below the lowest chunk not yet settled. */
  private async flushSettled(): Promise<void> {
    let low = Math.min(this.frontier, this.current >= 0 ? this.current : this.chunkCount);
    for (const position of this.inFlight.values()) low = Math.min(low, position);
    if (this.boundary.length > 0) low = Math.min(low, this.boundary[0]!);
    const segment = Math.floor(low / SEGMENT_CHUNKS);
    if (segment <= this.flushedSegments) return;
    this.flushedSegments = segment;
    await this.index.flushBelow(segment * SEGMENT_CHUNKS, { signal: this.o.signal });
  }

  private async add(change: Change): Promise<void> {
    const size = this.chunkSize;
    const changeEnd = change.offset + (change.kind === 'data' ? change.data.byteLength : change.length);
    let offset = change.offset;
    this.frontier = Math.floor(offset / size);
    while (offset < changeEnd) {
      const i = Math.floor(offset / size);
      if (change.kind === 'zero' && offset === i * size && i !== this.current) {
        // Whole chunks of a zero range (a hole): settled in bulk, without a piece per chunk.
        const to = changeEnd === this.capacity ? this.chunkCount : Math.floor(changeEnd / size);
        if (to > i) {
          if (this.current >= 0) await this.finish(this.current);
          await this.finishBoundaryBefore(i);
          await this.zeroRun(i, to);
          offset = Math.min(changeEnd, to * size);
          continue;
        }
      }
      if (i !== this.current) {
        if (this.current >= 0) await this.finish(this.current);
        await this.finishBoundaryBefore(i);
        this.current = i;
        this.pieces = [];
      }
      const pieceEnd = Math.min(changeEnd, (i + 1) * size);
      const piece: Piece = { start: offset - i * size, end: pieceEnd - i * size };
      if (change.kind === 'data') {
        piece.data = change.data.subarray(offset - change.offset, pieceEnd - change.offset);
      }
      this.pieces.push(piece);
      offset = pieceEnd;
    }
  }

  /** Positions `from` to `to - 1` are all-zero chunks. */
  private async zeroRun(from: number, to: number): Promise<void> {
    const bytes = Math.min(this.capacity, to * this.chunkSize) - from * this.chunkSize;
    const shared = Math.min(to, this.o.parentIndex?.chunkCount ?? 0);
    let sharedBytes = 0;
    if (this.baseIsParent && shared > from) {
      sharedBytes = Math.min(this.capacity, shared * this.chunkSize) - from * this.chunkSize;
      if (!this.sameLength(shared - 1)) sharedBytes -= this.chunkLength(shared - 1, this.capacity);
    }
    while (this.boundary.length > 0 && this.boundary[0]! >= from && this.boundary[0]! < to) {
      this.boundary.shift();
    }
    this.index.setZeroRange(from, to);
    this.touchedBytes += bytes;
    this.touchedShared += sharedBytes;
    const c = this.o.progress.counters;
    c.bytesZero += bytes;
    c.bytesDone += bytes;
    await this.flushSettled();
  }

  /** Completes chunk `i` from its pieces and the base, and hands it to the pool. */
  private async finish(i: number): Promise<void> {
    const pieces = i === this.current ? this.pieces : [];
    if (i === this.current) {
      this.current = -1;
      this.pieces = [];
    }
    const at = this.boundary.indexOf(i);
    if (at >= 0) this.boundary.splice(at, 1);
    const length = this.chunkLength(i, this.capacity);
    this.touchedBytes += length;
    if (this.baseIsParent && this.sameLength(i)) this.touchedShared += length;
    let covered = 0;
    let anyData = false;
    for (const p of pieces) {
      covered += p.end - p.start;
      if (p.data) anyData = true;
    }
    // A chunk the change set turns entirely into zeros needs no hashing.
    if (covered === length && !anyData) {
      this.index.setZero(i);
      this.o.progress.counters.bytesZero += length;
      this.o.progress.counters.bytesDone += length;
      await this.flushSettled();
      return;
    }
    while (this.inFlight.size >= this.maxInFlight) await Promise.race(this.inFlight.keys());
    const job = this.process(i, length, pieces, covered).catch((error: unknown) => {
      this.failure ??= error;
    });
    this.inFlight.set(job, i);
    void job.finally(() => this.inFlight.delete(job));
    await this.flushSettled();
  }

  private async process(i: number, length: number, pieces: Piece[], covered: number): Promise<void> {
    const { pool, backup, progress, signal } = this.o;
    let data: Uint8Array;
    const only = pieces.length === 1 ? pieces[0] : undefined;
    if (
      only?.data &&
      covered === length &&
      only.data.byteOffset === 0 &&
      only.data.byteLength === only.data.buffer.byteLength
    ) {
      data = only.data; // the reader's own buffer, exactly one chunk: transfer it without a copy
    } else {
      data = covered === length ? this.chunkBuffer(length) : await this.base(i, length);
      for (const p of pieces) {
        if (p.data) data.set(p.data, p.start);
        else data.fill(0, p.start, p.end);
      }
    }
    const { buffers } = this.o;
    // Over a store whose create-only write settles presence (S3), asking first would only add a request.
    const asks = !backup.putSettlesPresence;
    let encoded = await pool.encode(data, {
      parentHash: await this.parentHash(i, length),
      output: buffers.output.take(),
      headroom: CHUNK_BLOB_HEADER_BYTES,
      idKey: backup.chunkIdKey,
      probe: asks && this.presence.probes(),
    });
    let absent = false;
    if (encoded.kind === 'probed') {
      // Hashed, not compressed: a chunk the repository holds already (another disk cloned from the same
      // template, a block written back) costs its hash only.
      const input = encoded.returned.input ?? data;
      const held = await backup.hasChunk(encoded.hash, { signal });
      this.presence.learned(held);
      if (held) {
        this.index.setId(i, encoded.hash);
        buffers.input.give(encoded.returned.input);
        buffers.output.give(encoded.returned.output);
        progress.counters.bytesDeduplicated += length;
        progress.counters.bytesDone += length;
        progress.report();
        return;
      }
      absent = true;
      encoded = await pool.encode(input, {
        knownHash: encoded.hash,
        ...(encoded.returned.output === undefined ? {} : { output: encoded.returned.output }),
        headroom: CHUNK_BLOB_HEADER_BYTES,
        idKey: backup.chunkIdKey,
      });
    }
    buffers.input.give(encoded.returned.input);
    const c = progress.counters;
    if (encoded.kind === 'probed') {
      throw new Error(`the chunk worker answered a compression of chunk ${i} as a probe`);
    } else if (encoded.kind === 'zero') {
      this.index.setZero(i);
      c.bytesZero += length;
    } else if (encoded.kind === 'unchanged') {
      this.index.setId(i, encoded.hash);
      c.bytesSkippedUnchanged += length;
    } else {
      this.index.setId(i, encoded.hash);
      let held = false;
      if (asks && !absent) {
        held = await backup.hasChunk(encoded.hash, { signal });
        this.presence.learned(held);
      }
      const written =
        !held &&
        (await backup.putChunk(
          {
            hash: encoded.hash,
            codec: encoded.codec,
            payload: encoded.payload,
            plainLength: length,
            frameInPlace: true,
          },
          { signal },
        ));
      if (written) {
        c.bytesWritten += encoded.payload.byteLength;
        this.plainBytesWritten += length;
        this.chunksWritten++;
      } else {
        // Already held: found by hasChunk, known to the session, or taken when the create-only write came.
        c.bytesDeduplicated += length;
      }
    }
    buffers.output.give(encoded.returned.output); // the store is done with the payload
    c.bytesDone += length;
    progress.report();
  }

  /** The parent's id of chunk `i` when it has the same length and is healthy, to skip unchanged chunks. */
  private async parentHash(i: number, length: number): Promise<Uint8Array | undefined> {
    const { parentIndex, damaged, signal } = this.o;
    if (!parentIndex || i >= parentIndex.chunkCount) return undefined;
    if (this.chunkLength(i, this.o.parent?.capacityBytes ?? 0) !== length) return undefined;
    const id = await parentIndex.idAt(i, { signal });
    if (isZeroId(id)) return undefined;
    return damaged.has(chunkIdFromHash(id)) ? undefined : id;
  }

  /** A buffer for one chunk, recycled when it is a whole chunk; content undefined. */
  private chunkBuffer(length: number): Uint8Array {
    return length === this.chunkSize ? this.o.buffers.input.take() : new Uint8Array(length);
  }

  /** The base content of chunk `i`: the source's bytes, the parent's chunk, or zeros. */
  private async base(i: number, length: number): Promise<Uint8Array> {
    const { session, parentIndex, repository, progress, signal } = this.o;
    const out = this.chunkBuffer(length);
    if (!this.baseIsParent || !parentIndex || i >= parentIndex.chunkCount) return out.fill(0);
    const parentLength = this.chunkLength(i, this.parentCapacity);
    if (session.readRange) {
      const offset = i * this.chunkSize;
      const timeout = this.o.requestTimeoutSeconds;
      const bytes = await session.readRange(
        { offset, length },
        { signal, ...(timeout === undefined ? {} : { deadline: deadlineAfter(timeout) }) },
      );
      if (bytes.byteLength !== length) {
        // Padding a short answer with zeros or cutting a long one would store wrong bytes under a right hash.
        throw new SourceProtocolError(
          `the reader of disk ${this.o.task.disk.id} answered readRange at offset ${offset} with the wrong ` +
            `length: asked ${length} bytes, got ${bytes.byteLength}`,
        );
      }
      progress.counters.bytesRead += length;
      out.set(bytes);
      return out;
    }
    out.fill(0);
    if (parentLength === 0) return out;
    const parentId = await parentIndex.idAt(i, { signal });
    if (isZeroId(parentId)) return out;
    const parentBytes = await repository.readChunk(parentId, parentLength, { signal });
    out.set(parentBytes.subarray(0, Math.min(length, parentLength)));
    return out;
  }
}
