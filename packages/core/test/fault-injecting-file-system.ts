import { posix } from 'node:path';
import type {
  LocalFolderDirent,
  LocalFolderFile,
  LocalFolderFileSystem,
  LocalFolderStat,
} from '../src/repository/local-folder-file-system.js';

/**
 * An in-memory file system for the local folder store that keeps what a crash of the machine would keep apart
 * from what it would lose, after POSIX:
 *
 * - a file's content is durable as of its last `fsync` (of the file); a file never synced has none (empty);
 * - a folder's entries (names → files or folders; a create, link, rename or unlink changes them) are durable as
 *   of its last `fsync` (of the folder): syncing a file does not make its name durable, syncing a folder does not
 *   make the content of its files durable;
 * - `syncfs` makes everything durable.
 *
 * {@link crash} is the machine dying: every write, create, link, rename, unlink and folder not yet made durable is
 * dropped, and the file system comes back as the durable state says. {@link armCrash} kills the machine at the
 * k-th state-changing call from now (every call after it fails with {@link MachineCrashedError} until
 * {@link crash}), so a test can enumerate every step of an operation. It counts fsync-like calls too.
 */
export class FaultInjectingFileSystem implements LocalFolderFileSystem {
  private root: Folder = newFolder();
  /** State-changing calls since {@link armCrash} (or since creation). */
  steps = 0;
  /** `fsync` calls (of files and folders) since the last {@link resetCounts}. */
  fsyncs = 0;
  /** `syncfs` calls since the last {@link resetCounts}. */
  syncfsCalls = 0;
  private crashAt: number | undefined;
  private dead = false;
  private clock = Date.UTC(2026, 0, 1);

  /** fsync and syncfs calls together: what a backup pays in sync round trips. */
  get syncCalls(): number {
    return this.fsyncs + this.syncfsCalls;
  }

  resetCounts(): void {
    this.fsyncs = 0;
    this.syncfsCalls = 0;
  }

  /** Kills the machine at the `step`-th state-changing call from now (0: the next one). */
  armCrash(step: number): void {
    this.steps = 0;
    this.crashAt = step;
  }

  /** Whether the armed crash has happened. */
  get crashed(): boolean {
    return this.dead;
  }

  /**
   * The machine dies (if it has not already) and boots again: only the durable state remains, and calls work
   * again.
   */
  crash(): void {
    this.dead = false;
    this.crashAt = undefined;
    const seen = new Set<Node>();
    const restore = (node: Node): void => {
      if (seen.has(node)) return;
      seen.add(node);
      if (node.kind === 'file') {
        node.content = node.durableContent;
        return;
      }
      node.entries = new Map(node.durableEntries);
      for (const child of node.entries.values()) restore(child);
    };
    restore(this.root);
  }

  /**
   * Makes the content of the file at `path`, and the entries of every folder on the way to it, durable, as the
   * kernel's own write-back may do at any moment without being asked: used to show what `none` can do.
   */
  writeBack(path: string): void {
    let folder = this.root;
    folder.durableEntries = new Map(folder.entries);
    for (const part of split(path)) {
      const node = folder.entries.get(part);
      if (node === undefined) throw fsError('ENOENT', 'writeBack', path);
      if (node.kind === 'file') {
        node.durableContent = node.content;
        return;
      }
      node.durableEntries = new Map(node.entries);
      folder = node;
    }
  }

  /** A copy of this file system, volatile and durable state alike (counters reset). */
  clone(): FaultInjectingFileSystem {
    const copies = new Map<Node, Node>();
    const copy = (node: Node): Node => {
      const done = copies.get(node);
      if (done !== undefined) return done;
      if (node.kind === 'file') {
        const file: File = { ...node };
        copies.set(node, file);
        return file;
      }
      const folder = newFolder();
      copies.set(node, folder);
      for (const [name, child] of node.entries) folder.entries.set(name, copy(child));
      for (const [name, child] of node.durableEntries) folder.durableEntries.set(name, copy(child));
      return folder;
    };
    const other = new FaultInjectingFileSystem();
    other.root = copy(this.root) as Folder;
    other.clock = this.clock;
    return other;
  }

  /** Every file path (volatile state), for assertions. */
  files(): string[] {
    const result: string[] = [];
    const walk = (folder: Folder, prefix: string): void => {
      for (const [name, node] of folder.entries) {
        const path = `${prefix}/${name}`;
        if (node.kind === 'file') result.push(path);
        else walk(node, path);
      }
    };
    walk(this.root, '');
    return result.sort();
  }

  /** Fails once the machine is dead; counts and maybe kills it on a state-changing call. */
  private step(changesState: boolean): void {
    if (this.dead) throw new MachineCrashedError();
    if (!changesState) return;
    if (this.crashAt !== undefined && this.steps >= this.crashAt) {
      this.dead = true;
      throw new MachineCrashedError();
    }
    this.steps++;
  }

  private lookup(path: string, call: string): Node {
    let node: Node = this.root;
    for (const part of split(path)) {
      if (node.kind !== 'folder') throw fsError('ENOTDIR', call, path);
      const next = node.entries.get(part);
      if (next === undefined) throw fsError('ENOENT', call, path);
      node = next;
    }
    return node;
  }

  private parentOf(path: string, call: string): { folder: Folder; name: string } {
    const folder = this.lookup(posix.dirname(path), call);
    if (folder.kind !== 'folder') throw fsError('ENOTDIR', call, path);
    return { folder, name: posix.basename(path) };
  }

  async createFile(path: string): Promise<LocalFolderFile> {
    this.step(true);
    const { folder, name } = this.parentOf(path, 'open');
    if (folder.entries.has(name)) throw fsError('EEXIST', 'open', path);
    const file: File = {
      kind: 'file',
      content: new Uint8Array(0),
      durableContent: new Uint8Array(0),
      modifiedAt: this.clock++,
    };
    folder.entries.set(name, file);
    let open = true;
    const check = (): void => {
      if (!open) throw fsError('EBADF', 'write', path);
    };
    return {
      write: async (data, offset, length, position) => {
        this.step(true);
        check();
        const end = position + length;
        const content = new Uint8Array(Math.max(end, file.content.byteLength));
        content.set(file.content);
        content.set(data.subarray(offset, offset + length), position);
        file.content = content;
        file.modifiedAt = this.clock++;
        return length;
      },
      sync: async () => {
        this.step(true);
        check();
        this.fsyncs++;
        file.durableContent = file.content;
      },
      close: async () => {
        this.step(false);
        open = false;
      },
    };
  }

  async fsync(path: string): Promise<void> {
    this.step(true);
    const node = this.lookup(path, 'fsync');
    this.fsyncs++;
    if (node.kind === 'file') node.durableContent = node.content;
    else node.durableEntries = new Map(node.entries);
  }

  async syncfs(path: string): Promise<void> {
    this.step(true);
    this.lookup(path, 'syncfs');
    this.syncfsCalls++;
    const seen = new Set<Node>();
    const sync = (node: Node): void => {
      if (seen.has(node)) return;
      seen.add(node);
      if (node.kind === 'file') {
        node.durableContent = node.content;
        return;
      }
      node.durableEntries = new Map(node.entries);
      for (const child of node.entries.values()) sync(child);
    };
    sync(this.root);
  }

  async link(existingPath: string, newPath: string): Promise<void> {
    this.step(true);
    const node = this.lookup(existingPath, 'link');
    if (node.kind !== 'file') throw fsError('EPERM', 'link', existingPath);
    const { folder, name } = this.parentOf(newPath, 'link');
    if (folder.entries.has(name)) throw fsError('EEXIST', 'link', newPath);
    folder.entries.set(name, node);
  }

  async rename(from: string, to: string): Promise<void> {
    this.step(true);
    const source = this.parentOf(from, 'rename');
    const node = source.folder.entries.get(source.name);
    if (node === undefined) throw fsError('ENOENT', 'rename', from);
    const target = this.parentOf(to, 'rename');
    const present = target.folder.entries.get(target.name);
    if (present?.kind === 'folder') throw fsError('EISDIR', 'rename', to);
    source.folder.entries.delete(source.name);
    target.folder.entries.set(target.name, node);
  }

  async unlink(path: string): Promise<void> {
    this.step(true);
    const { folder, name } = this.parentOf(path, 'unlink');
    const node = folder.entries.get(name);
    if (node === undefined) throw fsError('ENOENT', 'unlink', path);
    if (node.kind === 'folder') throw fsError('EISDIR', 'unlink', path);
    folder.entries.delete(name);
  }

  async mkdirs(path: string): Promise<string | undefined> {
    let folder = this.root;
    let current = '';
    let first: string | undefined;
    for (const part of split(path)) {
      current = `${current}/${part}`;
      const next = folder.entries.get(part);
      if (next?.kind === 'file') throw fsError('ENOTDIR', 'mkdir', path);
      if (next !== undefined) {
        folder = next;
        continue;
      }
      this.step(true);
      const created = newFolder();
      folder.entries.set(part, created);
      first ??= current;
      folder = created;
    }
    if (first === undefined) this.step(false);
    return first;
  }

  async readdir(path: string): Promise<LocalFolderDirent[]> {
    this.step(false);
    const node = this.lookup(path, 'scandir');
    if (node.kind !== 'folder') throw fsError('ENOTDIR', 'scandir', path);
    return [...node.entries].map(([name, child]) => ({
      name,
      isFile: child.kind === 'file',
      isFolder: child.kind === 'folder',
      isSymbolicLink: false,
    }));
  }

  async readFile(path: string, signal: AbortSignal | undefined): Promise<Uint8Array> {
    this.step(false);
    signal?.throwIfAborted();
    const node = this.lookup(path, 'open');
    if (node.kind !== 'file') throw fsError('EISDIR', 'read', path);
    return node.content.slice();
  }

  async stat(path: string): Promise<LocalFolderStat> {
    this.step(false);
    const node = this.lookup(path, 'stat');
    return node.kind === 'file'
      ? {
          isFile: true,
          isFolder: false,
          size: node.content.byteLength,
          modifiedAt: new Date(node.modifiedAt),
        }
      : { isFile: false, isFolder: true, size: 0, modifiedAt: new Date(this.clock) };
  }
}

/** What every call throws once the machine died. Not a drkit error: nothing may catch it as one. */
export class MachineCrashedError extends Error {
  override readonly name = 'MachineCrashedError';
  constructor() {
    super('the machine crashed (fault-injecting file system)');
  }
}

interface File {
  readonly kind: 'file';
  content: Uint8Array;
  durableContent: Uint8Array;
  modifiedAt: number;
}

interface Folder {
  readonly kind: 'folder';
  entries: Map<string, Node>;
  durableEntries: Map<string, Node>;
}

type Node = File | Folder;

function newFolder(): Folder {
  return { kind: 'folder', entries: new Map(), durableEntries: new Map() };
}

function split(path: string): string[] {
  return posix
    .normalize(path)
    .split('/')
    .filter((part) => part !== '');
}

function fsError(code: string, call: string, path: string): Error {
  return Object.assign(new Error(`${code}: ${call} '${path}'`), { code });
}
