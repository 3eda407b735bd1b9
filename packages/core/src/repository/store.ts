import type { CallOptions } from '../spec/v1/options.js';

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
   */
  put(key: string, data: Uint8Array, options?: StorePutOptions): Promise<boolean>;
  /** Whether a blob has the key. */
  has(key: string, options?: CallOptions): Promise<boolean>;
  /** Lists the blobs whose key starts with `prefix`, in lexicographic key order. */
  list(prefix: string, options?: CallOptions): AsyncIterable<StoreEntry>;
  /** Deletes a blob. Deleting a missing key is not an error. */
  delete(key: string, options?: CallOptions): Promise<void>;
}
