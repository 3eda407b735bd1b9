// A pruner in its own process, for prune-race.test.ts: runs one prune() of the built core against a repository on
// the S3 store (built store-s3) and prints its result (or its error's code and message) as one JSON line on stdout.
// Usage: node prune-child.mjs <bucket> <lockStaleAfterMs> <graceMs> <wait: true|false>; the peer (endpoint, region,
// keys) comes as JSON in DRKIT_TEST_RGW, never on the command line.
// With DRKIT_TEST_PRUNE_STOP_AT=<phase> the prune announces the phase on stderr and stops itself (SIGSTOP) there.
import { openRepository } from '@drkit/core';
import { createS3Store } from '../../dist/index.js';

const [bucket, staleArg, graceArg, waitArg] = process.argv.slice(2);
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
try {
  const result = await repository.prune({ graceMs: Number(graceArg), wait: waitArg === 'true' });
  process.stdout.write(`${JSON.stringify({ ok: true, result })}\n`);
} catch (error) {
  process.stdout.write(
    `${JSON.stringify({ ok: false, code: error?.code, retryable: error?.retryable, message: String(error?.message ?? error) })}\n`,
  );
  process.exitCode = 1;
} finally {
  await repository.close();
  store.destroy();
}
