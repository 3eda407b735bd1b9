import { randomBytes } from 'node:crypto';
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  GetObjectRetentionCommand,
  ListObjectVersionsCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { createS3Store, type S3Store, type S3StoreOptions } from '../../src/index.js';
import { type RgwDescription, rgw } from './rgw-description.js';

/** An admin-ish client of the test user, for creating and emptying buckets. */
export function rawClient(peer: RgwDescription = rgw(), endpoint = peer.endpoint): S3Client {
  return new S3Client({
    region: peer.region,
    endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: peer.accessKeyId, secretAccessKey: peer.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 1,
  });
}

/** A fresh bucket with a random name. */
export async function freshBucket(client: S3Client = rawClient(), objectLock = false): Promise<string> {
  const bucket = `drkit-${randomBytes(6).toString('hex')}`;
  await client.send(
    new CreateBucketCommand({ Bucket: bucket, ...(objectLock ? { ObjectLockEnabledForBucket: true } : {}) }),
  );
  return bucket;
}

/** A store on the test RGW. */
export function rgwStore(bucket: string, options: Partial<S3StoreOptions> = {}): S3Store {
  const peer = rgw();
  return createS3Store({
    bucket,
    prefix: 'repo',
    endpoint: peer.endpoint,
    region: peer.region,
    credentials: { accessKeyId: peer.accessKeyId, secretAccessKey: peer.secretAccessKey },
    retry: { baseDelayMs: 20, maxDelayMs: 500 },
    ...options,
  });
}

/** Deletes every object of the bucket, then the bucket. */
export async function removeBucket(bucket: string, client: S3Client = rawClient()): Promise<void> {
  const store = createS3Store({
    bucket,
    endpoint: rgw().endpoint,
    region: rgw().region,
    client,
  });
  const keys: string[] = [];
  for await (const entry of store.list('')) keys.push(entry.key);
  await store.deleteMany(keys);
  await client.send(new DeleteBucketCommand({ Bucket: bucket }));
}

/** Every version and delete marker in the bucket, as S3 lists them. */
export async function allVersions(client: S3Client, bucket: string) {
  const found: { Key: string; VersionId: string; marker: boolean }[] = [];
  let KeyMarker: string | undefined;
  let VersionIdMarker: string | undefined;
  for (;;) {
    const page = await client.send(
      new ListObjectVersionsCommand({ Bucket: bucket, KeyMarker, VersionIdMarker }),
    );
    for (const v of page.Versions ?? []) found.push({ Key: v.Key!, VersionId: v.VersionId!, marker: false });
    for (const v of page.DeleteMarkers ?? [])
      found.push({ Key: v.Key!, VersionId: v.VersionId!, marker: true });
    if (!page.IsTruncated) return found;
    KeyMarker = page.NextKeyMarker;
    VersionIdMarker = page.NextVersionIdMarker;
  }
}

/** Removes a governance-locked bucket: every version, bypassing governance (the test user may), then the bucket. */
export async function removeLockedBucket(client: S3Client, bucket: string): Promise<void> {
  const versions = await allVersions(client, bucket);
  for (let i = 0; i < versions.length; i += 1000) {
    await client.send(
      new DeleteObjectsCommand({
        Bucket: bucket,
        BypassGovernanceRetention: true,
        Delete: { Objects: versions.slice(i, i + 1000).map(({ Key, VersionId }) => ({ Key, VersionId })) },
      }),
    );
  }
  await client.send(new DeleteBucketCommand({ Bucket: bucket }));
}

/** The lock date RGW holds for the current version of a store key (`repo/` prefix of rgwStore). */
export async function retainUntil(client: S3Client, bucket: string, key: string): Promise<number> {
  const reply = await client.send(new GetObjectRetentionCommand({ Bucket: bucket, Key: `repo/${key}` }));
  return reply.Retention!.RetainUntilDate!.getTime();
}
