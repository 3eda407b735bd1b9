import { createHash } from 'node:crypto';
import { inspect } from 'node:util';
import {
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetBucketVersioningCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  PutObjectCommand,
  PutObjectRetentionCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import {
  AuthenticationError,
  ChecksumMismatchError,
  DrkitError,
  NotFoundError,
  ObjectLockedError,
  PermissionError,
  ThrottledError,
  UnreachableError,
} from '@drkit/core';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { CreateOnlyConflictError, createS3Store, mapS3Error, type S3StoreOptions } from '../../src/index.js';
import { rejection } from '../rejection.js';

const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY';
const client = new S3Client({
  region: 'us-east-1',
  endpoint: 'http://127.0.0.1:9',
  forcePathStyle: true,
  credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: SECRET },
  maxAttempts: 1,
});
const mock = mockClient(client);
afterEach(() => mock.reset());

function s3Error(
  name: string,
  status: number,
  message = `${name} happened`,
  headers: Record<string, string> = {},
) {
  const error = new S3ServiceException({
    name,
    $fault: status >= 500 ? 'server' : 'client',
    message,
    $metadata: { httpStatusCode: status },
  });
  // The SDK's deserializer attaches the HTTP response to the error like this.
  Object.defineProperty(error, '$response', { value: { statusCode: status, headers, body: undefined } });
  return error;
}

function networkError(code: string): Error {
  return Object.assign(new Error(`connect ${code} 127.0.0.1:9`), { code });
}

function store(waits: number[] = [], extra: Partial<S3StoreOptions> = {}) {
  // An unversioned bucket: create-only writes rely on If-None-Match alone.
  mock.on(GetBucketVersioningCommand).resolves({});
  return createS3Store({
    bucket: 'b',
    prefix: 'p',
    endpoint: 'http://127.0.0.1:9',
    region: 'us-east-1',
    credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: SECRET },
    client,
    retry: {
      sleep: async (ms) => {
        waits.push(ms);
      },
      random: () => 0.5,
    },
    ...extra,
  });
}

const context = { operation: 'GetObject', bucket: 'b', key: 'k', endpoint: 'http://x', secrets: [SECRET] };

describe('error mapping', () => {
  it('maps S3 codes and statuses to core typed errors', () => {
    expect(AuthenticationError.isInstance(mapS3Error(s3Error('SignatureDoesNotMatch', 403), context))).toBe(
      true,
    );
    expect(AuthenticationError.isInstance(mapS3Error(s3Error('InvalidAccessKeyId', 403), context))).toBe(
      true,
    );
    expect(PermissionError.isInstance(mapS3Error(s3Error('AccessDenied', 403), context))).toBe(true);
    const bucket = mapS3Error(s3Error('NoSuchBucket', 404), { ...context, bucket: 'missing-bucket' });
    expect(NotFoundError.isInstance(bucket)).toBe(true);
    expect(bucket.message).toContain('bucket "missing-bucket" does not exist');
    expect(NotFoundError.isInstance(mapS3Error(s3Error('NoSuchKey', 404), context))).toBe(true);
    for (const [name, status] of [
      ['SlowDown', 503],
      ['ServiceUnavailable', 503],
      ['TooManyRequests', 429],
    ] as const) {
      const error = mapS3Error(s3Error(name, status), context);
      expect(ThrottledError.isInstance(error), name).toBe(true);
      expect(error.retryable).toBe(true);
    }
    const internal = mapS3Error(s3Error('InternalError', 500), context);
    expect(internal.retryable).toBe(true);
    for (const code of ['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'ETIMEDOUT']) {
      expect(UnreachableError.isInstance(mapS3Error(networkError(code), context)), code).toBe(true);
    }
    expect(mapS3Error(s3Error('InvalidRequest', 400), context).retryable).toBe(false);
  });

  it('reads Retry-After into ThrottledError.retryAfterMs', () => {
    const error = mapS3Error(s3Error('SlowDown', 503, 'slow down', { 'retry-after': '3' }), context);
    expect(ThrottledError.isInstance(error) && error.retryAfterMs).toBe(3000);
  });

  it('never shows the secret key in a message, its cause, JSON or inspect output', async () => {
    mock
      .on(GetObjectCommand)
      .rejects(s3Error('SignatureDoesNotMatch', 403, `The signature for ${SECRET} failed`));
    const error = await rejection(() => store().get('k'));
    expect(AuthenticationError.isInstance(error)).toBe(true);
    const everything = [
      (error as Error).message,
      String((error as Error).cause),
      JSON.stringify(error),
      inspect(error, { depth: 10 }),
    ].join('\n');
    expect(everything).not.toContain(SECRET);
    expect(everything).toContain('[redacted]');
  });
});

describe('retries', () => {
  it('backs off on 503 SlowDown, honoring Retry-After, then succeeds', async () => {
    mock
      .on(GetObjectCommand)
      .rejectsOnce(s3Error('SlowDown', 503, 'slow down', { 'retry-after': '2' }))
      .rejectsOnce(s3Error('InternalError', 500))
      .rejectsOnce(networkError('ECONNRESET'))
      .resolves({ Body: { transformToByteArray: async () => new Uint8Array([1, 2, 3]) } as never });
    const waits: number[] = [];
    expect([...(await store(waits).get('k'))]).toEqual([1, 2, 3]);
    // Full jitter with random() = 0.5 and base 200: 100, 200, 400; the first honors Retry-After (2 s).
    expect(waits).toEqual([2000, 200, 400]);
    expect(mock.commandCalls(GetObjectCommand)).toHaveLength(4);
  });

  it('gives up after the attempts, and does not retry what cannot succeed', async () => {
    mock.on(PutObjectCommand).rejects(s3Error('SlowDown', 503));
    const waits: number[] = [];
    const error = await rejection(() =>
      store(waits, { retry: { attempts: 3, sleep: async (ms) => void waits.push(ms) } }).put(
        'k',
        new Uint8Array(1),
      ),
    );
    expect(ThrottledError.isInstance(error)).toBe(true);
    expect(mock.commandCalls(PutObjectCommand)).toHaveLength(3);
    mock.reset();
    mock.on(PutObjectCommand).rejects(s3Error('AccessDenied', 403));
    expect(PermissionError.isInstance(await rejection(() => store().put('k', new Uint8Array(1))))).toBe(true);
    expect(mock.commandCalls(PutObjectCommand)).toHaveLength(1);
  });

  it('sends Content-MD5 and If-None-Match: * on a create-only write, under the prefix', async () => {
    mock.on(PutObjectCommand).resolves({});
    const data = new TextEncoder().encode('hello');
    expect(await store().put('a/b', data, { ifAbsent: true })).toBe(true);
    const input = mock.commandCalls(PutObjectCommand)[0]!.args[0].input;
    expect(input).toMatchObject({
      Bucket: 'b',
      Key: 'p/a/b',
      IfNoneMatch: '*',
      ContentMD5: createHash('md5').update(data).digest('base64'),
    });
  });

  it('a first create-only attempt that sees 412 reports the key present (false)', async () => {
    mock.on(PutObjectCommand).rejects(s3Error('PreconditionFailed', 412));
    expect(await store().put('k', new Uint8Array([1]), { ifAbsent: true })).toBe(false);
    expect(mock.commandCalls(HeadObjectCommand)).toHaveLength(0);
  });

  it('a create-only write whose reply was lost and is retried: 412 with the same bytes is its own write', async () => {
    const data = new TextEncoder().encode('point');
    const etag = `"${createHash('md5').update(data).digest('hex')}"`;
    mock
      .on(PutObjectCommand)
      .rejectsOnce(networkError('ECONNRESET'))
      .rejects(s3Error('PreconditionFailed', 412));
    mock.on(HeadObjectCommand).resolves({ ETag: etag, ContentLength: data.byteLength });
    expect(await store().put('points/x', data, { ifAbsent: true })).toBe(true);
    expect(mock.commandCalls(PutObjectCommand)).toHaveLength(2);
  });

  it('a create-only write whose reply was lost and is retried: 412 with other bytes is a typed error naming the key', async () => {
    mock
      .on(PutObjectCommand)
      .rejectsOnce(networkError('ECONNRESET'))
      .rejects(s3Error('PreconditionFailed', 412));
    mock.on(HeadObjectCommand).resolves({ ETag: '"0123456789abcdef0123456789abcdef"', ContentLength: 5 });
    const error = await rejection(() =>
      store().put('locks/l', new TextEncoder().encode('mine'), { ifAbsent: true }),
    );
    expect(CreateOnlyConflictError.isInstance(error)).toBe(true);
    expect(error).toBeInstanceOf(CreateOnlyConflictError);
    expect((error as CreateOnlyConflictError).key).toBe('locks/l');
    expect((error as Error).message).toContain('p/locks/l');
  });
});

describe('reads and listing', () => {
  it('checks the bytes read against a single-part ETag (MD5) and retries a damaged read', async () => {
    const good = new Uint8Array([9, 9, 9]);
    const etag = `"${createHash('md5').update(good).digest('hex')}"`;
    mock
      .on(GetObjectCommand)
      .resolvesOnce({
        ETag: etag,
        Body: { transformToByteArray: async () => new Uint8Array([9, 9, 8]) } as never,
      })
      .resolves({ ETag: etag, Body: { transformToByteArray: async () => good } as never });
    expect([...(await store().get('k'))]).toEqual([9, 9, 9]);
    mock.reset();
    mock
      .on(GetObjectCommand)
      .resolves({ ETag: etag, Body: { transformToByteArray: async () => new Uint8Array([0]) } as never });
    const error = await rejection(() =>
      store([], { retry: { attempts: 2, sleep: async () => {} } }).get('k'),
    );
    expect(ChecksumMismatchError.isInstance(error)).toBe(true);
  });

  it('follows ListObjectsV2 continuation tokens and strips the prefix', async () => {
    mock
      .on(ListObjectsV2Command, { ContinuationToken: undefined })
      .resolves({ IsTruncated: true, NextContinuationToken: 't1', Contents: [{ Key: 'p/a', Size: 1 }] })
      .on(ListObjectsV2Command, { ContinuationToken: 't1' })
      .resolves({ IsTruncated: false, Contents: [{ Key: 'p/b', Size: 2 }] });
    const keys: string[] = [];
    for await (const entry of store().list('')) keys.push(entry.key);
    expect(keys).toEqual(['a', 'b']);
  });

  it('a typed error is a DrkitError with a stable code', async () => {
    mock.on(HeadObjectCommand).rejects(s3Error('AccessDenied', 403));
    const error = await rejection(() => store().has('k'));
    expect(DrkitError.isInstance(error) && error.code).toBe('PERMISSION_DENIED');
  });
});

describe('versioned buckets (Object Lock)', () => {
  const data = new TextEncoder().encode('point');
  const md5hex = createHash('md5').update(data).digest('hex');
  const version = (VersionId: string, hex: string, ms: number) => ({
    Key: 'p/points/x',
    VersionId,
    ETag: `"${hex}"`,
    LastModified: new Date(ms),
  });
  const versioned = () => {
    const s = store();
    mock.on(GetBucketVersioningCommand).resolves({ Status: 'Enabled' });
    return s;
  };

  it('a create-only write on a versioned bucket asks first: a present key is false and nothing is written', async () => {
    const s = versioned();
    mock.on(HeadObjectCommand).resolves({ ETag: `"${md5hex}"`, ContentLength: data.byteLength });
    expect(await s.put('points/x', data, { ifAbsent: true })).toBe(false);
    expect(mock.commandCalls(PutObjectCommand)).toHaveLength(0);
  });

  it('a create-only write that finds an older version (If-None-Match ignored) reports the key present and removes its own', async () => {
    const s = versioned();
    mock.on(HeadObjectCommand).rejects(s3Error('NotFound', 404));
    mock.on(PutObjectCommand).resolves({ VersionId: 'v2' });
    mock.on(ListObjectVersionsCommand).resolves({
      Versions: [version('v2', md5hex, 2000), version('v1', '0123456789abcdef0123456789abcdef', 1000)],
    });
    mock.on(DeleteObjectCommand).resolves({});
    expect(await s.put('points/x', data, { ifAbsent: true })).toBe(false);
    expect(mock.commandCalls(DeleteObjectCommand)[0]!.args[0].input).toMatchObject({
      Key: 'p/points/x',
      VersionId: 'v2',
    });
  });

  it('a create-only write retried after a lost reply keeps its first version and removes the duplicate', async () => {
    const s = versioned();
    mock.on(HeadObjectCommand).rejects(s3Error('NotFound', 404));
    mock.on(PutObjectCommand).rejectsOnce(networkError('ECONNRESET')).resolves({ VersionId: 'v2' });
    mock.on(ListObjectVersionsCommand).resolves({
      Versions: [version('v2', md5hex, 2000), version('v1', md5hex, 1000)],
    });
    mock.on(DeleteObjectCommand).resolves({});
    expect(await s.put('points/x', data, { ifAbsent: true })).toBe(true);
    expect(mock.commandCalls(DeleteObjectCommand)[0]!.args[0].input).toMatchObject({ VersionId: 'v2' });
  });

  it('a create-only write with no older version, or only one behind a delete marker, wins', async () => {
    const s = versioned();
    mock.on(HeadObjectCommand).rejects(s3Error('NotFound', 404));
    mock.on(PutObjectCommand).resolves({ VersionId: 'v2' });
    mock.on(ListObjectVersionsCommand).resolves({
      Versions: [version('v2', md5hex, 3000), version('v1', md5hex, 1000)],
      DeleteMarkers: [{ Key: 'p/points/x', VersionId: 'm1', LastModified: new Date(2000) }],
    });
    expect(await s.put('points/x', data, { ifAbsent: true })).toBe(true);
    expect(mock.commandCalls(DeleteObjectCommand)).toHaveLength(0);
  });

  it('delete removes every version; a locked one is an ObjectLockedError with its date', async () => {
    const s = versioned();
    const until = new Date('2031-01-01T00:00:00.000Z');
    mock.on(ListObjectVersionsCommand).resolves({
      Versions: [version('v2', md5hex, 2000), version('v1', md5hex, 1000)],
      DeleteMarkers: [{ Key: 'p/points/x', VersionId: 'm1', LastModified: new Date(1500) }],
    });
    mock.on(DeleteObjectsCommand).resolves({
      Errors: [
        { Key: 'p/points/x', VersionId: 'v2', Code: 'AccessDenied', Message: 'forbidden by object lock' },
      ],
    });
    mock.on(HeadObjectCommand).resolves({ ObjectLockMode: 'COMPLIANCE', ObjectLockRetainUntilDate: until });
    const error = await rejection(() => s.delete('points/x'));
    expect(ObjectLockedError.isInstance(error)).toBe(true);
    expect((error as ObjectLockedError).key).toBe('points/x');
    expect((error as ObjectLockedError).retainUntil).toEqual(until);
    const objects = mock.commandCalls(DeleteObjectsCommand)[0]!.args[0].input.Delete!.Objects!;
    expect(objects.map((o) => o.VersionId).sort()).toEqual(['m1', 'v1', 'v2']);
  });

  it('retain never shortens: a refused shortening is fine when the present lock is later', async () => {
    const s = versioned();
    const later = new Date('2031-01-01T00:00:00.000Z');
    mock
      .on(PutObjectRetentionCommand)
      .rejects(s3Error('AccessDenied', 403, 'proposed retain-until date shortens'));
    mock.on(HeadObjectCommand).resolves({ ObjectLockMode: 'GOVERNANCE', ObjectLockRetainUntilDate: later });
    const earlier = { mode: 'governance' as const, until: new Date('2030-01-01T00:00:00.000Z') };
    expect(await s.immutability.retain('chunks/ab/x', earlier)).toBe(true);
    const laterStill = { mode: 'governance' as const, until: new Date('2032-01-01T00:00:00.000Z') };
    expect(
      PermissionError.isInstance(await rejection(() => s.immutability.retain('chunks/ab/x', laterStill))),
    ).toBe(true);
    mock.on(PutObjectRetentionCommand).rejects(s3Error('NoSuchKey', 404));
    expect(await s.immutability.retain('chunks/ab/y', laterStill)).toBe(false);
  });
});
