import { type BigIntStats, fstatSync } from 'node:fs';
import { type FileHandle, open, readFile, realpath } from 'node:fs/promises';
import {
  type AbandonReason,
  type CallOptions,
  type ChangedBlockReader,
  type ChangedExtent,
  type ChangeSetValidity,
  type Checkpoint,
  type CommittedPoint,
  type Extent,
  type ExtentReadSession,
  InvalidArgumentError,
  InvalidSettingsError,
  type Logger,
  NotFoundError,
  type OpenChangedBlocksOptions,
  PermissionError,
  parseCheckpointToken,
  type ReadRequest,
  type ReadResult,
  SourceProtocolError,
  TimeoutError,
} from '@drkit/core';
import { type NativeSeek, resolveNativeSeek } from './native-seek.js';

/**
 * The block size of the local-disk reader: 4 KiB, the page size and file system block size of nearly every Linux
 * system. Listed extents start and end on it (the last one may end at an unaligned capacity).
 */
export const LOCAL_DISK_BLOCK_SIZE = 4096;

/** How many reads the engine keeps in flight on a local disk: 4 `pread`s, enough to keep an NVMe queue busy. */
export const LOCAL_DISK_MAX_CONCURRENT_READS = 4;

/** Largest listed data extent the platform's `readSizeBytes` allows. @internal */
export const MAX_READ_SIZE_BYTES = 256 * 1024 * 1024;

/** A disk of a local-disk platform after validation: absolute path, ids resolved. @internal */
export interface LocalDiskSource {
  /** Position in the platform's `disks` option, to name the field in errors. */
  readonly index: number;
  readonly id: string;
  readonly name: string;
  /** Absolute path of the image file or block device. */
  readonly path: string;
}

/** @internal */
export interface LocalDiskChangedBlockReaderOptions {
  readonly disks: readonly LocalDiskSource[];
  /** Explicit largest listed data extent; default: the session's chunk size. */
  readonly readSizeBytes: number | undefined;
  /** Replaces the addon (tests of the fallback paths only); `null` acts as if it were missing. */
  readonly nativeSeek?: NativeSeek | null;
}

/**
 * How a session finds the holes of the disk:
 * - `seek-data`: with `lseek(SEEK_DATA / SEEK_HOLE)`; holes are not listed as data and not read (an incremental
 *   lists them as `zero` extents);
 * - `unsupported`: the filesystem does not support `SEEK_DATA` (`EINVAL`), so the whole disk is listed as data.
 *   Block devices answer `SEEK_DATA` with "all data" and are read in full either way;
 * - `no-addon`: the package's lseek addon is missing on this platform (see the README), so the whole disk is
 *   listed as data; a `DrkitWarning` with code `DRKIT_SEEK_DATA_UNAVAILABLE` was emitted once.
 */
export type LocalDiskHoleDetection = 'seek-data' | 'unsupported' | 'no-addon';

/**
 * A list-then-read session on one local disk image or block device, read live (there is no snapshot).
 *
 * `extents()` lists the allocated ranges as `data` extents of at most the read size (cut at multiples of it), found
 * with `SEEK_DATA` / `SEEK_HOLE` as it goes, so an 8 TiB sparse file holding 64 MiB costs a few `lseek`s per
 * allocated range and 64 MiB of reads, and its list is never held whole. A full read lists only the data (the
 * rest reads as zeros); an incremental (`superset`) read also lists every hole as a `zero` extent, so a range
 * trimmed or punched since the base reads as zeros. Extents are aligned to {@link LOCAL_DISK_BLOCK_SIZE} (a
 * file system with smaller blocks has its data ranges rounded out; the extra bytes are holes and read as
 * zeros). `read()` `pread`s exactly the bytes asked, into the engine's `allocate` buffers when it passed one,
 * several at once. The file stays open until `close()`: `read()` and `readRange()` answer until then, also
 * after the listing ended.
 *
 * Deadlines and timeouts: a `pread` of a local file or device is not a request that can go unanswered and cannot
 * be abandoned half way, so `requestTimeoutSeconds` does not apply (a hung device is the engine's stall
 * watchdog's case). A call started after its `deadline` rejects with a `TimeoutError`; one under way finishes.
 * Every call honours `signal` and rejects with `signal.reason`, unwrapped.
 */
export interface LocalDiskChangedBlockSession extends ExtentReadSession {
  /** Absolute path of the image or device, as configured. */
  readonly path: string;
  /** Whether holes are detected; when `unsupported` or `no-addon`, the whole disk is listed as data. */
  readonly holeDetection: LocalDiskHoleDetection;
  /**
   * The allocated ranges (and, for an incremental, the holes as `zero` extents), sorted, disjoint, aligned to
   * 4 KiB, found as the listing goes. Can be iterated once.
   *
   * @throws {@link @drkit/core!InvalidArgumentError} when called a second time or after `close()`;
   * {@link @drkit/core!SourceProtocolError} (retryable) when the disk shrank below the capacity measured at open.
   */
  extents(options?: CallOptions): AsyncIterable<ChangedExtent>;
  /**
   * Reads `request` from the disk, as it is now, into a buffer of the session's `allocate` when it was given one
   * (else a fresh buffer that owns its memory, transferable to a worker thread). No checksum: the bytes come from
   * the local kernel.
   *
   * @throws {@link @drkit/core!InvalidArgumentError} when the request is malformed, lies past the capacity, or
   * the session is closed; {@link @drkit/core!SourceProtocolError} (retryable) when the disk shrank below it while
   * it was read; {@link @drkit/core!TimeoutError} when called past its `deadline`.
   */
  read(request: ReadRequest, options?: CallOptions): Promise<ReadResult>;
  /**
   * Reads `extent` from the disk, as it is now, into a fresh buffer.
   *
   * @throws {@link @drkit/core!InvalidArgumentError} when the extent is malformed, lies past the capacity, or the
   * session is closed; {@link @drkit/core!SourceProtocolError} when the disk shrank below it while it was read.
   */
  readRange(extent: Extent, options?: CallOptions): Promise<Uint8Array>;
  /**
   * A no-op that ends the session's bookkeeping: a local file has no change tracking of its own, so there is
   * nothing to advance (every incremental reads every allocated range again). An agent that tracks changes with a
   * dirty-block bitmap would clear, here, the blocks this session read. Second calls are harmless.
   */
  commit(point: CommittedPoint, options?: CallOptions): Promise<void>;
  /**
   * A no-op, for the same reason: there is no tracking to keep. An agent with a dirty-block bitmap would keep its
   * bits here, so that the next backup reads those blocks again. Second calls are harmless.
   */
  abandon(reason: AbandonReason, options?: CallOptions): Promise<void>;
}

/** The {@link @drkit/core!ChangedBlockReader} of a local-disk platform: list-then-read, 4 KiB blocks, 4 reads in flight. */
export interface LocalDiskChangedBlockReader extends ChangedBlockReader {
  readonly mode: 'extents';
  readonly blockSize: typeof LOCAL_DISK_BLOCK_SIZE;
  readonly maxConcurrentReads: typeof LOCAL_DISK_MAX_CONCURRENT_READS;
  /**
   * Opens the disk's image or device for reading. Without `base` the change set is `full` (`fullReason`, or
   * `first-backup`); with a `base` of the same disk it is a `superset` (there is no change tracking: every
   * allocated extent is listed), or `full` with reason `disk-recreated` when the file or device was replaced, or
   * `checkpoint-invalid` when the base is not a checkpoint this source wrote for this disk (garbled, another
   * provider's, another disk's). `logger` gets a debug line when the session opens, when its listing ends and
   * when it closes (with counts), never one per read.
   *
   * @throws {@link @drkit/core!NotFoundError} when the disk is not one of the platform's or its path does not exist;
   * {@link @drkit/core!PermissionError} when it cannot be read; {@link @drkit/core!InvalidSettingsError} when the
   * path is not a regular file or a block device; {@link @drkit/core!InvalidArgumentError} when `chunkSize` is not
   * a positive multiple of 4096; {@link @drkit/core!TimeoutError} when called past its `deadline`. Rejects with
   * `signal.reason` when aborted.
   */
  open(options: OpenChangedBlocksOptions): Promise<LocalDiskChangedBlockSession>;
}

/** What a checkpoint token records. Serialized as JSON; never a secret. */
interface LocalDiskToken {
  readonly format: 'drkit-local-disk';
  readonly version: 1;
  /** `file:<st_dev>:<st_ino>` for an image, `block-device:<st_rdev>:<realpath>` for a device. */
  readonly identity: string;
  readonly realPath: string;
  readonly sizeBytes: number;
  readonly takenAt: string;
}

type LocalDiskType = 'file' | 'block-device';

/** An open image or device with what `fstat` and `lseek` say about it. @internal */
export interface OpenedLocalDisk {
  readonly handle: FileHandle;
  readonly type: LocalDiskType;
  readonly capacityBytes: number;
  readonly identity: string;
  readonly realPath: string;
}

/**
 * Opens a configured disk read-only, checks it is a regular file or a block device and measures it. The caller
 * owns the handle; it is closed here when anything after the open fails or the signal aborts.
 *
 * @throws {@link @drkit/core!NotFoundError}, {@link @drkit/core!PermissionError}, {@link @drkit/core!InvalidSettingsError}; `signal.reason`.
 * @internal
 */
export async function openLocalDisk(
  source: LocalDiskSource,
  options: { signal?: AbortSignal; nativeSeek?: NativeSeek | null } = {},
): Promise<OpenedLocalDisk> {
  const { signal } = options;
  signal?.throwIfAborted();
  let handle: FileHandle;
  try {
    handle = await open(source.path, 'r');
  } catch (error) {
    throw translateOpenError(error, source);
  }
  try {
    signal?.throwIfAborted();
    const stats: BigIntStats = await handle.stat({ bigint: true });
    let type: LocalDiskType;
    if (stats.isFile()) type = 'file';
    else if (stats.isBlockDevice()) type = 'block-device';
    else {
      throw new InvalidSettingsError(
        `disks[${source.index}].path`,
        `${source.path} is ${describeFileType(stats)}, not a disk image file or a block device: point it at one`,
      );
    }
    const realPath = await realpath(source.path);
    let capacityBytes: number;
    if (type === 'file') {
      capacityBytes = Number(stats.size);
    } else {
      // fstat reports 0 bytes for a block device; its end offset is its size (sysfs says it too, in sectors).
      const native = resolveNativeSeek(options.nativeSeek);
      capacityBytes = native
        ? native.seek(handle.fd, 0, native.SEEK_END)
        : await blockDeviceSizeFromSysfs(stats.rdev, source);
    }
    if (!Number.isSafeInteger(capacityBytes) || capacityBytes < 0) {
      throw new SourceProtocolError(`${source.path} reports an impossible size (${capacityBytes} bytes)`);
    }
    const identity =
      type === 'file' ? `file:${stats.dev}:${stats.ino}` : `block-device:${stats.rdev}:${realPath}`;
    signal?.throwIfAborted();
    return { handle, type, capacityBytes, identity, realPath };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/**
 * The size of a block device from `/sys/dev/block/MAJOR:MINOR/size` (512-byte sectors, whatever the device's
 * logical block size), for when the lseek addon is missing. Linux only.
 */
async function blockDeviceSizeFromSysfs(rdev: bigint, source: LocalDiskSource): Promise<number> {
  // glibc's encoding of dev_t (gnu_dev_major / gnu_dev_minor).
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  const path = `/sys/dev/block/${major}:${minor}/size`;
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    throw new SourceProtocolError(
      `disk ${source.id}: cannot size block device ${source.path} without the lseek addon: ${path} is not ` +
        'readable; install @drkit/provider-agent where its addon loads (see its README)',
      { cause },
    );
  }
  const sectors = Number(text.trim());
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(sectors * 512)) {
    throw new SourceProtocolError(
      `disk ${source.id}: ${path} holds ${JSON.stringify(text)}, not a sector count`,
    );
  }
  return sectors * 512;
}

/** Maps the errors of `open(2)` to drkit errors that say what to do; anything else is returned unchanged. */
function translateOpenError(error: unknown, source: LocalDiskSource): unknown {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  const field = `disks[${source.index}].path`;
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    return new NotFoundError(
      `disk ${source.id}: ${source.path} does not exist: create the image or attach the device, or correct ${field}`,
      { cause: error },
    );
  }
  if (code === 'EACCES' || code === 'EPERM') {
    return new PermissionError(
      `disk ${source.id}: cannot read ${source.path} (${code}): run drkit as a user allowed to read it ` +
        '(root, or a member of the "disk" group for a block device) or grant read permission on the file',
      { cause: error },
    );
  }
  return error;
}

function describeFileType(stats: BigIntStats): string {
  if (stats.isDirectory()) return 'a directory';
  if (stats.isCharacterDevice()) return 'a character device';
  if (stats.isFIFO()) return 'a FIFO';
  if (stats.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * Creates the reader of a local-disk platform's disks.
 *
 * @internal use {@link createLocalDiskPlatform}.
 */
export function createLocalDiskChangedBlockReader(
  options: LocalDiskChangedBlockReaderOptions,
): LocalDiskChangedBlockReader {
  const byId = new Map(options.disks.map((disk) => [disk.id, disk]));
  return {
    mode: 'extents',
    blockSize: LOCAL_DISK_BLOCK_SIZE,
    maxConcurrentReads: LOCAL_DISK_MAX_CONCURRENT_READS,
    async open(openOptions: OpenChangedBlocksOptions): Promise<LocalDiskChangedBlockSession> {
      const { disk, base, fullReason, signal, chunkSize, logger } = openOptions;
      signal?.throwIfAborted();
      checkDeadline(openOptions, `opening disk ${disk.id}`);
      const source = byId.get(disk.id);
      if (!source) {
        throw new NotFoundError(
          `disk ${disk.id} is not one of this local-disk platform's disks: add its path to the platform's disks`,
        );
      }
      if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0 || chunkSize % LOCAL_DISK_BLOCK_SIZE !== 0) {
        throw new InvalidArgumentError(
          `chunkSize must be a positive multiple of the reader's block size ${LOCAL_DISK_BLOCK_SIZE}, got ${String(chunkSize)}`,
        );
      }
      const opened = await openLocalDisk(source, {
        ...(signal ? { signal } : {}),
        ...(options.nativeSeek !== undefined ? { nativeSeek: options.nativeSeek } : {}),
      });
      try {
        const native = resolveNativeSeek(options.nativeSeek);
        const holeDetection = native ? probeHoleDetection(native, opened) : 'no-addon';
        const validity: ChangeSetValidity = base
          ? validityAgainst(base, source.id, opened)
          : { kind: 'full', reason: fullReason ?? 'first-backup' };
        const readSizeBytes = options.readSizeBytes ?? Math.min(chunkSize, MAX_READ_SIZE_BYTES);
        const session = new LocalDiskSession(source, opened, {
          native,
          holeDetection,
          validity,
          readSizeBytes,
          allocate: openOptions.allocate,
          logger,
        });
        logger?.debug(
          {
            diskId: source.id,
            path: source.path,
            capacityBytes: opened.capacityBytes,
            validity: validity.kind,
            ...(validity.kind === 'full' ? { reason: validity.reason } : {}),
            holeDetection,
            readSizeBytes,
          },
          'local disk session opened',
        );
        return session;
      } catch (error) {
        await opened.handle.close();
        throw error;
      }
    },
  };
}

/**
 * Rejects a call started past its `deadline` with a {@link TimeoutError}. A local call is short and cannot be cut
 * short once started, so this is all a deadline means here.
 *
 * @internal
 */
export function checkDeadline(options: CallOptions, what: string): void {
  const { deadline } = options;
  if (deadline !== undefined && Date.now() > deadline) {
    throw new TimeoutError(`${what} was called after its deadline ${new Date(deadline).toISOString()}`);
  }
}

/** Whether `SEEK_DATA` works here: `EINVAL` means the filesystem does not support it. */
function probeHoleDetection(native: NativeSeek, opened: OpenedLocalDisk): LocalDiskHoleDetection {
  if (native.SEEK_DATA < 0 || native.SEEK_HOLE < 0) return 'unsupported';
  try {
    native.seek(opened.handle.fd, 0, native.SEEK_DATA);
    return 'seek-data';
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EINVAL') return 'unsupported';
    throw error;
  }
}

function validityAgainst(base: Checkpoint, diskId: string, opened: OpenedLocalDisk): ChangeSetValidity {
  if (base.diskId !== diskId) {
    return {
      kind: 'full',
      reason: 'checkpoint-invalid',
      detail: `the base checkpoint belongs to disk ${base.diskId}, not ${diskId}; reading in full`,
    };
  }
  const token = parseToken(base.token);
  if (!token) {
    return {
      kind: 'full',
      reason: 'checkpoint-invalid',
      detail: 'the base checkpoint was not written by this version of the local-disk source; reading in full',
    };
  }
  if (token.identity !== opened.identity) {
    return {
      kind: 'full',
      reason: 'disk-recreated',
      detail: `${opened.realPath} is now ${opened.identity}, the base checkpoint recorded ${token.identity} (${token.realPath})`,
    };
  }
  return { kind: 'superset' };
}

function parseToken(text: string): LocalDiskToken | undefined {
  const token = parseCheckpointToken(text, 'drkit-local-disk', 1, ['identity', 'realPath']);
  return token as LocalDiskToken | undefined;
}

const alignDown = (offset: number) => Math.floor(offset / LOCAL_DISK_BLOCK_SIZE) * LOCAL_DISK_BLOCK_SIZE;
const alignUp = (offset: number) => Math.ceil(offset / LOCAL_DISK_BLOCK_SIZE) * LOCAL_DISK_BLOCK_SIZE;

class LocalDiskSession implements LocalDiskChangedBlockSession {
  readonly mode = 'extents';
  readonly path: string;
  readonly capacityBytes: number;
  readonly validity: ChangeSetValidity;
  readonly holeDetection: LocalDiskHoleDetection;
  readonly #source: LocalDiskSource;
  readonly #opened: OpenedLocalDisk;
  readonly #native: NativeSeek | undefined;
  readonly #readSizeBytes: number;
  readonly #allocate: ((length: number) => Uint8Array) | undefined;
  readonly #logger: Logger | undefined;
  readonly #openedAt: string;
  #listed = false;
  #closed = false;
  #closing: Promise<void> | undefined;
  #outcome: 'committed' | 'abandoned' | undefined;
  #reads = 0;
  #bytesRead = 0;

  constructor(
    source: LocalDiskSource,
    opened: OpenedLocalDisk,
    settings: {
      native: NativeSeek | undefined;
      holeDetection: LocalDiskHoleDetection;
      validity: ChangeSetValidity;
      readSizeBytes: number;
      allocate?: ((length: number) => Uint8Array) | undefined;
      logger?: Logger | undefined;
    },
  ) {
    this.#source = source;
    this.#opened = opened;
    this.#native = settings.native;
    this.#readSizeBytes = settings.readSizeBytes;
    this.#allocate = settings.allocate;
    this.#logger = settings.logger;
    this.#openedAt = new Date().toISOString();
    this.path = source.path;
    this.capacityBytes = opened.capacityBytes;
    this.validity = settings.validity;
    this.holeDetection = settings.holeDetection;
  }

  extents(options: CallOptions = {}): AsyncIterable<ChangedExtent> {
    return this.#extents(options);
  }

  async *#extents(options: CallOptions): AsyncGenerator<ChangedExtent> {
    if (this.#listed) {
      throw new InvalidArgumentError(
        `extents() of disk ${this.#source.id} was already listed: open a new session to list it again`,
      );
    }
    this.#listed = true;
    const { signal } = options;
    const logger = options.logger ?? this.#logger;
    const counts = { dataExtents: 0, zeroExtents: 0, dataBytes: 0, zeroBytes: 0 };
    let complete = false;
    try {
      for (const extent of this.#plan()) {
        signal?.throwIfAborted();
        checkDeadline(options, `listing the extents of disk ${this.#source.id}`);
        this.#assertOpen();
        if (extent.kind === 'data') {
          counts.dataExtents++;
          counts.dataBytes += extent.length;
        } else {
          counts.zeroExtents++;
          counts.zeroBytes += extent.length;
        }
        yield extent;
      }
      complete = true;
    } finally {
      logger?.debug({ diskId: this.#source.id, ...counts, complete }, 'local disk extents listed');
    }
  }

  /**
   * The extents, lazily: holes from `SEEK_DATA` / `SEEK_HOLE`, data rounded out to 4 KiB and cut at multiples of
   * the read size, holes listed as zeros only for an incremental. Clamped to the capacity measured at open, so a
   * disk that grows meanwhile is read up to that size.
   */
  *#plan(): Generator<ChangedExtent> {
    const capacity = this.capacityBytes;
    const readSize = this.#readSizeBytes;
    const overBase = this.validity.kind !== 'full';
    let position = 0;
    while (position < capacity) {
      // The data's own start (maybe off the 4 KiB grid), and where its extent starts on the grid.
      const next = this.#nextData(position);
      const dataStart = next >= capacity ? capacity : Math.max(position, alignDown(next));
      if (dataStart > position) {
        if (overBase) yield { kind: 'zero', offset: position, length: dataStart - position };
        position = dataStart;
        if (position >= capacity) return;
      }
      // The hole after the data, asked from the data itself: the grid's start may lie in the hole before it.
      const dataEnd = Math.min(capacity, alignUp(this.#nextHole(Math.max(next, position))));
      while (position < dataEnd) {
        const pieceEnd = Math.min(dataEnd, (Math.floor(position / readSize) + 1) * readSize);
        yield { kind: 'data', offset: position, length: pieceEnd - position };
        position = pieceEnd;
      }
    }
  }

  /** First byte of data at or after `position`, or the capacity when only a hole follows. */
  #nextData(position: number): number {
    const native = this.holeDetection === 'seek-data' ? this.#native : undefined;
    if (!native) return position;
    this.#assertOpen();
    const offset = native.seek(this.#opened.handle.fd, position, native.SEEK_DATA);
    if (offset < 0) {
      // ENXIO: a hole up to the end of the file, or a file that is now shorter than at open.
      this.#assertNotShrunk(position);
      return this.capacityBytes;
    }
    if (offset >= this.capacityBytes) return this.capacityBytes;
    // Only a concurrent writer can make it go backwards; never step back.
    return Math.max(offset, position);
  }

  /** End of the data that starts at `position` (the next hole), at most the capacity. */
  #nextHole(position: number): number {
    const native = this.holeDetection === 'seek-data' ? this.#native : undefined;
    if (!native) return this.capacityBytes;
    this.#assertOpen();
    const offset = native.seek(this.#opened.handle.fd, position, native.SEEK_HOLE);
    // A hole at or before `position` (or none) can only come from a concurrent truncate: list the rest as data,
    // which is always correct, and let a short read report a disk that shrank.
    if (offset <= position || offset > this.capacityBytes) return this.capacityBytes;
    return offset;
  }

  /** Throws when the file is now shorter than the capacity measured at open. */
  #assertNotShrunk(position: number): void {
    if (this.#opened.type !== 'file') return;
    const size = fstatSync(this.#opened.handle.fd).size;
    if (size < this.capacityBytes) throw this.#shrunkError(Math.max(position, size));
  }

  #shrunkError(at: number): SourceProtocolError {
    return new SourceProtocolError(
      `${this.path} ended at byte ${at} while it was read, but measured ${this.capacityBytes} bytes when the ` +
        'session opened: the disk shrank during the backup; back it up again while it is quiet',
      { retryable: true },
    );
  }

  async read(request: ReadRequest, options: CallOptions = {}): Promise<ReadResult> {
    options.signal?.throwIfAborted();
    checkDeadline(options, `reading disk ${this.#source.id}`);
    this.#checkRange(request, 'read');
    const data = await this.#readExactly(request.offset, request.length, this.#allocate);
    options.signal?.throwIfAborted();
    this.#reads++;
    this.#bytesRead += request.length;
    return { data };
  }

  async readRange(extent: Extent, options: CallOptions = {}): Promise<Uint8Array> {
    options.signal?.throwIfAborted();
    checkDeadline(options, `reading a range of disk ${this.#source.id}`);
    this.#checkRange(extent, 'readRange');
    const data = await this.#readExactly(extent.offset, extent.length);
    options.signal?.throwIfAborted();
    return data;
  }

  #checkRange(extent: Extent, what: string): void {
    this.#assertOpen();
    const { offset, length } = extent;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0) {
      throw new InvalidArgumentError(`${what}: malformed extent (offset ${offset}, length ${length})`);
    }
    if (offset + length > this.capacityBytes) {
      throw new InvalidArgumentError(
        `${what}: extent ends at ${offset + length}, past the disk's capacity of ${this.capacityBytes} bytes`,
      );
    }
  }

  /**
   * Reads `length` bytes at `offset` into a buffer that owns its `ArrayBuffer` (transferable): the consumer's
   * `allocate` when it gave one, else a new one.
   */
  async #readExactly(
    offset: number,
    length: number,
    allocate?: (length: number) => Uint8Array,
  ): Promise<Uint8Array> {
    // Not from Buffer's shared pool: the consumer may transfer the ArrayBuffer to a worker thread.
    const buffer = allocate ? allocate(length).subarray(0, length) : Buffer.allocUnsafeSlow(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.#opened.handle.read(buffer, done, length - done, offset + done);
      if (bytesRead === 0) throw this.#shrunkError(offset + done);
      done += bytesRead;
    }
    return new Uint8Array(buffer.buffer, buffer.byteOffset, length);
  }

  checkpoint(): Checkpoint {
    const token: LocalDiskToken = {
      format: 'drkit-local-disk',
      version: 1,
      identity: this.#opened.identity,
      realPath: this.#opened.realPath,
      sizeBytes: this.capacityBytes,
      takenAt: this.#openedAt,
    };
    return {
      diskId: this.#source.id,
      token: JSON.stringify(token),
      capacityBytes: this.capacityBytes,
      createdAt: this.#openedAt,
    };
  }

  async commit(_point: CommittedPoint, _options?: CallOptions): Promise<void> {
    this.#outcome ??= 'committed';
  }

  async abandon(_reason: AbandonReason, _options?: CallOptions): Promise<void> {
    this.#outcome ??= 'abandoned';
  }

  #assertOpen(): void {
    if (this.#closed) {
      throw new InvalidArgumentError(`the session of disk ${this.#source.id} is closed: open a new one`);
    }
  }

  close(): Promise<void> {
    if (!this.#closing) {
      this.#closed = true;
      this.#logger?.debug(
        {
          diskId: this.#source.id,
          reads: this.#reads,
          bytesRead: this.#bytesRead,
          outcome: this.#outcome ?? 'none',
        },
        'local disk session closed',
      );
      // FileHandle.close waits for reads still in flight, so the descriptor is never reused under them.
      this.#closing = this.#opened.handle.close();
    }
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
