import { hostname } from 'node:os';
import { resolve } from 'node:path';
import {
  abnormalStatus,
  type CallOptions,
  DrkitError,
  type Host,
  InvalidSettingsError,
  type Platform,
  type PlatformCapabilities,
  type PlatformStatus,
} from '@drkit/core';
import {
  checkDeadline,
  createLocalDiskChangedBlockReader,
  type LocalDiskChangedBlockReader,
  type LocalDiskSource,
  MAX_READ_SIZE_BYTES,
  openLocalDisk,
} from './local-disk-changed-block-reader.js';
import type { NativeSeek } from './native-seek.js';

/** One disk of a local-disk platform: a raw disk image file or a block device of this machine. */
export interface LocalDiskOptions {
  /** Path of a raw image file (sparse or not) or a block device (`/dev/sdb`, `/dev/vg0/data`, `/dev/loop3`). */
  readonly path: string;
  /** Stable identity of the disk, recorded in its recovery points. Default: the absolute path. */
  readonly id?: string;
  /** Human-readable name. Default: the absolute path. */
  readonly name?: string;
}

/** Settings of {@link createLocalDiskPlatform}. */
export interface LocalDiskPlatformOptions {
  /**
   * Identity of the platform, unique among the platforms of one engine and chosen by you (`local`, `lab-host-3`):
   * points are filed under it, so changing it restarts every disk's history. Required; there is no default,
   * because one derived from the host name would change with it.
   */
  readonly id: string;
  /** Identity of the one host the platform lists. Default: `os.hostname()`. */
  readonly hostId?: string;
  /** Name of the host. Default: `os.hostname()`. */
  readonly hostName?: string;
  /** The disks to protect, at least one; ids and paths must be unique. */
  readonly disks: readonly LocalDiskOptions[];
  /**
   * Largest data extent a session lists, in bytes; data is also cut at multiples of it, so that no read spans two.
   * A multiple of 4096 from 4 KiB to 256 MiB. Default: the session's chunk size (each read is then one chunk and
   * reaches the hashing threads without a copy).
   */
  readonly readSizeBytes?: number;
}

/** A {@link @drkit/core!Platform} over local disk images and block devices. */
export interface LocalDiskPlatform extends Platform {
  readonly kind: 'local';
  readonly capabilities: PlatformCapabilities & {
    readonly snapshots: 'none';
    readonly quiesce: false;
    readonly changeTracking: 'superset';
  };
  readonly changedBlockReader: LocalDiskChangedBlockReader;
}

/**
 * Creates a platform (provider specification v2) whose one host is this machine and whose disks are raw image
 * files or block devices. There is no change tracking and no snapshot (`snapshots: 'none'`, `quiesce: false`):
 * every backup lists the allocated extents of each disk (holes are found with `SEEK_DATA` / `SEEK_HOLE` and not
 * read) and the engine reads them, four at a time, so an incremental is a `superset`; the engine keeps only the
 * chunks whose hash changed. Disks are read live: a point is crash-consistent only if the disk is quiet while it
 * is read (unmounted, or a filesystem or LVM snapshot).
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming the field (`id`, `disks[1].path`) when the options are
 * invalid.
 *
 * @example
 * ```ts
 * import { createLocalDiskPlatform } from '@drkit/provider-agent';
 *
 * const platform = createLocalDiskPlatform({ id: 'local', disks: [{ path: '/var/lib/images/vm1.raw', id: 'vm1-root' }] });
 * console.log(await platform.verify()); // { status: 'normal', hostCount: 1, ... }
 * for await (const host of platform.hosts()) {
 *   const disk = host.disks[0]!;
 *   await using session = await platform.changedBlockReader.open({ disk, chunkSize: 1024 * 1024 });
 *   for await (const extent of session.extents()) {
 *     if (extent.kind === 'data') console.log(extent.offset, (await session.read(extent)).data.length);
 *   }
 * }
 * ```
 */
export function createLocalDiskPlatform(options: LocalDiskPlatformOptions): LocalDiskPlatform {
  return createLocalDiskPlatformWith(options, {});
}

/** {@link createLocalDiskPlatform} with a replaceable addon, for tests of fallback paths. @internal */
export function createLocalDiskPlatformWith(
  options: LocalDiskPlatformOptions,
  internals: { nativeSeek?: NativeSeek | null },
): LocalDiskPlatform {
  const settings = validateOptions(options);
  const { sources, readSizeBytes } = settings;
  const localHostName = settings.hostId === undefined || settings.hostName === undefined ? hostname() : '';
  const hostId = settings.hostId ?? localHostName;
  const hostName = settings.hostName ?? localHostName;
  const platformId = settings.id;
  const seekOption = internals.nativeSeek !== undefined ? { nativeSeek: internals.nativeSeek } : {};
  const changedBlockReader = createLocalDiskChangedBlockReader({
    disks: sources,
    readSizeBytes,
    ...seekOption,
  });

  async function verify(callOptions: CallOptions = {}): Promise<PlatformStatus> {
    const { signal } = callOptions;
    signal?.throwIfAborted();
    checkDeadline(callOptions, 'verifying the local-disk platform');
    for (const source of sources) {
      try {
        const opened = await openLocalDisk(source, { ...(signal ? { signal } : {}), ...seekOption });
        await opened.handle.close();
      } catch (error) {
        // A drkit error already names the disk; a bare system error gets the context.
        const prefix = DrkitError.isInstance(error)
          ? undefined
          : `disk ${source.id}: cannot open ${source.path}`;
        return abnormalStatus(error, { ...(signal ? { signal } : {}), ...(prefix ? { prefix } : {}) });
      }
    }
    return { status: 'normal', hostCount: 1, checkedAt: new Date().toISOString() };
  }

  async function* hosts(callOptions: CallOptions = {}): AsyncGenerator<Host> {
    const { signal } = callOptions;
    signal?.throwIfAborted();
    checkDeadline(callOptions, 'listing the hosts of the local-disk platform');
    const disks = [];
    for (const source of sources) {
      const opened = await openLocalDisk(source, { ...(signal ? { signal } : {}), ...seekOption });
      await opened.handle.close();
      disks.push({
        id: source.id,
        hostId,
        name: source.name,
        capacityBytes: opened.capacityBytes,
        attributes: { path: source.path, type: opened.type },
      });
    }
    signal?.throwIfAborted();
    yield { id: hostId, name: hostName, platformId, disks, attributes: { os: process.platform } };
  }

  return {
    specificationVersion: 'v2',
    id: platformId,
    kind: 'local',
    capabilities: {
      snapshots: 'none',
      quiesce: false,
      changeTracking: 'superset',
      retainsSnapshotAsBase: false,
    },
    changedBlockReader,
    verify,
    hosts,
  };
}

interface ValidatedOptions {
  readonly id: string;
  readonly hostId: string | undefined;
  readonly hostName: string | undefined;
  readonly sources: LocalDiskSource[];
  readonly readSizeBytes: number | undefined;
}

function validateOptions(options: LocalDiskPlatformOptions): ValidatedOptions {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidSettingsError('options', 'pass an object with at least `disks: [{ path }]`');
  }
  const id = options.id;
  if (typeof id !== 'string' || id.trim() === '') {
    throw new InvalidSettingsError(
      'id',
      'give the platform a stable id of your choosing, e.g. `id: "local"`: its points are filed under it',
    );
  }
  const hostId = optionalName(options.hostId, 'hostId');
  const hostName = optionalName(options.hostName, 'hostName');
  const readSizeBytes = options.readSizeBytes;
  if (
    readSizeBytes !== undefined &&
    (!Number.isSafeInteger(readSizeBytes) ||
      readSizeBytes < 4096 ||
      readSizeBytes > MAX_READ_SIZE_BYTES ||
      readSizeBytes % 4096 !== 0)
  ) {
    throw new InvalidSettingsError(
      'readSizeBytes',
      `must be a multiple of 4096 from 4096 to ${MAX_READ_SIZE_BYTES} bytes, got ${String(readSizeBytes)}`,
    );
  }
  const disks: unknown = options.disks;
  if (!Array.isArray(disks) || disks.length === 0) {
    throw new InvalidSettingsError('disks', 'list at least one disk: `disks: [{ path: "/dev/sdb" }]`');
  }
  const sources: LocalDiskSource[] = [];
  const fieldById = new Map<string, string>();
  const fieldByPath = new Map<string, string>();
  disks.forEach((entry: unknown, index) => {
    const field = `disks[${index}]`;
    if (typeof entry !== 'object' || entry === null) {
      throw new InvalidSettingsError(field, 'must be an object `{ path, id?, name? }`');
    }
    const disk = entry as Partial<Record<keyof LocalDiskOptions, unknown>>;
    if (typeof disk.path !== 'string' || disk.path.trim() === '') {
      throw new InvalidSettingsError(`${field}.path`, 'give the path of a disk image file or a block device');
    }
    if (disk.path.includes('\0')) {
      throw new InvalidSettingsError(`${field}.path`, 'must not contain a NUL character');
    }
    const path = resolve(disk.path);
    const diskId = optionalName(disk.id, `${field}.id`) ?? path;
    const name = optionalName(disk.name, `${field}.name`) ?? path;
    const sameId = fieldById.get(diskId);
    if (sameId !== undefined) {
      throw new InvalidSettingsError(
        disk.id === undefined ? `${field}.path` : `${field}.id`,
        `disk id ${diskId} is already used by ${sameId}: give each disk its own id`,
      );
    }
    const samePath = fieldByPath.get(path);
    if (samePath !== undefined) {
      throw new InvalidSettingsError(
        `${field}.path`,
        `${path} is already listed as ${samePath}: list each disk once`,
      );
    }
    fieldById.set(diskId, field);
    fieldByPath.set(path, field);
    sources.push({ index, id: diskId, name, path });
  });
  return { id, hostId, hostName, sources, readSizeBytes };
}

function optionalName(value: unknown, field: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.trim() === '') {
    throw new InvalidSettingsError(field, 'must be a non-empty string when given');
  }
  return value;
}
