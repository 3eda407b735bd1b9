// A Ceph RGW 16 of one test file's own (scripts/peers/rgw.sh start DIR in a fresh temporary folder), for tests
// that kill and restart radosgw: the shared RGW of the other files is never touched. Stopped by PID at the end.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import type { Store, StoreEntry, StorePutOptions } from '@drkit/core';
import { createS3Store, type S3RetryOptions, type S3Store } from '../../src/index.js';
import type { RgwDescription } from './rgw-description.js';

const RGW_SCRIPT = fileURLToPath(new URL('../../../../scripts/peers/rgw.sh', import.meta.url));

/** Runs `sh rgw.sh <verb> <dir>`; rejects with its standard error. */
export function rgwScript(
  verb: 'start' | 'stop' | 'kill-gateway' | 'restart-gateway',
  dir: string,
): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('sh', [RGW_SCRIPT, verb, dir], { timeout: 240_000 }, (error, _stdout, stderr) => {
      if (error) reject(new Error(`sh rgw.sh ${verb} ${dir} failed: ${error.message}\n${stderr}`));
      else resolve();
    });
  });
}

export interface OwnRgw {
  readonly peer: RgwDescription;
  /** The folder rgw.sh manages (`kill-gateway`, `restart-gateway`). */
  readonly dir: string;
  /** A store on `bucket` (prefix `repo`) with these retry settings. */
  store(bucket: string, retry?: S3RetryOptions): S3Store;
  /** Creates a bucket. */
  bucket(name: string): Promise<void>;
  /** Stops the peer (by PID) and removes its folder. */
  stop(): Promise<void>;
}

/** Starts an RGW of this file's own; throws the reason when it cannot start. */
export async function startOwnRgw(): Promise<OwnRgw> {
  const root = await mkdtemp(join(tmpdir(), 'drkit-rgw-own-'));
  const dir = join(root, 'peer');
  try {
    await rgwScript('start', dir);
  } catch (error) {
    await rgwScript('stop', dir).catch(() => undefined);
    await rm(root, { recursive: true, force: true });
    throw new Error(
      `Ceph RGW did not start (install it with \`sh scripts/peers/rgw.sh install\`): ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  const peer = JSON.parse(await readFile(join(dir, 'rgw.json'), 'utf8')) as RgwDescription;
  const credentials = { accessKeyId: peer.accessKeyId, secretAccessKey: peer.secretAccessKey };
  return {
    peer,
    dir,
    store: (bucket, retry) =>
      createS3Store({
        bucket,
        prefix: 'repo',
        endpoint: peer.endpoint,
        region: peer.region,
        credentials,
        ...(retry === undefined ? {} : { retry }),
      }),
    async bucket(name) {
      const client = new S3Client({
        region: peer.region,
        endpoint: peer.endpoint,
        forcePathStyle: true,
        credentials,
        maxAttempts: 1,
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
      });
      try {
        await client.send(new CreateBucketCommand({ Bucket: name }));
      } finally {
        client.destroy();
      }
    },
    async stop() {
      try {
        await rgwScript('stop', dir);
      } finally {
        await rm(root, { recursive: true, force: true });
      }
    },
  };
}

/**
 * A store that passes every call on to `inner` and, once armed, before the `at`-th put of a chunk blob since, awaits
 * `trigger` (the test's fault), then goes on with the put. Declares what `inner` declares.
 */
export interface TriggeringStore extends Store {
  arm(at: number, trigger: () => Promise<void>): void;
}

export function triggeringStore(inner: Store): TriggeringStore {
  let armed: { at: number; trigger: () => Promise<void>; puts: number } | undefined;
  return {
    kind: inner.kind,
    location: inner.location,
    ...(inner.createOnlyProvesWhole === true ? { createOnlyProvesWhole: true as const } : {}),
    arm(at, trigger) {
      armed = { at, trigger, puts: 0 };
    },
    get: (key, options) => inner.get(key, options),
    async put(key: string, data: Uint8Array, options?: StorePutOptions) {
      if (armed !== undefined && key.startsWith('chunks/') && ++armed.puts === armed.at) {
        const { trigger } = armed;
        armed = undefined;
        await trigger();
      }
      return inner.put(key, data, options);
    },
    has: (key, options) => inner.has(key, options),
    ...(inner.size === undefined
      ? {}
      : { size: (key: string, options?: { signal?: AbortSignal }) => inner.size!(key, options) }),
    list: (prefix, options): AsyncIterable<StoreEntry> => inner.list(prefix, options),
    delete: (key, options) => inner.delete(key, options),
  };
}
