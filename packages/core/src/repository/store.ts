import type { DrkitError } from '../errors/drkit-error.js';
import type { CallOptions } from '../spec/v2/index.js';

/** One blob listed by {@link Store.list}. */
export interface StoreEntry {
  /** Full key, e.g. `chunks/ab/ab12…`. */
  readonly key: string;
  /** Size in bytes. */
  readonly size: number;
  /** Last modification time. */
  readonly modifiedAt: Date;
}

/** Options of {@link Store.put}. */
export interface StorePutOptions extends CallOptions {
  /**
   * Create-only: write only if no blob has the key, atomically (S3 `If-None-Match: *`, a hard link on a local
   * folder). Of several racing writers exactly one wins.
   */
  readonly ifAbsent?: boolean;
  /**
   * Whether the blob must survive a crash of the machine as soon as `put` resolves. Default `true`.
   *
   * `false` is for blobs that a later {@link Store.sync} makes durable in one step with many others (the chunks
   * of a backup, synced once before its point is committed): the store may skip its per-blob sync, and until that
   * `sync` resolves a crash of the machine may lose the blob, never leave a part of it under its key. A crash of
   * the process alone loses nothing either way. Reads see the blob at once, like any other.
   */
  readonly durable?: boolean;
  /**
   * Lock the written blob until a date (S3 Object Lock): the store refuses to delete or overwrite that version
   * before it. Only for a store with {@link Store.immutability}; a store without it must not be given one (the
   * repository never does).
   */
  readonly retain?: StoreRetention;
}

/** How long, and how strictly, a store keeps a blob it may not delete ({@link StoreImmutability}). */
export interface StoreRetention {
  /**
   * `governance`: a user with a special permission can still remove the lock (S3 `s3:BypassGovernanceRetention`);
   * `compliance`: nobody can, the root account included, until the date.
   */
  readonly mode: 'governance' | 'compliance';
  /** Until when the blob is kept. */
  readonly until: Date;
}

/**
 * A store that can lock blobs against deletion until a date (S3 Object Lock). A repository created with
 * `immutability` needs it; drkit never bypasses a lock it set.
 */
export interface StoreImmutability {
  /**
   * Checks that the store can lock blobs now (S3: the bucket has Object Lock enabled).
   *
   * @throws {@link InvalidSettingsError} (field `immutability`) saying what to change when it cannot.
   */
  check(options?: CallOptions): Promise<void>;
  /**
   * Extends the lock of the present blob to `retention.until`; never shortens it (a later lock stays as it is).
   * Returns `false` when no blob has the key. One call for the store in the common case.
   */
  retain(key: string, retention: StoreRetention, options?: CallOptions): Promise<boolean>;
  /** The lock of the present blob, or `undefined` when it has none or there is no blob. */
  retention(key: string, options?: CallOptions): Promise<StoreRetention | undefined>;
}

/** A key {@link Store.deleteMany} could not delete, and why. */
export interface StoreDeleteFailure {
  readonly key: string;
  /** A typed error: {@link ObjectLockedError} for a blob still locked, else what the store answered. */
  readonly error: DrkitError;
}

/**
 * Where a repository keeps its blobs: a flat namespace of `/`-separated keys mapping to immutable byte strings.
 * A `put` is atomic: a reader sees the old blob, the new one whole, or none — never a part. Implementations:
 * the local folder store in core, the S3 store in `@drkit/store-s3`. Every store passes the testkit's
 * `describeStoreContract`.
 *
 * Durability has two steps. A `put` (default `durable: true`) is durable when it resolves. A `put` with
 * `durable: false` is visible at once but may be lost by a machine crash until a {@link Store.sync} that names
 * its key resolves; a writer that stores many blobs before one commit (a backup: its chunks, then its point)
 * writes them with `durable: false` and calls `sync` once, before it writes the blob that references them.
 */
export interface Store {
  /** What kind of store this is (`local-folder`, `s3`), for messages. */
  readonly kind: string;
  /** Where it is, for messages (a folder path, `s3://bucket/prefix`). Never contains credentials. */
  readonly location: string;
  /**
   * Reads a whole blob.
   *
   * @throws {@link NotFoundError} when no blob has the key.
   */
  get(key: string, options?: CallOptions): Promise<Uint8Array>;
  /**
   * Writes a blob atomically. Returns `false` only with `ifAbsent` when the key already existed (nothing
   * written), `true` otherwise.
   *
   * Durability: with `durable` (the default), when `put` resolves the blob written survives a crash of the
   * process or the machine, and a put that reports the key already present (`false`) guarantees the present blob
   * is durable too, even when another writer created it with `durable: false` or has not finished its own `put`
   * yet: a caller may commit something that references it at once. With `durable: false` neither is promised
   * until {@link Store.sync} covers the key.
   *
   * The store is done with `data` when `put` resolves: it must not keep or read the buffer afterwards (copy it
   * to keep it), since callers reuse it then (the backup engine recycles its chunk buffers, an encrypted
   * repository its sealing buffers).
   */
  put(key: string, data: Uint8Array, options?: StorePutOptions): Promise<boolean>;
  /**
   * Whether a blob has the key. `true` says the blob is visible, not that it is durable (another writer may have
   * put it with `durable: false`, or its `put` may still be running): {@link Store.sync} it before committing
   * anything that relies on it.
   */
  has(key: string, options?: CallOptions): Promise<boolean>;
  /**
   * Makes the blobs of these keys durable, as far as they exist (a missing key is skipped), whoever wrote them
   * and however (`durable: false`, or a writer that crashed before its `put` returned): after it resolves they
   * survive a crash of the machine. One step for many blobs: a backup calls it once, before its commit, for every
   * chunk it wrote or found present. The keys are read once, in order, and may come from a generator. A store may
   * make more durable than asked (the local folder store's `filesystem` level syncs its whole file system).
   * Optional: a store whose visible blobs are always durable (S3 acknowledges a `PutObject` only once it is
   * stored) leaves it out, and a caller then has nothing to do.
   */
  sync?(keys: Iterable<string>, options?: CallOptions): Promise<void>;
  /**
   * The size in bytes of the blob with the key, or `undefined` when there is none: one metadata call (a stat), the
   * content is not read. Optional: a backup uses it to check that a chunk it finds present is not a name whose
   * content a crash lost (a store whose visible blobs are always whole leaves it out).
   */
  size?(key: string, options?: CallOptions): Promise<number | undefined>;
  /**
   * Declares that a create-only `put` (`ifAbsent`) that finds the key taken (returns `false`) proves a whole blob
   * is stored there, and that asking first ({@link Store.has}, {@link Store.size}) costs a request of its own. Over
   * such a store a backup writes each chunk it does not know yet create-only without asking whether it exists: the
   * put settles it in one request (a taken key counts as deduplicated, a race between writers is settled by the
   * store), and a taken key is not checked again for lost content. Set by the S3 store (a visible object is always
   * whole, and a HeadObject costs as much as the conditional PutObject); left out by the local folder store, whose
   * stat is cheap and spares a write, and where a machine crash can leave a durable name with its content lost.
   */
  /**
   * How many reads the store serves at once to advantage (an S3 store: its socket pool). A reader of many blobs
   * (restore, verify) keeps at least this many in flight, each holding one chunk: over a network the reads are
   * latency-bound, and a window sized for the chunk workers alone leaves most of the pool idle. Absent: the
   * workers' need alone (a local folder, where a read is a page-cache copy).
   */
  readonly readConcurrency?: number;
  readonly createOnlyProvesWhole?: true;
  /** Lists the blobs whose key starts with `prefix`, in lexicographic key order. */
  list(prefix: string, options?: CallOptions): AsyncIterable<StoreEntry>;
  /**
   * Deletes a blob. Deleting a missing key is not an error.
   *
   * @throws {@link ObjectLockedError} when the store keeps the blob locked ({@link StoreImmutability}).
   */
  delete(key: string, options?: CallOptions): Promise<void>;
  /**
   * Deletes many blobs in as few requests as the store allows (S3 DeleteObjects: 1 000 keys a request). Missing
   * keys are not an error. Resolves with the keys it could not delete, each with a typed error (a locked blob:
   * {@link ObjectLockedError}); rejects only when the call as a whole failed (then some keys may be deleted).
   * Optional: prune uses it when present, else {@link Store.delete} one key at a time.
   */
  deleteMany?(keys: readonly string[], options?: CallOptions): Promise<StoreDeleteFailure[]>;
  /**
   * Locking blobs until a date (S3 Object Lock), for a repository created with `immutability`. Optional: a
   * store without it cannot hold such a repository (the local folder store has none).
   */
  readonly immutability?: StoreImmutability;
}
