import { type BigIntStats, fstatSync } from 'node:fs';
import { type FileHandle, open, readFile, realpath } from 'node:fs/promises';
import {
  type CallOptions,
  type Change,
  type ChangedBlockReader,
  type ChangedBlockSession,
  type ChangeSetValidity,
  type Checkpoint,
  type Extent,
  InvalidArgumentError,
  InvalidSettingsError,
  NotFoundError,
  type OpenChangedBlocksOptions,
  PermissionError,
  parseCheckpointToken,
  SourceProtocolError,
} from '@drkit/core';
import { type NativeSeek, resolveNativeSeek } from './native-seek.js';

/** Default largest data change: 4 MiB, large sequential reads for a full scan. */
export const DEFAULT_READ_SIZE_BYTES = 4 * 1024 * 1024;

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
  /** Explicit read size; default: the engine's chunk size when it is a multiple of 4096, else 4 MiB. */
  readonly readSizeBytes: number | undefined;
  /** Replaces the addon (tests of the fallback paths only); `null` acts as if it were missing. */
  readonly nativeSeek?: NativeSeek | null;
}

/**
 * How a session finds the holes of the disk:
 * - `seek-data`: with `lseek(SEEK_DATA / SEEK_HOLE)`; holes become zero changes and are not read;
 * - `unsupported`: the filesystem does not support `SEEK_DATA` (`EINVAL`), so the whole disk is read as data.
 *   Block devices answer `SEEK_DATA` with "all data" and are read in full either way;
 * - `no-addon`: the package's lseek addon is missing on this platform (see the README), so the whole disk is read
 *   as data; a `DrkitWarning` with code `DRKIT_SEEK_DATA_UNAVAILABLE` was emitted once.
 */
export type LocalDiskHoleDetection = 'seek-data' | 'unsupported' | 'no-addon';

/**
 * A read of one local disk image or block device. Its changes cover `[0, capacityBytes)` exactly: every
 * allocated extent as `data` changes of at most the platform's read size (cut at multiples of it), every hole
 * as a `zero` change. `changes()` can be iterated once; the file is closed when that iteration ends, also when
 * the consumer breaks out of it or it throws.
 */
export interface LocalDiskChangedBlockSession extends ChangedBlockSession {
  /** Absolute path of the image or device, as configured. */
  readonly path: string;
  /** Whether holes are detected; when `unsupported` or `no-addon`, the whole disk reads as data. */
  readonly holeDetection: LocalDiskHoleDetection;
  /**
   * Reads `extent` from the disk, as it is now (there is no snapshot).
   *
   * @throws {@link @drkit/core!InvalidArgumentError} when the extent is malformed, lies past the capacity, or the session is
   * closed; {@link @drkit/core!SourceProtocolError} when the disk shrank below it while it was read.
   */
  readRange(extent: Extent, options?: CallOptions): Promise<Uint8Array>;
}

/** The {@link @drkit/core!ChangedBlockReader} of a local-disk platform. */
export interface LocalDiskChangedBlockReader extends ChangedBlockReader {
  /**
   * Opens the disk's image or device for reading. Without `base` the change set is `full` (`fullReason`, or
   * `first-backup`); with a `base` of the same disk it is a `superset` (there is no change tracking: every
   * allocated extent is read), or `full` with reason `disk-recreated` when the file or device was replaced.
   *
   * @throws {@link @drkit/core!NotFoundError} when the disk is not one of the platform's or its path does not exist;
   * {@link @drkit/core!PermissionError} when it cannot be read; {@link @drkit/core!InvalidSettingsError} when the path is not a regular
   * file or a block device; {@link @drkit/core!InvalidArgumentError} when `base` belongs to another disk. Rejects with
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
    async open(openOptions: OpenChangedBlocksOptions): Promise<LocalDiskChangedBlockSession> {
      const { disk, base, fullReason, signal } = openOptions;
      signal?.throwIfAborted();
      const source = byId.get(disk.id);
      if (!source) {
        throw new NotFoundError(
          `disk ${disk.id} is not one of this local-disk platform's disks: add its path to the platform's disks`,
        );
      }
      if (base && base.diskId !== disk.id) {
        throw new InvalidArgumentError(
          `the base checkpoint belongs to disk ${base.diskId}, not ${disk.id}: pass the checkpoint of this disk`,
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
          ? validityAgainst(base, opened)
          : { kind: 'full', reason: fullReason ?? 'first-backup' };
        return new LocalDiskSession(source, opened, {
          native,
          holeDetection,
          validity,
          readSizeBytes: options.readSizeBytes ?? readSizeFor(openOptions.chunkSize),
          allocate: openOptions.allocate,
        });
      } catch (error) {
        await opened.handle.close();
        throw error;
      }
    },
  };
}

/** The engine's chunk size as the read size when it is a usable one (a multiple of 4096 up to 256 MiB). */
function readSizeFor(chunkSize: number | undefined): number {
  if (chunkSize !== undefined && Number.isSafeInteger(chunkSize) && chunkSize > 0 && chunkSize % 4096 === 0) {
    return Math.min(chunkSize, 256 * 1024 * 1024);
  }
  return DEFAULT_READ_SIZE_BYTES;
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

function validityAgainst(base: Checkpoint, opened: OpenedLocalDisk): ChangeSetValidity {
  const token = parseToken(base.token);
  if (!token) {
    return {
      kind: 'full',
      reason: 'tracking-reset',
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

/** One planned change: a hole, or a piece of allocated data still to read. */
type PlannedChange =
  | { readonly kind: 'zero'; readonly offset: number; readonly length: number }
  | { readonly kind: 'data'; readonly offset: number; readonly length: number };

class LocalDiskSession implements LocalDiskChangedBlockSession {
  readonly path: string;
  readonly capacityBytes: number;
  readonly validity: ChangeSetValidity;
  readonly holeDetection: LocalDiskHoleDetection;
  readonly #source: LocalDiskSource;
  readonly #opened: OpenedLocalDisk;
  readonly #native: NativeSeek | undefined;
  readonly #readSizeBytes: number;
  readonly #allocate: ((length: number) => Uint8Array) | undefined;
  readonly #openedAt: string;
  #iterated = false;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(
    source: LocalDiskSource,
    opened: OpenedLocalDisk,
    settings: {
      native: NativeSeek | undefined;
      holeDetection: LocalDiskHoleDetection;
      validity: ChangeSetValidity;
      readSizeBytes: number;
      allocate?: ((length: number) => Uint8Array) | undefined;
    },
  ) {
    this.#source = source;
    this.#opened = opened;
    this.#native = settings.native;
    this.#readSizeBytes = settings.readSizeBytes;
    this.#allocate = settings.allocate;
    this.#openedAt = new Date().toISOString();
    this.path = source.path;
    this.capacityBytes = opened.capacityBytes;
    this.validity = settings.validity;
    this.holeDetection = settings.holeDetection;
  }

  changes(options: CallOptions = {}): AsyncIterable<Change> {
    return this.#changes(options.signal);
  }

  async *#changes(signal: AbortSignal | undefined): AsyncGenerator<Change> {
    if (this.#iterated) {
      throw new InvalidArgumentError(
        `changes() of disk ${this.#source.id} was already iterated: open a new session to read it again`,
      );
    }
    this.#iterated = true;
    // Reads run one piece ahead of the consumer, so the disk is busy while the consumer hashes the last piece.
    // At most two buffers are in flight besides the ones the consumer holds.
    let inFlight: Promise<Uint8Array> | undefined;
    try {
      const plan = this.#plan();
      const start = (change: PlannedChange | undefined): Promise<Uint8Array> | undefined => {
        if (change?.kind !== 'data') return undefined;
        const promise = this.#readExactly(change.offset, change.length, this.#allocate);
        // Handled below when awaited; this only keeps an abandoned read from becoming an unhandled rejection.
        promise.catch(() => {});
        return promise;
      };
      signal?.throwIfAborted();
      let current = plan.next();
      inFlight = current.done ? undefined : start(current.value);
      while (!current.done) {
        signal?.throwIfAborted();
        this.#assertOpen();
        const change = current.value;
        const read = inFlight;
        current = plan.next();
        inFlight = current.done ? undefined : start(current.value);
        if (change.kind === 'zero') {
          yield { kind: 'zero', offset: change.offset, length: change.length };
        } else {
          const data = await read!;
          signal?.throwIfAborted();
          yield { kind: 'data', offset: change.offset, data };
        }
      }
    } finally {
      await this.close();
    }
  }

  /**
   * The changes to produce, lazily: holes from `SEEK_DATA` / `SEEK_HOLE`, data cut at multiples of the read
   * size. Clamped to the capacity measured at open, so a disk that grows meanwhile is read up to that size.
   */
  *#plan(): Generator<PlannedChange> {
    const capacity = this.capacityBytes;
    const readSize = this.#readSizeBytes;
    let position = 0;
    while (position < capacity) {
      const dataStart = this.#nextData(position);
      if (dataStart > position) {
        yield { kind: 'zero', offset: position, length: dataStart - position };
        position = dataStart;
        if (position >= capacity) return;
      }
      const dataEnd = this.#nextHole(position);
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
    // A hole at or before `position` (or none) can only come from a concurrent truncate: read the rest as data,
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

  /**
   * Reads `length` bytes at `offset` into a buffer that owns its `ArrayBuffer` (transferable): the consumer's
   * `allocate` when it gave one, else a new one.
   */
  async #readExactly(
    offset: number,
    length: number,
    allocate?: (length: number) => Uint8Array,
  ): Promise<Uint8Array> {
    this.#assertOpen();
    // Not from Buffer's shared pool: the consumer may transfer the ArrayBuffer to a worker thread.
    const buffer = allocate ? allocate(length) : Buffer.allocUnsafeSlow(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.#opened.handle.read(buffer, done, length - done, offset + done);
      if (bytesRead === 0) throw this.#shrunkError(offset + done);
      done += bytesRead;
    }
    return new Uint8Array(buffer.buffer, buffer.byteOffset, length);
  }

  async readRange(extent: Extent, options: CallOptions = {}): Promise<Uint8Array> {
    options.signal?.throwIfAborted();
    const { offset, length } = extent;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0) {
      throw new InvalidArgumentError(`readRange: malformed extent (offset ${offset}, length ${length})`);
    }
    if (offset + length > this.capacityBytes) {
      throw new InvalidArgumentError(
        `readRange: extent ends at ${offset + length}, past the disk's capacity of ${this.capacityBytes} bytes`,
      );
    }
    const data = await this.#readExactly(offset, length);
    options.signal?.throwIfAborted();
    return data;
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

  #assertOpen(): void {
    if (this.#closed) {
      throw new InvalidArgumentError(`the session of disk ${this.#source.id} is closed: open a new one`);
    }
  }

  close(): Promise<void> {
    this.#closed = true;
    // FileHandle.close waits for reads still in flight, so the descriptor is never reused under them.
    this.#closing ??= this.#opened.handle.close();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
