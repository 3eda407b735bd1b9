import { execFile } from 'node:child_process';
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

/**
 * The file system calls the local folder store makes, and nothing more: the store is written against this
 * interface so that a test can put a fault-injecting file system under it (one that keeps durable and volatile
 * state apart and loses the volatile part when the "machine" dies). Paths are absolute. Errors carry Node's
 * `code` (`ENOENT`, `EEXIST`, `ENOTDIR`, `EISDIR`, `EPERM`) as `node:fs` does.
 *
 * @internal
 */
export interface LocalFolderFileSystem {
  /** Creates a new file (`open(path, O_CREAT | O_EXCL | O_WRONLY)`); `EEXIST` if it exists, `ENOENT` without its folder. */
  createFile(path: string): Promise<LocalFolderFile>;
  /** fsync(2) of a file or folder (opened read-only). A folder's fsync makes its entries durable. */
  fsync(path: string): Promise<void>;
  /** syncfs(2) of the file system that holds `path`: everything written to it is durable when it resolves. */
  syncfs(path: string): Promise<void>;
  link(existingPath: string, newPath: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  /** `mkdir -p`: the top-most folder it created, or `undefined` when the folder existed. */
  mkdirs(path: string): Promise<string | undefined>;
  readdir(path: string): Promise<LocalFolderDirent[]>;
  readFile(path: string, signal: AbortSignal | undefined): Promise<Uint8Array>;
  stat(path: string): Promise<LocalFolderStat>;
}

/** An open new file of {@link LocalFolderFileSystem.createFile}. @internal */
export interface LocalFolderFile {
  /** Writes `length` bytes of `data` from `offset` at file position `position`; resolves with the count written. */
  write(data: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  /** fsync(2) of the open file: its content is durable (not its name: that is its folder's fsync). */
  sync(): Promise<void>;
  close(): Promise<void>;
}

/** One folder entry. @internal */
export interface LocalFolderDirent {
  readonly name: string;
  readonly isFile: boolean;
  readonly isFolder: boolean;
  readonly isSymbolicLink: boolean;
}

/** What `stat` says. @internal */
export interface LocalFolderStat {
  readonly isFile: boolean;
  readonly isFolder: boolean;
  readonly size: number;
  readonly modifiedAt: Date;
}

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null ? (error as { code?: string }).code : undefined;
}

/**
 * syncfs(2) through coreutils `sync --file-system <path>` (Node has no binding for it). Linux only; coreutils
 * reports syncfs's error (since Linux 5.8 syncfs returns write-back errors) with a non-zero exit.
 */
function runSyncfs(path: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    execFile('sync', ['--file-system', path], { timeout: 0 }, (error, _stdout, stderr) => {
      if (error === null) {
        resolvePromise();
        return;
      }
      const failure = new Error(
        `syncfs of ${path} failed (sync --file-system): ${String(stderr).trim() || error.message}`,
        { cause: error },
      ) as Error & { code?: string };
      failure.code = errorCode(error) === 'ENOENT' ? 'ENOSYS' : 'EIO';
      reject(failure);
    });
  });
}

/** The real file system (`node:fs/promises`). @internal */
export const nodeLocalFolderFileSystem: LocalFolderFileSystem = {
  async createFile(path) {
    const handle: FileHandle = await open(path, 'wx');
    return {
      write: async (data, offset, length, position) =>
        (await handle.write(data, offset, length, position)).bytesWritten,
      sync: () => handle.sync(),
      close: () => handle.close(),
    };
  },
  async fsync(path) {
    let handle: FileHandle | undefined;
    try {
      handle = await open(path, 'r');
      await handle.sync();
    } catch (error) {
      // Windows cannot open or fsync a folder; rename is durable there without it.
      if (process.platform !== 'win32' || errorCode(error) === 'ENOENT') throw error;
    } finally {
      await handle?.close();
    }
  },
  syncfs: runSyncfs,
  link: (existingPath, newPath) => link(existingPath, newPath),
  rename: (from, to) => rename(from, to),
  unlink: (path) => unlink(path),
  mkdirs: (path) => mkdir(path, { recursive: true }),
  async readdir(path) {
    return (await readdir(path, { withFileTypes: true })).map((entry) => ({
      name: entry.name,
      isFile: entry.isFile(),
      isFolder: entry.isDirectory(),
      isSymbolicLink: entry.isSymbolicLink(),
    }));
  },
  async readFile(path, signal) {
    const buffer = await readFile(path, signal === undefined ? undefined : { signal });
    return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  },
  async stat(path) {
    const info = await stat(path);
    return { isFile: info.isFile(), isFolder: info.isDirectory(), size: info.size, modifiedAt: info.mtime };
  },
};
