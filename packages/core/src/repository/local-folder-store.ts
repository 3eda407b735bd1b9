import { randomBytes } from 'node:crypto';
import type { Dirent } from 'node:fs';
import {
  type FileHandle,
  link,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  stat,
  unlink,
} from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { InvalidSettingsError, NotFoundError } from '../errors/drkit-error.js';
import type { CallOptions } from '../spec/v2/index.js';
import type { Store, StoreEntry, StorePutOptions } from './store.js';
import { assertValidStoreKey, assertValidStorePrefix, STORE_TEMP_PREFIX } from './store-key.js';

/** Settings of {@link createLocalFolderStore}. */
export interface LocalFolderStoreOptions {
  /** The folder that holds the blobs. Created (with its parents) on the first write. */
  readonly path: string;
}

/** Bytes written per `write` call, so that an abort is seen between slices of a large blob. */
const WRITE_SLICE = 4 * 1024 * 1024;

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null ? (error as { code?: string }).code : undefined;
}

/** Rethrows `signal.reason` if the signal aborted while the operation ran, so aborts are never wrapped. */
function rethrow(error: unknown, signal: AbortSignal | undefined): never {
  if (signal?.aborted) throw signal.reason;
  throw error;
}

async function syncDirectory(path: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(path, 'r');
    await handle.sync();
  } catch (error) {
    // Windows cannot open or fsync a directory; rename is durable there without it.
    if (process.platform !== 'win32') throw error;
  } finally {
    await handle?.close();
  }
}

/**
 * A {@link Store} in a folder of the local file system (or a mounted network file system with POSIX rename and
 * hard links). A key `a/b/c` is the file `<path>/a/b/c`.
 *
 * - `put` writes a temporary file `.drkit-tmp-<random>` in the target's folder, fsyncs it, renames it over the
 *   key (or, with `ifAbsent`, hard-links it to the key, which fails if the key exists, so of several racing
 *   writers exactly one wins) and fsyncs the folder. Readers see the old blob or the new one, never a part.
 *   A create-only `put` that finds the key present fsyncs the key's folder and the folders above it before it
 *   returns `false`, and `flush(keys)` does the same for many keys with one fsync per folder: a blob another
 *   writer linked is durable before the caller relies on it.
 * - `list` walks the folder recursively and yields keys in lexicographic (UTF-8 byte) order; temporary files
 *   are skipped. A crash can leave temporary files behind; they are never listed.
 * - Every call honours `signal` and then rejects with `signal.reason`. A `put` that already renamed its file
 *   into place completes.
 *
 * @throws {@link InvalidSettingsError} when `path` is not a non-empty string.
 *
 * @example
 * ```ts
 * const store = createLocalFolderStore({ path: '/srv/drkit-repository' });
 * await store.put('hello/world', new TextEncoder().encode('hi'), { ifAbsent: true });
 * for await (const entry of store.list('hello/')) console.log(entry.key, entry.size);
 * ```
 */
export function createLocalFolderStore(options: LocalFolderStoreOptions): Store {
  if (typeof options?.path !== 'string' || options.path === '') {
    throw new InvalidSettingsError('path', 'must be a non-empty folder path');
  }
  const root = resolve(options.path);

  const pathOf = (key: string): string => join(root, ...key.split('/'));

  /**
   * Fsyncs `folder` and every folder above it up to the root (each at most once per `done` set), so that an
   * entry in `folder`, and `folder` itself, survive a crash. Used when a blob is found present rather than
   * written: another writer (or a crashed run) may have linked it without having fsynced these folders yet.
   */
  async function syncFolderChain(folder: string, done: Set<string> = new Set()): Promise<void> {
    let current = folder;
    for (;;) {
      if (done.has(current)) return;
      done.add(current);
      await syncDirectory(current);
      if (current === root) return;
      const parent = dirname(current);
      if (parent === current || relative(root, parent).startsWith('..')) return;
      current = parent;
    }
  }

  /** Creates the folder of a key and makes every folder it created durable in its parent. */
  async function ensureFolder(folder: string): Promise<void> {
    const first = await mkdir(folder, { recursive: true });
    if (first === undefined) return;
    // `first` is the top-most folder created: fsync its parent and every created folder down to `folder`.
    const created = relative(dirname(first), folder).split(sep);
    let current = dirname(first);
    await syncDirectory(current);
    for (const part of created) {
      current = join(current, part);
      await syncDirectory(current);
    }
  }

  async function openTemp(folder: string): Promise<{ handle: FileHandle; path: string }> {
    for (let attempt = 0; ; attempt++) {
      const path = join(folder, `${STORE_TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
      try {
        return { handle: await open(path, 'wx'), path };
      } catch (error) {
        if (errorCode(error) === 'ENOENT' && attempt === 0) await ensureFolder(folder);
        else if (errorCode(error) !== 'EEXIST' || attempt > 3) throw error;
      }
    }
  }

  async function put(key: string, data: Uint8Array, putOptions: StorePutOptions = {}): Promise<boolean> {
    assertValidStoreKey(key);
    const { signal, ifAbsent = false } = putOptions;
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
          const { bytesWritten } = await temp.handle.write(
            data,
            offset,
            Math.min(WRITE_SLICE, data.byteLength - offset),
            offset,
          );
          offset += bytesWritten;
        }
        await temp.handle.sync();
      } finally {
        await temp.handle.close();
      }
      signal?.throwIfAborted();
      if (ifAbsent) {
        try {
          await link(tempPath, target);
        } catch (error) {
          if (errorCode(error) !== 'EEXIST') throw error;
          // Present: make its entry durable before saying so, since a caller may commit something that
          // references it. Its content was fsynced before it was linked (by whichever put created it).
          await syncFolderChain(folder);
          return false;
        }
      } else {
        await rename(tempPath, target);
        tempPath = undefined;
      }
      await syncDirectory(folder);
      return true;
    } catch (error) {
      return rethrow(error, signal);
    } finally {
      if (tempPath !== undefined) await unlink(tempPath).catch(() => undefined);
    }
  }

  async function get(key: string, callOptions: CallOptions = {}): Promise<Uint8Array> {
    assertValidStoreKey(key);
    const { signal } = callOptions;
    signal?.throwIfAborted();
    try {
      const buffer = await readFile(pathOf(key), signal === undefined ? undefined : { signal });
      return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
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
      return (await stat(pathOf(key))).isFile();
    } catch (error) {
      const code = errorCode(error);
      if (code === 'ENOENT' || code === 'ENOTDIR') return false;
      return rethrow(error, signal);
    }
  }

  async function remove(key: string, callOptions: CallOptions = {}): Promise<void> {
    assertValidStoreKey(key);
    const { signal } = callOptions;
    signal?.throwIfAborted();
    try {
      await unlink(pathOf(key));
    } catch (error) {
      const code = errorCode(error);
      // A missing key, or a key that names a folder (not a blob; macOS says EPERM): nothing to delete.
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return;
      if (code === 'EPERM' && (await stat(pathOf(key)).catch(() => undefined))?.isDirectory()) return;
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
    let entries: Dirent[];
    try {
      entries = await readdir(folder, { withFileTypes: true });
    } catch (error) {
      const code = errorCode(error);
      if (code === 'ENOENT' || code === 'ENOTDIR') return [];
      throw error;
    }
    const result: Child[] = [];
    for (const entry of entries) {
      if (!entry.name.startsWith(namePrefix) || entry.name.startsWith(STORE_TEMP_PREFIX)) continue;
      const isFolder = entry.isDirectory();
      if (!isFolder && !entry.isFile() && !entry.isSymbolicLink()) continue;
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
      const info = await stat(join(folder, child.name)).catch((error: unknown) => {
        if (errorCode(error) === 'ENOENT') return undefined;
        throw error;
      });
      if (info?.isFile()) yield { key, size: info.size, modifiedAt: info.mtime };
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

  async function flush(keys: Iterable<string>, callOptions: CallOptions = {}): Promise<void> {
    const { signal } = callOptions;
    signal?.throwIfAborted();
    const folders = new Set<string>();
    for (const key of keys) {
      assertValidStoreKey(key);
      folders.add(dirname(pathOf(key)));
    }
    const done = new Set<string>();
    try {
      // Deepest first, so that a folder is synced before the folder that holds it.
      for (const folder of [...folders].sort((a, b) => b.length - a.length)) {
        signal?.throwIfAborted();
        try {
          await syncFolderChain(folder, done);
        } catch (error) {
          // A folder that does not exist holds no blob to make durable.
          if (errorCode(error) !== 'ENOENT' && errorCode(error) !== 'ENOTDIR') throw error;
        }
      }
    } catch (error) {
      return rethrow(error, signal);
    }
  }

  return { kind: 'local-folder', location: root, get, put, has, list, delete: remove, flush };
}
