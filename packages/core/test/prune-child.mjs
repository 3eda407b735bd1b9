// A pruner in its own process, for paused-prune.test.ts: runs one prune() of the built core against a local
// folder repository and prints its result (or its error's code and message) as one JSON line on stdout.
// Usage: node prune-child.mjs <repository folder> <lockStaleAfterMs> <graceMs> <wait: true|false>
// With DRKIT_TEST_PRUNE_STOP_AT=<phase> the prune announces the phase on stderr and stops itself (SIGSTOP) there.
import { createLocalFolderStore, openRepository } from '../dist/index.js';

const [folder, staleArg, graceArg, waitArg] = process.argv.slice(2);
const repository = await openRepository({
  store: createLocalFolderStore({ path: folder }),
  lockStaleAfterMs: Number(staleArg),
});
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
}
