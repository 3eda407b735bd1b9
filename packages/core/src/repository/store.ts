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
}

/**
 * Where a repository keeps its blobs: a flat namespace of `/`-separated keys mapping to immutable byte strings.
 * A `put` is atomic: a reader sees the old blob, the new one whole, or none — never a part. Implementations:
 * the local folder store in core, the S3 store in `@drkit/store-s3`. Every store passes the testkit's
 * `describeStoreContract`.
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
   * Durability: when `put` resolves, the blob written survives a crash of the process or the machine. A put
   * that reports the key already present (`false`) guarantees the present blob is durable too, even when
   * another writer created it and has not finished its own `put` yet: a caller may commit something that
   * references it at once.
   */
  put(key: string, data: Uint8Array, options?: StorePutOptions): Promise<boolean>;
  /**
   * Whether a blob has the key. `true` says the blob is visible, not that it is durable (another writer's `put`
   * may still be running): call {@link Store.flush} before committing anything that relies on it.
   */
  has(key: string, options?: CallOptions): Promise<boolean>;
  /**
   * Makes the blobs of these keys durable, as far as they exist (a missing key is skipped): after it resolves
   * they survive a crash even if the writer that created them crashed before its `put` returned. A backup calls
   * it once, before its commit, for the chunks it found present (`has`) rather than wrote, so it costs one sync
   * per folder, not per blob. Optional: a store whose visible blobs are always durable (S3 acknowledges a
   * `PutObject` only once it is stored) leaves it out.
   */
  flush?(keys: Iterable<string>, options?: CallOptions): Promise<void>;
  /** Lists the blobs whose key starts with `prefix`, in lexicographic key order. */
  list(prefix: string, options?: CallOptions): AsyncIterable<StoreEntry>;
  /** Deletes a blob. Deleting a missing key is not an error. */
  delete(key: string, options?: CallOptions): Promise<void>;
}
