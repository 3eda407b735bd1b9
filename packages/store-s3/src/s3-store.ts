import { createHash } from 'node:crypto';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import {
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import {
  assertValidStoreKey,
  assertValidStorePrefix,
  type CallOptions,
  ChecksumMismatchError,
  InvalidArgumentError,
  isRetryableError,
  retry,
  type Store,
  type StoreEntry,
  type StorePutOptions,
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
  /**
   * Reads a whole blob with GetObject, checked against its ETag (MD5) when the object is single-part.
   *
   * @throws `NotFoundError` (of `@drkit/core`) when no blob has the key, or when the bucket does not exist.
   */
  get(key: string, options?: CallOptions): Promise<Uint8Array>;
  /** The size of a blob from HeadObject, or `undefined` when there is none. */
  size(key: string, options?: CallOptions): Promise<number | undefined>;
  /** Deletes many keys with DeleteObjects, 1 000 per request; missing keys are not an error. */
  deleteMany(keys: Iterable<string>, options?: CallOptions): Promise<void>;
  /** Closes the sockets of the pool. The store must not be used afterwards. */
  destroy(): void;
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

  const call = async <T>(
    operation: string,
    key: string | undefined,
    signal: AbortSignal | undefined,
    attemptFn: (attempt: number, abortSignal: AbortSignal | undefined) => Promise<T>,
  ): Promise<T> => {
    signal?.throwIfAborted();
    return retry(
      async ({ attempt }) => {
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

  const store: S3Store = {
    kind: 's3',
    location: `s3://${bucket}/${root}`,
    createOnlyProvesWhole: true,

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
      return call('PutObject', key, putOptions?.signal, async (attempt, abortSignal) => {
        try {
          await client.send(
            new PutObjectCommand({
              Bucket: bucket,
              Key: root + key,
              Body: data,
              ContentLength: data.byteLength,
              ContentMD5: contentMd5,
              ...(ifAbsent ? { IfNoneMatch: '*' } : {}),
            }),
            { abortSignal },
          );
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
      await call('DeleteObject', key, callOptions?.signal, (_attempt, abortSignal) =>
        client.send(new DeleteObjectCommand({ Bucket: bucket, Key: root + key }), { abortSignal }),
      );
    },

    async deleteMany(keys, callOptions) {
      const signal = callOptions?.signal;
      signal?.throwIfAborted();
      let batch: string[] = [];
      const flush = async (): Promise<void> => {
        if (batch.length === 0) return;
        const objects = batch.map((key) => ({ Key: root + key }));
        batch = [];
        const reply = await call('DeleteObjects', undefined, signal, (_attempt, abortSignal) =>
          client.send(
            new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: objects, Quiet: true } }),
            { abortSignal },
          ),
        );
        const failed = (reply.Errors ?? []).filter((entry) => entry.Code !== 'NoSuchKey');
        if (failed.length > 0) {
          const first = failed[0]!;
          throw mapS3Error(
            { name: first.Code, message: first.Message ?? '', $metadata: {} },
            {
              operation: 'DeleteObjects',
              bucket,
              key: (first.Key ?? '').slice(root.length),
              endpoint,
              secrets,
            },
          );
        }
      };
      for (const key of keys) {
        assertValidStoreKey(key);
        batch.push(key);
        if (batch.length === 1000) await flush();
      }
      await flush();
    },

    destroy() {
      if (options.client === undefined) client.destroy();
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  };
  return store;
}
