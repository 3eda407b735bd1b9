import { randomBytes } from 'node:crypto';
import { dirname, join, relative, resolve } from 'node:path';
import { InvalidSettingsError, NotFoundError } from '../errors/drkit-error.js';
import type { CallOptions } from '../spec/v2/index.js';
import { EarlyWriteback } from '../util/early-writeback.js';
import {
  type LocalFolderFile,
  type LocalFolderFileSystem,
  nodeLocalFolderFileSystem,
} from './local-folder-file-system.js';
import type { Store, StoreEntry, StorePutOptions } from './store.js';
import { assertValidStoreKey, assertValidStorePrefix, STORE_TEMP_PREFIX } from './store-key.js';

/**
 * How the local folder store makes blobs durable (after Proxmox Backup Server's datastore "sync level"):
 *
 * - `file` (the default where syncfs(2) is missing: not Linux): every blob's content is `fsync`ed before its name is linked, so a name on disk never
 *   points at content a crash can lose; folders are `fsync`ed once per `sync` (one per chunk folder, not per
 *   chunk) or, for a `durable` put, at once. Calls per backup grow with the chunks it writes (one each).
 * - `filesystem` (the default on Linux): blobs put with `durable: false` are written without any sync; `sync`, and every `durable` put,
 *   is one syncfs(2) of the store's file system (coreutils `sync --file-system`; Linux only). Calls per backup do
 *   not grow with its chunks: besides those, one syncfs starts in the background per
 *   {@link LocalFolderStoreOptions.writebackBytes} written (128 MiB), so that the disk writes during the backup.
 *   Once a syncfs fails, every later sync of that store fails (the kernel reports a write-back error once). It
 *   syncs everything on that file system, other programs' writes included, and a
 *   machine crash during a backup can leave the names of that backup's unsynced chunks with lost content
 *   (ext4 commits names every few seconds, data later). A backup therefore checks the size of every chunk it
 *   finds present and did not write (one stat, which it makes anyway) and rewrites one whose content is lost, so
 *   no point is committed on it.
 * - `none`: nothing is ever synced. **Unsafe**: a machine crash can lose committed points or leave a point whose
 *   chunks are gone. For throw-away repositories and tests.
 */
export type LocalFolderSyncLevel = 'none' | 'filesystem' | 'file';

/** The sync levels, for validation and help texts. */
export const LOCAL_FOLDER_SYNC_LEVELS: readonly LocalFolderSyncLevel[] = ['none', 'filesystem', 'file'];

/**
 * The sync level a local folder store uses when none is given: `filesystem` where syncfs(2) exists (Linux), `file`
 * elsewhere (macOS, Windows, the BSDs).
 */
export function defaultLocalFolderSyncLevel(
  platform: NodeJS.Platform = process.platform,
): LocalFolderSyncLevel {
  return platform === 'linux' ? 'filesystem' : 'file';
}

/** Settings of {@link createLocalFolderStore}. */
export interface LocalFolderStoreOptions {
  /** The folder that holds the blobs. Created (with its parents) on the first write. */
  readonly path: string;
  /** How blobs are made durable; see {@link LocalFolderSyncLevel}. Default {@link defaultLocalFolderSyncLevel}. */
  readonly syncLevel?: LocalFolderSyncLevel;
  /**
   * At `filesystem` level: each time this many bytes were put with `durable: false` since the last sync, one
   * syncfs(2) starts in the background (never two at once), so that the disk writes while a backup runs and the
   * sync before its commit finds little left. Default {@link DEFAULT_WRITEBACK_BYTES} (128 MiB); `0` syncs only
   * when asked. It adds one syncfs per this many bytes written, never one per blob.
   */
  readonly writebackBytes?: number;
}

/** Bytes put unsynced after which a `filesystem`-level store starts a background syncfs: 128 MiB. */
export const DEFAULT_WRITEBACK_BYTES = 128 * 1024 * 1024;

/** Bytes written per `write` call, so that an abort is seen between slices of a large blob. */
const WRITE_SLICE = 4 * 1024 * 1024;

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null ? (error as { code?: string }).code : undefined;
}

const isMissing = (error: unknown): boolean =>
  errorCode(error) === 'ENOENT' || errorCode(error) === 'ENOTDIR';

/** Rethrows `signal.reason` if the signal aborted while the operation ran, so aborts are never wrapped. */
function rethrow(error: unknown, signal: AbortSignal | undefined): never {
  if (signal?.aborted) throw signal.reason;
  throw error;
}

/**
 * A {@link Store} in a folder of the local file system (or a mounted network file system with POSIX rename and
 * hard links). A key `a/b/c` is the file `<path>/a/b/c`.
 *
 * - `put` writes a temporary file `.drkit-tmp-<random>` in the target's folder, renames it over the key (or,
 *   with `ifAbsent`, hard-links it to the key, which fails if the key exists, so of several racing writers
 *   exactly one wins) and removes the temporary name. Readers see the old blob or the new one, never a part.
 * - Durability follows `syncLevel` ({@link LocalFolderSyncLevel}). At `file`, the temporary file is `fsync`ed
 *   before it is linked; a `durable` put then `fsync`s the key's folder (and folders it created, in their
 *   parents), a create-only `durable` put that finds the key present `fsync`s that blob and its folders up to the
 *   root, and `sync(keys)` `fsync`s each key's folder chain once. At `filesystem`, a `durable: false` put syncs
 *   nothing itself (it counts towards the next background syncfs, see `writebackBytes`), and a `durable` put, a
 *   create-only `durable` put that finds the key present, and `sync` each run one syncfs(2), after the background
 *   one in progress. At `none` nothing is synced.
 * - `sync(keys)` makes the current state of each key durable: a blob present, or the absence of one deleted.
 * - `list` walks the folder recursively and yields keys in lexicographic (UTF-8 byte) order; temporary files
 *   are skipped. A crash can leave temporary files behind; they are never listed.
 * - Every call honours `signal` and then rejects with `signal.reason`. A `put` that already renamed its file
 *   into place completes.
 *
 * @throws {@link InvalidSettingsError} when `path` is not a non-empty string, `syncLevel` is not a level, or it
 * is `filesystem` on a system without syncfs(2) (not Linux), or `writebackBytes` is not a non-negative integer.
 *
 * @example
 * ```ts
 * const store = createLocalFolderStore({ path: '/srv/drkit-repository', syncLevel: 'file' });
 * await store.put('hello/world', new TextEncoder().encode('hi'), { ifAbsent: true });
 * for await (const entry of store.list('hello/')) console.log(entry.key, entry.size);
 * ```
 */
export function createLocalFolderStore(options: LocalFolderStoreOptions): Store {
  return createLocalFolderStoreOn(nodeLocalFolderFileSystem, options);
}

/**
 * {@link createLocalFolderStore} over the given file system calls (a test's fault-injecting file system).
 *
 * @internal
 */
export function createLocalFolderStoreOn(
  fs: LocalFolderFileSystem,
  options: LocalFolderStoreOptions & { readonly platform?: NodeJS.Platform },
): Store {
  if (typeof options?.path !== 'string' || options.path === '') {
    throw new InvalidSettingsError('path', 'must be a non-empty folder path');
  }
  const platform = options.platform ?? process.platform;
  const level = options.syncLevel ?? defaultLocalFolderSyncLevel(platform);
  if (!LOCAL_FOLDER_SYNC_LEVELS.includes(level)) {
    throw new InvalidSettingsError('syncLevel', `must be one of ${LOCAL_FOLDER_SYNC_LEVELS.join(', ')}`);
  }
  if (level === 'filesystem' && platform !== 'linux') {
    throw new InvalidSettingsError(
      'syncLevel',
      'filesystem needs syncfs(2), which only Linux has; use file on this system',
    );
  }
  const writebackBytes = options.writebackBytes ?? DEFAULT_WRITEBACK_BYTES;
  if (!Number.isSafeInteger(writebackBytes) || writebackBytes < 0) {
    throw new InvalidSettingsError('writebackBytes', 'must be a non-negative integer number of bytes');
  }
  const root = resolve(options.path);

  const pathOf = (key: string): string => join(root, ...key.split('/'));

  /** One syncfs of the store's file system. A store never written to has nothing to sync. */
  async function syncfsOnce(): Promise<void> {
    try {
      await fs.stat(root);
    } catch (error) {
      if (isMissing(error)) return;
      throw error;
    }
    await fs.syncfs(root);
  }

  /**
   * The error every sync gives once one syncfs of this store failed. The kernel reports a write-back error to
   * one syncfs only, so a later one that succeeds proves nothing about the bytes the failed one covered.
   */
  function stickyError(error: unknown): Error {
    const message = error instanceof Error ? error.message : String(error);
    return Object.assign(
      new Error(
        `a syncfs of the file system of ${root} failed (${message}): what was written since this store opened ` +
          'is not known to be durable, so no later sync succeeds; check the file system, then reopen the ' +
          'repository and run verify',
        { cause: error },
      ),
      { code: errorCode(error) ?? 'EIO' },
    );
  }

  /** Background syncfs while unsynced blobs pile up (`filesystem` level). */
  const writeback = new EarlyWriteback(
    () =>
      syncfsOnce().catch((error: unknown) => {
        throw stickyError(error);
      }),
    level === 'filesystem' ? writebackBytes : 0,
  );

  /**
   * One syncfs of the store's file system (`filesystem` level), after the background one in progress; fails for
   * good once any syncfs of this store failed.
   */
  async function syncFileSystem(): Promise<void> {
    await writeback.settle();
    try {
      await syncfsOnce();
    } catch (error) {
      writeback.failed(stickyError(error));
      throw error;
    }
  }

  /**
   * The top-most folder this store created at or above its root whose entries above the root are not synced yet
   * (`file` level): the first write into a new repository folder creates it without a sync when not durable.
   */
  let unsyncedTop: string | undefined;

  /**
   * Folders whose own entry (in their parent) this store made durable (`file` level), so that a later chain stops
   * there. The store never deletes a folder; at most a few hundred (the chunk folders and a few others).
   */
  const durableFolders = new Set<string>();

  /**
   * Fsyncs `folder` and every folder above it up to the root (each at most once per `done` set), so that an
   * entry in `folder`, and `folder` itself, survive a crash (`file` level); and, when this store created the root
   * (or folders above it) without syncing them, those in their parents too. Stops climbing at a folder whose own
   * entry is known durable.
   */
  async function syncFolderChain(folder: string, done: Set<string> = new Set()): Promise<void> {
    let current = folder;
    let child: string | undefined;
    for (;;) {
      if (done.has(current)) return;
      done.add(current);
      await fs.fsync(current);
      if (child !== undefined) durableFolders.add(child);
      if (durableFolders.has(current)) return;
      if (current === root) break;
      const parent = dirname(current);
      if (parent === current || relative(root, parent).startsWith('..')) return;
      child = current;
      current = parent;
    }
    if (unsyncedTop !== undefined) {
      const top = unsyncedTop;
      // The folders holding the root's entry, and each created folder's above it, deepest first.
      for (let above = dirname(root); ; above = dirname(above)) {
        if (!done.has(above)) {
          done.add(above);
          await fs.fsync(above);
        }
        if (above === dirname(top) || above === dirname(above)) break;
      }
      unsyncedTop = undefined;
    }
    // Created by this store and now synced in its parent, or found existing (created and synced by its creator).
    durableFolders.add(root);
  }

  /**
   * Creates the folder of a key. At `file` level the folder chain a durable put or a `sync` fsyncs makes new
   * folders durable in their parents; this only remembers a new root (or folders above it), which that chain does
   * not reach.
   */
  async function ensureFolder(folder: string): Promise<void> {
    const first = await fs.mkdirs(folder);
    if (first === undefined || level !== 'file' || relative(first, root).startsWith('..')) return;
    if (unsyncedTop === undefined || first.length < unsyncedTop.length) unsyncedTop = first;
    durableFolders.clear(); // the root is new: whatever was known of the folders in it is gone
  }

  async function openTemp(folder: string): Promise<{ file: LocalFolderFile; path: string }> {
    for (let attempt = 0; ; attempt++) {
      const path = join(folder, `${STORE_TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
      try {
        return { file: await fs.createFile(path), path };
      } catch (error) {
        if (errorCode(error) === 'ENOENT' && attempt === 0) await ensureFolder(folder);
        else if (errorCode(error) !== 'EEXIST' || attempt > 3) throw error;
      }
    }
  }

  async function put(key: string, data: Uint8Array, putOptions: StorePutOptions = {}): Promise<boolean> {
    assertValidStoreKey(key);
    const { signal, ifAbsent = false, durable = true } = putOptions;
    signal?.throwIfAborted();
    const target = pathOf(key);
    const folder = dirname(target);
    let tempPath: string | undefined;
    try {
      const temp = await openTemp(folder);
      tempPath = temp.path;
      try {
        let offset = 0;
        while (offset < data.byteLength) {
          signal?.throwIfAborted();
          offset += await temp.file.write(
            data,
            offset,
            Math.min(WRITE_SLICE, data.byteLength - offset),
            offset,
          );
        }
        // At `file` level a name is never linked to content that a crash can lose, durable put or not.
        if (level === 'file') await temp.file.sync();
      } finally {
        await temp.file.close();
      }
      signal?.throwIfAborted();
      if (ifAbsent) {
        try {
          await fs.link(tempPath, target);
        } catch (error) {
          if (errorCode(error) !== 'EEXIST') throw error;
          // Present: when durable, make it so before saying so, since a caller may commit something that
          // references it. Another writer may have put it with `durable: false` and not synced it yet.
          if (durable && level === 'file') {
            await fs.fsync(target);
            await syncFolderChain(folder);
          } else if (durable && level === 'filesystem') {
            await syncFileSystem();
          }
          return false;
        }
      } else {
        await fs.rename(tempPath, target);
        tempPath = undefined;
      }
      // The folder chain, not only the folder: its folders may have been created by a `durable: false` put.
      if (durable && level === 'file') await syncFolderChain(folder);
      else if (durable && level === 'filesystem') await syncFileSystem();
      else writeback.wrote(data.byteLength);
      return true;
    } catch (error) {
      return rethrow(error, signal);
    } finally {
      if (tempPath !== undefined) await fs.unlink(tempPath).catch(() => undefined);
    }
  }

  async function get(key: string, callOptions: CallOptions = {}): Promise<Uint8Array> {
    assertValidStoreKey(key);
    const { signal } = callOptions;
    signal?.throwIfAborted();
    try {
      return await fs.readFile(pathOf(key), signal);
    } catch (error) {
      const code = errorCode(error);
      if (!signal?.aborted && (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR')) {
        throw new NotFoundError(`no blob "${key}" in the local folder store at ${root}`, { cause: error });
      }
      return rethrow(error, signal);
    }
  }

  async function has(key: string, callOptions: CallOptions = {}): Promise<boolean> {
    assertValidStoreKey(key);
    const { signal } = callOptions;
    signal?.throwIfAborted();
    try {
      return (await fs.stat(pathOf(key))).isFile;
    } catch (error) {
      const code = errorCode(error);
      if (code === 'ENOENT' || code === 'ENOTDIR') return false;
      return rethrow(error, signal);
    }
  }

  async function size(key: string, callOptions: CallOptions = {}): Promise<number | undefined> {
    assertValidStoreKey(key);
    const { signal } = callOptions;
    signal?.throwIfAborted();
    try {
      const info = await fs.stat(pathOf(key));
      return info.isFile ? info.size : undefined;
    } catch (error) {
      const code = errorCode(error);
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      return rethrow(error, signal);
    }
  }

  async function remove(key: string, callOptions: CallOptions = {}): Promise<void> {
    assertValidStoreKey(key);
    const { signal } = callOptions;
    signal?.throwIfAborted();
    try {
      await fs.unlink(pathOf(key));
    } catch (error) {
      const code = errorCode(error);
      // A missing key, or a key that names a folder (not a blob; macOS says EPERM): nothing to delete.
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return;
      if (code === 'EPERM' && (await fs.stat(pathOf(key)).catch(() => undefined))?.isFolder) return;
      return rethrow(error, signal);
    }
  }

  interface Child {
    readonly name: string;
    readonly isFolder: boolean;
    /** UTF-8 bytes of the name, with a trailing `/` for folders: the order of the full keys below it. */
    readonly order: Buffer;
  }

  async function children(folder: string, namePrefix: string): Promise<Child[]> {
    let entries: Awaited<ReturnType<LocalFolderFileSystem['readdir']>>;
    try {
      entries = await fs.readdir(folder);
    } catch (error) {
      const code = errorCode(error);
      if (code === 'ENOENT' || code === 'ENOTDIR') return [];
      throw error;
    }
    const result: Child[] = [];
    for (const entry of entries) {
      if (!entry.name.startsWith(namePrefix) || entry.name.startsWith(STORE_TEMP_PREFIX)) continue;
      const { isFolder } = entry;
      if (!isFolder && !entry.isFile && !entry.isSymbolicLink) continue;
      result.push({
        name: entry.name,
        isFolder,
        order: Buffer.from(isFolder ? `${entry.name}/` : entry.name),
      });
    }
    return result.sort((a, b) => Buffer.compare(a.order, b.order));
  }

  async function* walk(
    folderKey: string,
    namePrefix: string,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<StoreEntry> {
    const folder = folderKey === '' ? root : pathOf(folderKey);
    for (const child of await children(folder, namePrefix)) {
      signal?.throwIfAborted();
      const key = folderKey === '' ? child.name : `${folderKey}/${child.name}`;
      if (child.isFolder) {
        yield* walk(key, '', signal);
        continue;
      }
      const info = await fs.stat(join(folder, child.name)).catch((error: unknown) => {
        if (errorCode(error) === 'ENOENT') return undefined;
        throw error;
      });
      if (info?.isFile) yield { key, size: info.size, modifiedAt: info.modifiedAt };
    }
  }

  async function* list(prefix: string, callOptions: CallOptions = {}): AsyncGenerator<StoreEntry> {
    assertValidStorePrefix(prefix);
    const { signal } = callOptions;
    signal?.throwIfAborted();
    const slash = prefix.lastIndexOf('/');
    try {
      yield* walk(slash < 0 ? '' : prefix.slice(0, slash), prefix.slice(slash + 1), signal);
    } catch (error) {
      return rethrow(error, signal);
    }
  }

  async function sync(keys: Iterable<string>, callOptions: CallOptions = {}): Promise<void> {
    const { signal } = callOptions;
    signal?.throwIfAborted();
    const folders = new Set<string>();
    for (const key of keys) {
      assertValidStoreKey(key);
      folders.add(dirname(pathOf(key)));
    }
    if (folders.size === 0 || level === 'none') return;
    try {
      if (level === 'filesystem') {
        await syncFileSystem();
        return;
      }
      const done = new Set<string>();
      // Deepest first, so that a folder is synced before the folder that holds it.
      for (const folder of [...folders].sort((a, b) => b.length - a.length)) {
        signal?.throwIfAborted();
        try {
          await syncFolderChain(folder, done);
        } catch (error) {
          // A folder that does not exist holds no blob to make durable.
          if (!isMissing(error)) throw error;
        }
      }
    } catch (error) {
      return rethrow(error, signal);
    }
  }

  return { kind: 'local-folder', location: root, get, put, has, size, list, delete: remove, sync };
}
