import { createHash } from 'node:crypto';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import {
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetBucketVersioningCommand,
  GetObjectCommand,
  GetObjectLockConfigurationCommand,
  type GetObjectLockConfigurationCommandOutput,
  HeadObjectCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  PutObjectCommand,
  PutObjectRetentionCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import {
  assertValidStoreKey,
  assertValidStorePrefix,
  type CallOptions,
  ChecksumMismatchError,
  type DrkitError,
  InvalidArgumentError,
  InvalidSettingsError,
  isRetryableError,
  NotFoundError,
  ObjectLockedError,
  retry,
  type Store,
  type StoreDeleteFailure,
  type StoreEntry,
  type StoreImmutability,
  type StorePutOptions,
  type StoreRetention,
} from '@drkit/core';
import { CreateOnlyConflictError, httpStatus, mapS3Error, s3Code } from './errors.js';

/** Static credentials of an S3 user. */
export interface S3Credentials {
  /** The access key id. */
  readonly accessKeyId: string;
  /** The secret access key; never appears in a message or log. */
  readonly secretAccessKey: string;
  /** A session token, for temporary credentials. */
  readonly sessionToken?: string;
}

/** Retry settings of an {@link S3Store}; every call goes through core's `retry()`, the SDK's own retries are off. */
export interface S3RetryOptions {
  /** Total attempts per call, including the first. Default 6. */
  readonly attempts?: number;
  /** Delay before the second attempt, in ms. Default 200. */
  readonly baseDelayMs?: number;
  /** Upper bound of one delay, in ms. Default 20 000. */
  readonly maxDelayMs?: number;
  /** Waits between attempts; tests pass one that does not wait. Default: a timer. */
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Randomness of the jitter, in [0, 1). Default `Math.random`. */
  readonly random?: () => number;
  /** Called before each wait (the error is a core typed error, its message free of secrets). */
  readonly onRetry?: (info: { error: unknown; attempt: number; delayMs: number }) => void;
}

/** Options of {@link createS3Store}. */
export interface S3StoreOptions {
  /** The bucket; it must exist. */
  readonly bucket: string;
  /** Key prefix inside the bucket (`repos/site-a`), a valid store key or empty. Default: the bucket's root. */
  readonly prefix?: string;
  /** Endpoint URL for an S3-compatible service (`http://127.0.0.1:7480`). Default: AWS for `region`. */
  readonly endpoint?: string;
  /** The region (any string for RGW and MinIO, e.g. `us-east-1`). */
  readonly region: string;
  /** Static credentials. Default: the SDK's default provider chain (environment, profile, instance role). */
  readonly credentials?: S3Credentials;
  /** Path-style addressing (`endpoint/bucket/key`); needed for RGW and MinIO. Default: true when `endpoint` is set. */
  readonly forcePathStyle?: boolean;
  /** Keep-alive sockets per endpoint. Default 16 (measured on Ceph RGW; see the README). */
  readonly maxSockets?: number;
  /** Timeout of one request in ms (no bytes moving). Default 120 000. */
  readonly requestTimeoutMs?: number;
  /** Retry settings. */
  readonly retry?: S3RetryOptions;
  /**
   * An S3 client to use instead of building one (its retries should be off: `maxAttempts: 1`). The other connection
   * options are then ignored, except `endpoint` which only words messages.
   */
  readonly client?: S3Client;
}

/** The S3 store: a core `Store` plus a bulk delete and the client it uses. */
export interface S3Store extends Store {
  /** `s3`. */
  readonly kind: 's3';
  /**
   * `true`: a visible S3 object is always whole, and a create-only PutObject answered 412 proves it, so a backup
   * writes a new chunk without a HeadObject first (see core's `Store.createOnlyProvesWhole`).
   */
  readonly createOnlyProvesWhole: true;
  /** `maxSockets`: a restore or verify keeps that many GetObject in flight (see core's `Store.readConcurrency`). */
  readonly readConcurrency: number;
  /**
   * Reads a whole blob with GetObject, checked against its ETag (MD5) when the object is single-part.
   *
   * @throws `NotFoundError` (of `@drkit/core`) when no blob has the key, or when the bucket does not exist.
   */
  get(key: string, options?: CallOptions): Promise<Uint8Array>;
  /**
   * Deletes a blob; a missing key is not an error. On a versioned bucket (every Object Lock bucket is) every
   * version of the key is deleted, so no delete marker hides data that still takes space.
   *
   * @throws `ObjectLockedError` (of `@drkit/core`, with `key` and `retainUntil`) when a version is still locked.
   */
  delete(key: string, options?: CallOptions): Promise<void>;
  /** The size of a blob from HeadObject, or `undefined` when there is none. */
  size(key: string, options?: CallOptions): Promise<number | undefined>;
  /**
   * Deletes many keys with DeleteObjects, 1 000 per request (on a versioned bucket, every version of each key);
   * missing keys are not an error. Resolves with the keys it could not delete, each with a core typed error
   * (`ObjectLockedError` for a version still locked).
   */
  deleteMany(keys: Iterable<string>, options?: CallOptions): Promise<StoreDeleteFailure[]>;
  /** S3 Object Lock: lock blobs until a date (needs a bucket created with Object Lock; see the README). */
  readonly immutability: StoreImmutability;
  /** Requests sent, by S3 operation (`PutObject`, `DeleteObjects`, …), attempts included: for cost checks. */
  readonly requests: Readonly<Record<string, number>>;
  /** Closes the sockets of the pool. The store must not be used afterwards. */
  destroy(): void;
}

/** The S3 Object Lock mode of a retention. */
function lockMode(retention: StoreRetention): 'GOVERNANCE' | 'COMPLIANCE' {
  return retention.mode === 'compliance' ? 'COMPLIANCE' : 'GOVERNANCE';
}

/** Whether a mapped error is S3's 403 (access denied, or Object Lock refusing). */
function PermissionErrorLike(error: unknown): boolean {
  return (error as DrkitError | undefined)?.code === 'PERMISSION_DENIED';
}

const md5 = (data: Uint8Array): Buffer => createHash('md5').update(data).digest();

/** The MD5 of a single-part object's ETag (`"hex"`), or `undefined` for multipart or unusual ETags. */
function etagMd5(etag: string | undefined): string | undefined {
  if (etag === undefined) return undefined;
  const bare = etag.replace(/^W\//, '').replace(/"/g, '').toLowerCase();
  return /^[0-9a-f]{32}$/.test(bare) ? bare : undefined;
}

async function bodyBytes(body: unknown): Promise<Uint8Array> {
  if (body === undefined || body === null) return new Uint8Array(0);
  const withTransform = body as { transformToByteArray?: () => Promise<Uint8Array> };
  if (typeof withTransform.transformToByteArray === 'function') return withTransform.transformToByteArray();
  if (body instanceof Uint8Array) return body;
  const parts: Buffer[] = [];
  for await (const part of body as AsyncIterable<Uint8Array>) parts.push(Buffer.from(part));
  return Buffer.concat(parts);
}

/**
 * Creates a repository store on an S3-compatible bucket (AWS S3, Ceph RGW, MinIO). Every write sends `Content-MD5`;
 * create-only writes use `If-None-Match: *`; reads of single-part objects are checked against their ETag (MD5);
 * failures are core typed errors (see the README) and are retried with backoff through core's `retry()`.
 *
 * @example
 * ```ts
 * const store = createS3Store({
 *   bucket: 'backups',
 *   prefix: 'site-a',
 *   endpoint: 'http://127.0.0.1:7480',
 *   region: 'us-east-1',
 *   credentials: { accessKeyId: 'AKIA…', secretAccessKey: '…' },
 * });
 * const repository = await createRepository({ store });
 * ```
 */
export function createS3Store(options: S3StoreOptions): S3Store {
  if (typeof options.bucket !== 'string' || options.bucket === '') {
    throw new InvalidArgumentError('createS3Store: bucket must be a non-empty string');
  }
  const rawPrefix = (options.prefix ?? '').replace(/\/+$/, '');
  if (rawPrefix !== '') assertValidStoreKey(rawPrefix);
  const root = rawPrefix === '' ? '' : `${rawPrefix}/`;
  const bucket = options.bucket;
  const endpoint = options.endpoint ?? `https://s3.${options.region}.amazonaws.com`;
  const secrets = [options.credentials?.secretAccessKey, options.credentials?.sessionToken].filter(
    (value): value is string => typeof value === 'string' && value !== '',
  );
  const maxSockets = options.maxSockets ?? 16;
  const agentOptions = { keepAlive: true, maxSockets, maxFreeSockets: maxSockets };
  const httpAgent = new HttpAgent(agentOptions);
  const httpsAgent = new HttpsAgent(agentOptions);
  const client =
    options.client ??
    new S3Client({
      region: options.region,
      ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }),
      forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
      ...(options.credentials === undefined ? {} : { credentials: { ...options.credentials } }),
      maxAttempts: 1,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: {
        httpAgent,
        httpsAgent,
        requestTimeout: options.requestTimeoutMs ?? 120_000,
        connectionTimeout: 10_000,
      },
    });
  const retryOptions = options.retry ?? {};
  const requests: Record<string, number> = {};

  const call = async <T>(
    operation: string,
    key: string | undefined,
    signal: AbortSignal | undefined,
    attemptFn: (attempt: number, abortSignal: AbortSignal | undefined) => Promise<T>,
  ): Promise<T> => {
    signal?.throwIfAborted();
    return retry(
      async ({ attempt }) => {
        requests[operation] = (requests[operation] ?? 0) + 1;
        try {
          return await attemptFn(attempt, signal);
        } catch (error) {
          if (signal?.aborted) throw signal.reason;
          throw mapS3Error(error, { operation, bucket, key, endpoint, secrets });
        }
      },
      {
        attempts: retryOptions.attempts ?? 6,
        baseDelayMs: retryOptions.baseDelayMs ?? 200,
        maxDelayMs: retryOptions.maxDelayMs ?? 20_000,
        isRetryable: isRetryableError,
        ...(retryOptions.sleep === undefined ? {} : { sleep: retryOptions.sleep }),
        ...(retryOptions.random === undefined ? {} : { random: retryOptions.random }),
        ...(retryOptions.onRetry === undefined ? {} : { onRetry: retryOptions.onRetry }),
        ...(signal === undefined ? {} : { signal }),
      },
    );
  };

  const head = async (key: string, signal: AbortSignal | undefined) =>
    call('HeadObject', key, signal, async (_attempt, abortSignal) => {
      try {
        return await client.send(new HeadObjectCommand({ Bucket: bucket, Key: root + key }), { abortSignal });
      } catch (error) {
        // HEAD has no body: a 404 for a missing bucket looks like a missing key (see the README).
        if (httpStatus(error) === 404 && s3Code(error) !== 'NoSuchBucket') return undefined;
        if (httpStatus(error) === 403) {
          // Nor can a 403 tell a wrong secret from a missing permission: a one-byte GET says which (error path only).
          await client.send(new GetObjectCommand({ Bucket: bucket, Key: root + key, Range: 'bytes=0-0' }), {
            abortSignal,
          });
        }
        throw error;
      }
    });

  // A versioned bucket (every Object Lock bucket is): a plain DeleteObject only adds a delete marker, so deletes
  // remove versions; and Ceph RGW 16 ignores If-None-Match there, so create-only writes are checked afterwards.
  let versioned: Promise<boolean> | undefined;
  const isVersioned = (signal: AbortSignal | undefined): Promise<boolean> => {
    versioned ??= call('GetBucketVersioning', undefined, signal, async (_attempt, abortSignal) => {
      const reply = await client.send(new GetBucketVersioningCommand({ Bucket: bucket }), { abortSignal });
      return reply.Status === 'Enabled' || reply.Status === 'Suspended';
    });
    versioned.catch(() => {
      versioned = undefined;
    });
    return versioned;
  };

  interface KeyVersion {
    readonly versionId: string;
    readonly marker: boolean;
    readonly modified: number;
    /** The MD5 of a single-part version's ETag (none for delete markers). */
    readonly md5: string | undefined;
  }
  /**
   * The versions and delete markers of bucket keys from `Prefix` (after `KeyMarker`), page by page, until `keep`
   * says stop: every version S3 lists with its full key. At most `maxPages` pages (undefined: no limit).
   */
  const listVersionPages = async (
    prefix: string,
    keyMarker: string | undefined,
    signal: AbortSignal | undefined,
    visit: (fullKey: string, version: KeyVersion) => boolean,
    maxPages?: number,
  ): Promise<'done' | 'stopped' | 'budget'> => {
    let marker = keyMarker;
    let versionMarker: string | undefined;
    for (let pages = 0; maxPages === undefined || pages < maxPages; pages++) {
      const page = await call('ListObjectVersions', undefined, signal, (_attempt, abortSignal) =>
        client.send(
          new ListObjectVersionsCommand({
            Bucket: bucket,
            Prefix: prefix,
            ...(marker === undefined ? {} : { KeyMarker: marker }),
            ...(versionMarker === undefined ? {} : { VersionIdMarker: versionMarker }),
          }),
          { abortSignal },
        ),
      );
      const entries = [
        ...(page.Versions ?? []).map((entry) => ({ entry, marker: false })),
        ...(page.DeleteMarkers ?? []).map((entry) => ({ entry, marker: true })),
      ];
      for (const { entry, marker: isMarker } of entries) {
        if (entry.Key === undefined || entry.VersionId === undefined) continue;
        const version: KeyVersion = {
          versionId: entry.VersionId,
          marker: isMarker,
          modified: entry.LastModified?.getTime() ?? 0,
          md5: isMarker ? undefined : etagMd5((entry as { ETag?: string }).ETag),
        };
        if (!visit(entry.Key, version)) return 'stopped';
      }
      if (!page.IsTruncated) return 'done';
      marker = page.NextKeyMarker;
      versionMarker = page.NextVersionIdMarker;
    }
    return 'budget';
  };

  /** Every version and delete marker of one key: its versions newest first, then its delete markers. */
  const versionsOf = async (key: string, signal: AbortSignal | undefined): Promise<KeyVersion[]> => {
    const found: KeyVersion[] = [];
    await listVersionPages(root + key, undefined, signal, (fullKey, version) => {
      if (fullKey === root + key) found.push(version);
      return true;
    });
    return [...found.filter((v) => !v.marker), ...found.filter((v) => v.marker)];
  };

  /**
   * The versions of many keys. A batch of neighbouring keys (a prune's candidates come in key order) is listed as
   * one range — ListObjectVersions from just before the first key, 1 000 versions a page, until past the last —
   * within a budget of a page per 10 keys; keys the range did not reach are listed one by one (8 at a time). So a
   * dense batch costs about one request per 1 000 versions and a sparse one no more than a request per key.
   */
  const versionsOfMany = async (
    keys: readonly string[],
    signal: AbortSignal | undefined,
  ): Promise<Map<string, KeyVersion[]>> => {
    const sorted = [...new Set(keys)].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    const found = new Map<string, KeyVersion[]>(sorted.map((key) => [key, []]));
    let reached = 0; // keys below this index were passed by the range listing
    if (sorted.length > 16) {
      const first = root + sorted[0]!;
      const last = root + sorted[sorted.length - 1]!;
      let common = 0;
      while (common < first.length && first[common] === last[common]) common++;
      const lastBytes = Buffer.from(last);
      const outcome = await listVersionPages(
        first.slice(0, common),
        // Keys strictly after the first key less its last character: the first key and everything after it.
        first.slice(0, -1),
        signal,
        (fullKey, version) => {
          if (Buffer.compare(Buffer.from(fullKey), lastBytes) > 0) return false;
          const key = fullKey.slice(root.length);
          found.get(key)?.push(version);
          while (reached < sorted.length && root + sorted[reached]! < fullKey) reached++;
          return true;
        },
        Math.ceil(sorted.length / 10),
      );
      // The key being listed when the budget ran out may have more versions: list it again with the rest.
      if (outcome === 'budget') {
        if (reached < sorted.length) found.set(sorted[reached]!, []);
      } else reached = sorted.length;
    }
    const rest = sorted.slice(reached);
    for (let i = 0; i < rest.length; i += 8) {
      const part = rest.slice(i, i + 8);
      const lists = await Promise.all(part.map((key) => versionsOf(key, signal)));
      lists.forEach((versions, j) => {
        found.set(part[j]!, versions);
      });
    }
    return found;
  };

  /** The lock date of one version (error path of a refused delete), or undefined when it cannot be read. */
  const lockDateOf = async (key: string, versionId: string | undefined): Promise<Date | undefined> => {
    try {
      const reply = await call('HeadObject', key, undefined, (_attempt, abortSignal) =>
        client.send(
          new HeadObjectCommand({
            Bucket: bucket,
            Key: root + key,
            ...(versionId === undefined ? {} : { VersionId: versionId }),
          }),
          { abortSignal },
        ),
      );
      return reply.ObjectLockRetainUntilDate;
    } catch {
      return undefined;
    }
  };

  const lockedError = (key: string, until: Date | undefined): ObjectLockedError =>
    new ObjectLockedError(
      `DeleteObject s3://${bucket}/${root}${key}: the blob is locked by S3 Object Lock${
        until === undefined ? '' : ` until ${until.toISOString()}`
      }; drkit does not bypass it: delete it after that date`,
      key,
      until,
    );

  /** S3 answered that Object Lock forbids deleting a version. */
  const isLockRefusal = (code: string | undefined, status: number | undefined) =>
    code === 'AccessDenied' || status === 403;

  /**
   * Deletes every version of each key (DeleteObjects with version ids, 1 000 a request): the blob is gone, not
   * hidden behind a delete marker. Failures per key, a locked version as `ObjectLockedError`.
   */
  const deleteVersions = async (
    keys: readonly string[],
    signal: AbortSignal | undefined,
  ): Promise<StoreDeleteFailure[]> => {
    const targets: { key: string; versionId: string }[] = [];
    for (const [key, versions] of await versionsOfMany(keys, signal)) {
      for (const version of versions) targets.push({ key, versionId: version.versionId });
    }
    const failures = new Map<string, DrkitError>();
    for (let i = 0; i < targets.length; i += 1000) {
      const part = targets.slice(i, i + 1000);
      const reply = await call('DeleteObjects', undefined, signal, (_attempt, abortSignal) =>
        client.send(
          new DeleteObjectsCommand({
            Bucket: bucket,
            Delete: {
              Objects: part.map((t) => ({ Key: root + t.key, VersionId: t.versionId })),
              Quiet: true,
            },
          }),
          { abortSignal },
        ),
      );
      for (const entry of reply.Errors ?? []) {
        if (entry.Code === 'NoSuchKey' || entry.Code === 'NoSuchVersion') continue;
        const key = (entry.Key ?? '').slice(root.length);
        if (failures.has(key)) continue;
        failures.set(
          key,
          isLockRefusal(entry.Code, undefined)
            ? lockedError(key, await lockDateOf(key, entry.VersionId))
            : mapS3Error(
                { name: entry.Code, message: entry.Message ?? '', $metadata: {} },
                { operation: 'DeleteObjects', bucket, key, endpoint, secrets },
              ),
        );
      }
    }
    return [...failures].map(([key, error]) => ({ key, error }));
  };

  /**
   * After a create-only PutObject on a versioned bucket (which RGW 16 does not refuse): whether a version older
   * than ours, not hidden by a delete marker, existed. Then the key was present and ours is removed again (of
   * racing writers the oldest version wins, as If-None-Match would have decided). When the put was retried after
   * a lost reply, an older version with our bytes is our own first attempt: the put stands and the duplicate goes.
   */
  const lostCreateOnly = async (
    key: string,
    ours: string,
    retried: boolean,
    md5hex: string,
    signal: AbortSignal | undefined,
  ): Promise<boolean> => {
    const all = await versionsOf(key, signal);
    const newestMarker = Math.max(-1, ...all.filter((v) => v.marker).map((v) => v.modified));
    const versionsOnly = all.filter((v) => !v.marker);
    const at = versionsOnly.findIndex((v) => v.versionId === ours);
    const older = at < 0 ? [] : versionsOnly.slice(at + 1).filter((v) => v.modified > newestMarker);
    if (at < 0 || older.length === 0) return false;
    const lost = !(retried && older.every((v) => v.md5 === md5hex));
    try {
      await call('DeleteObject', key, signal, (_attempt, abortSignal) =>
        client.send(new DeleteObjectCommand({ Bucket: bucket, Key: root + key, VersionId: ours }), {
          abortSignal,
        }),
      );
    } catch (error) {
      // Locked by its own put (a chunk: the same bytes as the present version): it stays until its date.
      if (!PermissionErrorLike(error)) throw error;
    }
    return lost;
  };

  let lockChecked: Promise<void> | undefined;
  const immutability: StoreImmutability = {
    check(callOptions) {
      lockChecked ??= call(
        'GetObjectLockConfiguration',
        undefined,
        callOptions?.signal,
        async (_a, abortSignal) => {
          let reply: GetObjectLockConfigurationCommandOutput | undefined;
          try {
            reply = await client.send(new GetObjectLockConfigurationCommand({ Bucket: bucket }), {
              abortSignal,
            });
          } catch (error) {
            if (s3Code(error) !== 'ObjectLockConfigurationNotFoundError') throw error;
          }
          const config = reply?.ObjectLockConfiguration;
          if (config?.ObjectLockEnabled !== 'Enabled') {
            throw new InvalidSettingsError(
              'immutability',
              `bucket "${bucket}" does not have S3 Object Lock enabled; create the repository in a bucket created with Object Lock (CreateBucket with ObjectLockEnabledForBucket), or leave immutability out`,
            );
          }
          if (config.Rule?.DefaultRetention !== undefined) {
            throw new InvalidSettingsError(
              'immutability',
              `bucket "${bucket}" has a default Object Lock retention, which would lock drkit's lock and prune blobs too; remove the bucket's default retention rule (drkit locks each blob itself)`,
            );
          }
        },
      );
      lockChecked.catch(() => {
        lockChecked = undefined;
      });
      return lockChecked;
    },

    async retain(key, retention, callOptions) {
      assertValidStoreKey(key);
      const signal = callOptions?.signal;
      try {
        await call('PutObjectRetention', key, signal, (_attempt, abortSignal) =>
          client.send(
            new PutObjectRetentionCommand({
              Bucket: bucket,
              Key: root + key,
              Retention: { Mode: lockMode(retention), RetainUntilDate: retention.until },
            }),
            { abortSignal },
          ),
        );
        return true;
      } catch (error) {
        if (NotFoundError.isInstance(error)) return false;
        if (!PermissionErrorLike(error)) throw error;
        // S3 refuses to shorten a lock without a bypass, which drkit never asks for: a later lock is fine as it is.
        const present = await immutability.retention(key, { signal });
        if (present !== undefined && present.until.getTime() >= retention.until.getTime()) return true;
        throw error;
      }
    },

    async retention(key, callOptions) {
      assertValidStoreKey(key);
      const reply = await head(key, callOptions?.signal);
      if (reply?.ObjectLockRetainUntilDate === undefined || reply.ObjectLockMode === undefined)
        return undefined;
      return {
        mode: reply.ObjectLockMode === 'COMPLIANCE' ? 'compliance' : 'governance',
        until: reply.ObjectLockRetainUntilDate,
      };
    },
  };

  const store: S3Store = {
    kind: 's3',
    requests,
    immutability,
    location: `s3://${bucket}/${root}`,
    createOnlyProvesWhole: true,
    readConcurrency: maxSockets,

    async get(key, callOptions) {
      assertValidStoreKey(key);
      return call('GetObject', key, callOptions?.signal, async (_attempt, abortSignal) => {
        const reply = await client.send(new GetObjectCommand({ Bucket: bucket, Key: root + key }), {
          abortSignal,
        });
        const bytes = await bodyBytes(reply.Body);
        const expected = etagMd5(reply.ETag);
        if (expected !== undefined && md5(bytes).toString('hex') !== expected) {
          throw new ChecksumMismatchError(
            `GetObject s3://${bucket}/${key}: the bytes read do not match the object's ETag (MD5)`,
            { retryable: true },
          );
        }
        if (reply.ContentLength !== undefined && reply.ContentLength !== bytes.byteLength) {
          throw new ChecksumMismatchError(
            `GetObject s3://${bucket}/${key}: read ${bytes.byteLength} bytes of ${reply.ContentLength}`,
            { retryable: true },
          );
        }
        return bytes;
      });
    },

    async put(key, data, putOptions?: StorePutOptions) {
      assertValidStoreKey(key);
      const digest = md5(data);
      const contentMd5 = digest.toString('base64');
      const ifAbsent = putOptions?.ifAbsent === true;
      const retain = putOptions?.retain;
      const checkAfter = ifAbsent && (await isVersioned(putOptions?.signal));
      // On a versioned bucket a create-only write asks first: If-None-Match may be ignored (RGW 16), and a version
      // written with a lock over a present key could not be removed again until its date (its space lost).
      if (checkAfter && (await head(key, putOptions?.signal)) !== undefined) return false;
      let versionId: string | undefined;
      let attempts = 0;
      const written = await call('PutObject', key, putOptions?.signal, async (attempt, abortSignal) => {
        attempts = attempt;
        try {
          const reply = await client.send(
            new PutObjectCommand({
              Bucket: bucket,
              Key: root + key,
              Body: data,
              ContentLength: data.byteLength,
              ContentMD5: contentMd5,
              ...(ifAbsent ? { IfNoneMatch: '*' } : {}),
              ...(retain === undefined
                ? {}
                : { ObjectLockMode: lockMode(retain), ObjectLockRetainUntilDate: retain.until }),
            }),
            { abortSignal },
          );
          versionId = reply.VersionId;
          return true;
        } catch (error) {
          if (!ifAbsent || httpStatus(error) !== 412) throw error;
          if (attempt === 1) return false;
          // A retry after an attempt whose outcome we did not see: the 412 may be our own first write.
          const present = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: root + key }), {
            abortSignal,
          });
          const presentMd5 = etagMd5(present.ETag);
          let identical: boolean;
          if (presentMd5 !== undefined) identical = presentMd5 === digest.toString('hex');
          else {
            const reply = await client.send(new GetObjectCommand({ Bucket: bucket, Key: root + key }), {
              abortSignal,
            });
            identical = Buffer.from(await bodyBytes(reply.Body)).equals(Buffer.from(data));
          }
          if (identical) return true;
          throw new CreateOnlyConflictError(
            `PutObject s3://${bucket}/${root}${key}: a create-only write was retried after its reply was lost, ` +
              'and the key now holds different bytes: another writer created it first',
            key,
          );
        }
      });
      if (written && checkAfter && versionId !== undefined) {
        const retried = attempts > 1;
        return !(await lostCreateOnly(key, versionId, retried, digest.toString('hex'), putOptions?.signal));
      }
      return written;
    },

    async has(key, callOptions) {
      assertValidStoreKey(key);
      return (await head(key, callOptions?.signal)) !== undefined;
    },

    async size(key, callOptions) {
      assertValidStoreKey(key);
      const reply = await head(key, callOptions?.signal);
      return reply === undefined ? undefined : (reply.ContentLength ?? 0);
    },

    async *list(prefix, callOptions): AsyncIterable<StoreEntry> {
      assertValidStorePrefix(prefix);
      const signal = callOptions?.signal;
      let token: string | undefined;
      do {
        const page = await call('ListObjectsV2', undefined, signal, (_attempt, abortSignal) =>
          client.send(
            new ListObjectsV2Command({
              Bucket: bucket,
              Prefix: root + prefix,
              ...(token === undefined ? {} : { ContinuationToken: token }),
            }),
            { abortSignal },
          ),
        );
        for (const object of page.Contents ?? []) {
          if (object.Key === undefined || !object.Key.startsWith(root)) continue;
          yield {
            key: object.Key.slice(root.length),
            size: object.Size ?? 0,
            modifiedAt: object.LastModified ?? new Date(0),
          };
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token !== undefined);
    },

    async delete(key, callOptions) {
      assertValidStoreKey(key);
      const signal = callOptions?.signal;
      if (await isVersioned(signal)) {
        const [failure] = await deleteVersions([key], signal);
        if (failure !== undefined) throw failure.error;
        return;
      }
      await call('DeleteObject', key, signal, (_attempt, abortSignal) =>
        client.send(new DeleteObjectCommand({ Bucket: bucket, Key: root + key }), { abortSignal }),
      );
    },

    async deleteMany(keys, callOptions) {
      const signal = callOptions?.signal;
      signal?.throwIfAborted();
      const all = [...keys];
      for (const key of all) assertValidStoreKey(key);
      if (await isVersioned(signal)) {
        const failures: StoreDeleteFailure[] = [];
        for (let i = 0; i < all.length; i += 1000) {
          failures.push(...(await deleteVersions(all.slice(i, i + 1000), signal)));
        }
        return failures;
      }
      const failures: StoreDeleteFailure[] = [];
      for (let i = 0; i < all.length; i += 1000) {
        const objects = all.slice(i, i + 1000).map((key) => ({ Key: root + key }));
        const reply = await call('DeleteObjects', undefined, signal, (_attempt, abortSignal) =>
          client.send(
            new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: objects, Quiet: true } }),
            { abortSignal },
          ),
        );
        for (const entry of reply.Errors ?? []) {
          if (entry.Code === 'NoSuchKey') continue;
          const key = (entry.Key ?? '').slice(root.length);
          failures.push({
            key,
            error: mapS3Error(
              { name: entry.Code, message: entry.Message ?? '', $metadata: {} },
              { operation: 'DeleteObjects', bucket, key, endpoint, secrets },
            ),
          });
        }
      }
      return failures;
    },

    destroy() {
      if (options.client === undefined) client.destroy();
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  };
  return store;
}
