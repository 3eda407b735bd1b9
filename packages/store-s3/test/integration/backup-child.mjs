// A backup session in its own process, for prune-race.test.ts: backs up an image file into a repository on the S3
// store (built core and store-s3) the way the engine does over S3: each chunk put create-only without asking first.
// Every non-zero chunk must already be stored (the puts find them taken: it reuses them, as a backup reusing prune
// candidates does). Commits, and prints the point (or its error) as one JSON line.
// Usage: node backup-child.mjs <bucket> <lockStaleAfterMs> <image file> <chunk size>; the peer comes as JSON in
// DRKIT_TEST_RGW. With DRKIT_TEST_BACKUP_STOP_AT=before-point the commit announces it on stderr and stops itself
// (SIGSTOP) right before it writes the point metadata (after it confirmed its lock).
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { openRepository, PointWithdrawnError } from '@drkit/core';
import { createS3Store } from '../../dist/index.js';

const [bucket, staleArg, imageFile, chunkSizeArg] = process.argv.slice(2);
const chunkSize = Number(chunkSizeArg);
const image = await readFile(imageFile);
const lineage = { platformId: 'platform-1', hostId: 'host-1', diskId: 'disk-1' };
const peer = JSON.parse(process.env.DRKIT_TEST_RGW ?? '{}');
const store = createS3Store({
  bucket,
  prefix: 'repo',
  endpoint: peer.endpoint,
  region: peer.region,
  credentials: { accessKeyId: peer.accessKeyId, secretAccessKey: peer.secretAccessKey },
  retry: { baseDelayMs: 20, maxDelayMs: 500 },
});
const repository = await openRepository({ store, lockStaleAfterMs: Number(staleArg) });
const session = await repository.beginBackup(lineage);
try {
  if (!session.putSettlesPresence)
    throw new Error('the S3 store should settle presence by its create-only put');
  const index = session.createIndex({ capacityBytes: image.byteLength, chunkSize });
  for (let i = 0; i * chunkSize < image.byteLength; i++) {
    const chunk = image.subarray(i * chunkSize, Math.min((i + 1) * chunkSize, image.byteLength));
    if (chunk.every((byte) => byte === 0)) continue;
    const hash = new Uint8Array(createHash('sha256').update(chunk).digest());
    if (await session.putChunk({ hash, codec: 0, payload: chunk, plainLength: chunk.byteLength })) {
      throw new Error(`chunk ${i} was not stored yet`);
    }
    index.setId(i, hash);
  }
  const point = await session.commit(
    {
      ...lineage,
      hostName: 'host one',
      diskName: 'disk one',
      createdAt: new Date().toISOString(),
      capacityBytes: image.byteLength,
      chunkSize,
      validity: { kind: 'full', reason: 'first-backup' },
      stats: {
        bytesRead: image.byteLength,
        bytesWritten: 0,
        bytesSkippedUnchanged: 0,
        bytesDeduplicated: image.byteLength,
        bytesZero: 0,
        seconds: 0,
      },
    },
    index,
  );
  process.stdout.write(`${JSON.stringify({ ok: true, point })}\n`);
} catch (error) {
  process.stdout.write(
    `${JSON.stringify({
      ok: false,
      withdrawn: PointWithdrawnError.isInstance(error),
      code: error?.code,
      retryable: error?.retryable,
      message: String(error?.message ?? error),
      ...(PointWithdrawnError.isInstance(error) ? { pointId: error.pointId, missing: error.missing } : {}),
    })}\n`,
  );
  process.exitCode = 1;
} finally {
  await session.abort();
  await repository.close();
  store.destroy();
}
