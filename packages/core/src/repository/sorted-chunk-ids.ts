import type { FileHandle } from 'node:fs/promises';
import { mkdtemp, open, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from '../errors/drkit-error.js';
import { CHUNK_ID_BYTES } from './chunk-id.js';

/** Largest in-memory run: the sort key packs the run position into 21 bits. */
const MAX_BUFFER_IDS = 1 << 21;
const POSITION_SCALE = 2 ** 21;

/** Compares two 32-byte ids as unsigned big-endian numbers (the order of their hex, and of the store listing). */
export function compareIds(a: Uint8Array, aOffset: number, b: Uint8Array, bOffset: number): number {
  for (let i = 0; i < CHUNK_ID_BYTES; i++) {
    const d = a[aOffset + i]! - b[bOffset + i]!;
    if (d !== 0) return d;
  }
  return 0;
}

/** Options of {@link ChunkIdSorter.create}. */
export interface ChunkIdSorterOptions {
  /** Folder in which the sorter makes its scratch folder (default: the system's temporary folder). */
  readonly directory?: string;
  /** Ids sorted in memory at once, one run on disk each time the buffer fills (default 1 Mi: 32 MiB; at most 2 Mi). */
  readonly bufferIds?: number;
  /** Runs merged at once; more runs are first merged in passes of this many (default 64). */
  readonly fanIn?: number;
  /** Ids read at once from each run during a merge (default 2048: 64 KiB). */
  readonly readBufferIds?: number;
}

/** What a {@link ChunkIdSorter} did, and the memory it may use. */
export interface ChunkIdSorterStats {
  /** Ids given to {@link ChunkIdSorter.add}. */
  readonly idsAdded: number;
  /** Run files written (sorted buffers and intermediate merges). */
  readonly runsWritten: number;
  /** Merges of `fanIn` runs into one before the final merge. */
  readonly intermediateMerges: number;
  /** Most run files read at once by one merge (at most `fanIn`). */
  readonly maxRunsMerged: number;
  /** Distinct ids yielded by {@link ChunkIdSorter.sorted}. */
  readonly idsYielded: number;
  /**
   * Bytes of every buffer the sorter allocates, which is all the memory it uses whatever the number of ids:
   * `bufferIds × 40` (the ids and their sort keys) + `fanIn × readBufferIds × 32` + one 1 MiB write buffer.
   * With the defaults: 40 MiB + 4 MiB + 1 MiB = 45 MiB.
   */
  readonly memoryBytes: number;
}

const WRITE_BUFFER_BYTES = 1 << 20;

function positiveInteger(value: number | undefined, fallback: number, field: string, max: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1 || value > max) {
    throw new InvalidArgumentError(`${field} must be an integer from 1 to ${max}, got ${value}`);
  }
  return value;
}

/** Buffered appends of ids to one file. */
class RunWriter {
  private readonly buffer = new Uint8Array(WRITE_BUFFER_BYTES);
  private used = 0;
  count = 0;
  private last = new Uint8Array(CHUNK_ID_BYTES);

  private constructor(private readonly file: FileHandle) {}

  static async open(path: string): Promise<RunWriter> {
    return new RunWriter(await open(path, 'wx'));
  }

  /**
   * Appends an id unless it equals the previous one (input must be ascending). Returns a promise only when the
   * buffer is being written out: await it before the next call.
   */
  push(bytes: Uint8Array, offset: number): Promise<void> | undefined {
    if (this.count > 0 && compareIds(this.last, 0, bytes, offset) === 0) return undefined;
    this.last.set(bytes.subarray(offset, offset + CHUNK_ID_BYTES));
    this.buffer.set(bytes.subarray(offset, offset + CHUNK_ID_BYTES), this.used);
    this.used += CHUNK_ID_BYTES;
    this.count++;
    return this.used === this.buffer.byteLength ? this.drain() : undefined;
  }

  private async drain(): Promise<void> {
    let written = 0;
    while (written < this.used) {
      const { bytesWritten } = await this.file.write(this.buffer, written, this.used - written);
      written += bytesWritten;
    }
    this.used = 0;
  }

  async close(): Promise<void> {
    try {
      await this.drain();
    } finally {
      await this.file.close();
    }
  }
}

/** Sequential reads of ids from one run file. */
class RunReader {
  private readonly buffer: Uint8Array;
  private length = 0;
  /** Offset of the current id in `buffer`; valid while `done` is false. */
  offset = 0;
  done = false;

  private constructor(
    private readonly file: FileHandle,
    readIds: number,
  ) {
    this.buffer = new Uint8Array(readIds * CHUNK_ID_BYTES);
  }

  static async open(path: string, readIds: number): Promise<RunReader> {
    const reader = new RunReader(await open(path, 'r'), readIds);
    await reader.fill();
    return reader;
  }

  get bytes(): Uint8Array {
    return this.buffer;
  }

  private async fill(): Promise<void> {
    let length = 0;
    while (length < this.buffer.byteLength) {
      const { bytesRead } = await this.file.read(this.buffer, length, this.buffer.byteLength - length);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    if (length % CHUNK_ID_BYTES !== 0) throw new Error('a sorted run file ends inside an id');
    this.length = length;
    this.offset = 0;
    this.done = length === 0;
  }

  /** Moves to the next id (sync while the buffer lasts, which the caller checks with {@link needsFill}). */
  step(): void {
    this.offset += CHUNK_ID_BYTES;
  }

  needsFill(): boolean {
    return this.offset >= this.length;
  }

  async refill(): Promise<void> {
    await this.fill();
  }

  close(): Promise<void> {
    return this.file.close();
  }
}

/** A binary min-heap of run readers by their current id. */
class ReaderHeap {
  readonly items: RunReader[] = [];

  private less(a: RunReader, b: RunReader): boolean {
    return compareIds(a.bytes, a.offset, b.bytes, b.offset) < 0;
  }

  push(reader: RunReader): void {
    const items = this.items;
    items.push(reader);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(items[i]!, items[parent]!)) break;
      [items[i], items[parent]] = [items[parent]!, items[i]!];
      i = parent;
    }
  }

  /** Restores the heap after the top's current id grew (or the top is removed when `remove`). */
  siftTop(remove: boolean): void {
    const items = this.items;
    if (remove) {
      const last = items.pop()!;
      if (items.length === 0) return;
      items[0] = last;
    }
    let i = 0;
    const n = items.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && this.less(items[l]!, items[m]!)) m = l;
      if (r < n && this.less(items[r]!, items[m]!)) m = r;
      if (m === i) return;
      [items[i], items[m]] = [items[m]!, items[i]!];
      i = m;
    }
  }
}

/**
 * Sorts any number of 32-byte chunk ids, each distinct id kept once, in bounded memory: an external merge sort.
 * Ids are collected in a fixed buffer; each time it fills it is sorted (a native sort of keys made of the first 4 bytes
 * and the position, ties settled by a full comparison) and written as a run file to a scratch folder; the runs are
 * then merged, at most `fanIn` at a time, each read through a small buffer. The memory used is a constant of the
 * options ({@link ChunkIdSorterStats.memoryBytes}: 45 MiB with the defaults), whether it sorts a thousand ids or
 * a hundred million (3.2 GB of runs on disk then).
 *
 * @internal
 */
export class ChunkIdSorter implements AsyncDisposable {
  private readonly ids: Uint8Array;
  private readonly keys: Float64Array;
  private buffered = 0;
  private runs: string[] = [];
  private nextRun = 0;
  private idsAdded = 0;
  private runsWritten = 0;
  private intermediateMerges = 0;
  private maxRunsMerged = 0;
  private idsYielded = 0;
  private state: 'adding' | 'sorting' | 'closed' = 'adding';

  private constructor(
    private readonly folder: string,
    private readonly bufferIds: number,
    private readonly fanIn: number,
    private readonly readBufferIds: number,
  ) {
    this.ids = new Uint8Array(bufferIds * CHUNK_ID_BYTES);
    this.keys = new Float64Array(bufferIds);
  }

  /**
   * Makes a sorter with its own scratch folder (removed by {@link close}).
   *
   * @throws {@link InvalidArgumentError} for an option out of range.
   */
  static async create(options: ChunkIdSorterOptions = {}): Promise<ChunkIdSorter> {
    const bufferIds = positiveInteger(options.bufferIds, 1 << 20, 'bufferIds', MAX_BUFFER_IDS);
    const fanIn = positiveInteger(options.fanIn, 64, 'fanIn', 4096);
    if (fanIn < 2) throw new InvalidArgumentError(`fanIn must be at least 2, got ${fanIn}`);
    const readBufferIds = positiveInteger(options.readBufferIds, 2048, 'readBufferIds', 1 << 20);
    const folder = await mkdtemp(join(options.directory ?? tmpdir(), 'drkit-sort-'));
    return new ChunkIdSorter(folder, bufferIds, fanIn, readBufferIds);
  }

  /** See {@link ChunkIdSorterStats}. */
  get stats(): ChunkIdSorterStats {
    return {
      idsAdded: this.idsAdded,
      runsWritten: this.runsWritten,
      intermediateMerges: this.intermediateMerges,
      maxRunsMerged: this.maxRunsMerged,
      idsYielded: this.idsYielded,
      memoryBytes:
        this.bufferIds * (CHUNK_ID_BYTES + 8) +
        this.fanIn * this.readBufferIds * CHUNK_ID_BYTES +
        WRITE_BUFFER_BYTES,
    };
  }

  /**
   * Adds the 32 bytes of `id` at `offset` (copied). Returns a promise only when the buffer filled and is being
   * written as a run: await it before the next call.
   */
  add(id: Uint8Array, offset = 0): Promise<void> | undefined {
    if (this.state !== 'adding') throw new InvalidArgumentError('ids cannot be added once sorting began');
    this.ids.set(id.subarray(offset, offset + CHUNK_ID_BYTES), this.buffered * CHUNK_ID_BYTES);
    this.buffered++;
    this.idsAdded++;
    if (this.buffered === this.bufferIds) return this.writeBufferedRun();
    return undefined;
  }

  private runPath(): string {
    return join(this.folder, `run-${String(this.nextRun++).padStart(8, '0')}`);
  }

  /** Sorts the buffer in place of `keys`: afterwards `keys[i] % 2^21` is the position of the i-th smallest id. */
  private sortBuffer(): void {
    const n = this.buffered;
    const ids = this.ids;
    const keys = this.keys.subarray(0, n);
    for (let i = 0; i < n; i++) {
      const o = i * CHUNK_ID_BYTES;
      const top = ((ids[o]! << 24) | (ids[o + 1]! << 16) | (ids[o + 2]! << 8) | ids[o + 3]!) >>> 0;
      keys[i] = top * POSITION_SCALE + i;
    }
    keys.sort();
    // Equal first 4 bytes (rare for SHA-256 ids): order the group by the full id.
    let start = 0;
    while (start < n) {
      const top = Math.floor(keys[start]! / POSITION_SCALE);
      let end = start + 1;
      while (end < n && Math.floor(keys[end]! / POSITION_SCALE) === top) end++;
      if (end - start > 1) {
        const group = Array.from(keys.subarray(start, end));
        group.sort((a, b) =>
          compareIds(ids, (a % POSITION_SCALE) * CHUNK_ID_BYTES, ids, (b % POSITION_SCALE) * CHUNK_ID_BYTES),
        );
        keys.set(group, start);
      }
      start = end;
    }
  }

  private async writeBufferedRun(): Promise<void> {
    this.sortBuffer();
    const path = this.runPath();
    const writer = await RunWriter.open(path);
    try {
      for (let i = 0; i < this.buffered; i++) {
        const pending = writer.push(this.ids, (this.keys[i]! % POSITION_SCALE) * CHUNK_ID_BYTES);
        if (pending !== undefined) await pending;
      }
    } finally {
      await writer.close();
    }
    this.runs.push(path);
    this.runsWritten++;
    this.buffered = 0;
  }

  /** Merges runs into the callback, in ascending order, each distinct id once. */
  private async merge(
    paths: readonly string[],
    each: (bytes: Uint8Array, offset: number) => Promise<void> | void,
  ): Promise<void> {
    const readers: RunReader[] = [];
    try {
      for (const path of paths) readers.push(await RunReader.open(path, this.readBufferIds));
      this.maxRunsMerged = Math.max(this.maxRunsMerged, readers.length);
      const heap = new ReaderHeap();
      for (const reader of readers) if (!reader.done) heap.push(reader);
      const last = new Uint8Array(CHUNK_ID_BYTES);
      let any = false;
      while (heap.items.length > 0) {
        const top = heap.items[0]!;
        if (!any || compareIds(last, 0, top.bytes, top.offset) !== 0) {
          last.set(top.bytes.subarray(top.offset, top.offset + CHUNK_ID_BYTES));
          any = true;
          const pending = each(last, 0);
          if (pending !== undefined) await pending;
        }
        top.step();
        if (top.needsFill()) await top.refill();
        heap.siftTop(top.done);
      }
    } finally {
      await Promise.all(readers.map((reader) => reader.close().catch(() => undefined)));
    }
  }

  /**
   * The distinct ids added, ascending (by unsigned bytes, which is the order of their hex). Each yielded array is
   * a view valid until the next step: copy it to keep it. Call once, after the last {@link add}.
   *
   * @throws {@link InvalidArgumentError} when called twice.
   */
  async *sorted(): AsyncGenerator<Uint8Array> {
    if (this.state !== 'adding') throw new InvalidArgumentError('a ChunkIdSorter sorts once');
    this.state = 'sorting';
    if (this.runs.length === 0) {
      // Everything fit in the buffer: no disk.
      this.sortBuffer();
      const out = new Uint8Array(CHUNK_ID_BYTES);
      let any = false;
      for (let i = 0; i < this.buffered; i++) {
        const offset = (this.keys[i]! % POSITION_SCALE) * CHUNK_ID_BYTES;
        if (any && compareIds(out, 0, this.ids, offset) === 0) continue;
        out.set(this.ids.subarray(offset, offset + CHUNK_ID_BYTES));
        any = true;
        this.idsYielded++;
        yield out;
      }
      return;
    }
    if (this.buffered > 0) await this.writeBufferedRun();
    while (this.runs.length > this.fanIn) {
      const batch = this.runs.splice(0, this.fanIn);
      const path = this.runPath();
      const writer = await RunWriter.open(path);
      try {
        await this.merge(batch, (bytes, offset) => writer.push(bytes, offset));
      } finally {
        await writer.close();
      }
      for (const input of batch) await unlink(input);
      this.runs.push(path);
      this.runsWritten++;
      this.intermediateMerges++;
    }
    // The final merge, as a generator.
    const readers: RunReader[] = [];
    try {
      for (const path of this.runs) readers.push(await RunReader.open(path, this.readBufferIds));
      this.maxRunsMerged = Math.max(this.maxRunsMerged, readers.length);
      const heap = new ReaderHeap();
      for (const reader of readers) if (!reader.done) heap.push(reader);
      const last = new Uint8Array(CHUNK_ID_BYTES);
      let any = false;
      while (heap.items.length > 0) {
        const top = heap.items[0]!;
        if (!any || compareIds(last, 0, top.bytes, top.offset) !== 0) {
          last.set(top.bytes.subarray(top.offset, top.offset + CHUNK_ID_BYTES));
          any = true;
          this.idsYielded++;
          yield last;
        }
        top.step();
        if (top.needsFill()) await top.refill();
        heap.siftTop(top.done);
      }
    } finally {
      await Promise.all(readers.map((reader) => reader.close().catch(() => undefined)));
    }
  }

  /** Removes the scratch folder. Idempotent. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    await rm(this.folder, { recursive: true, force: true });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * A cursor over an ascending id stream for a merge-join: {@link seek} moves it to the first id not below the
 * given one and says whether that id is there.
 *
 * @internal
 */
export class SortedIdCursor {
  private current: Uint8Array | undefined;
  private started = false;
  private finished = false;

  constructor(private readonly iterator: AsyncIterator<Uint8Array>) {}

  /** Whether `id` (32 bytes at `offset`) is in the stream; ids sought must not decrease. */
  async seek(id: Uint8Array, offset = 0): Promise<boolean> {
    if (!this.started) {
      this.started = true;
      await this.advance();
    }
    while (!this.finished && compareIds(this.current!, 0, id, offset) < 0) await this.advance();
    return !this.finished && compareIds(this.current!, 0, id, offset) === 0;
  }

  private async advance(): Promise<void> {
    const next = await this.iterator.next();
    if (next.done) {
      this.finished = true;
      this.current = undefined;
    } else this.current = next.value;
  }

  /** Ends the underlying stream early (its `finally` blocks run). */
  async close(): Promise<void> {
    await this.iterator.return?.();
  }
}
