// A pruner in a real child process, stopped with SIGSTOP at a phase it announces, while backups in this process
// run and commit: no committed point may lose a chunk. The child runs the built core (`pnpm build` first).
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RepositoryLockedError } from '../src/errors/drkit-error.js';
import { chunkKey } from '../src/repository/chunk-blob.js';
import {
  createRepositoryFixture,
  diskImage,
  newPoint,
  type RepositoryFixture,
  storeImage,
  TEST_CHUNK_SIZE,
  TEST_LINEAGE,
} from '../src/repository/repository-fixture.js';
import type { Store } from '../src/repository/store.js';
import type { BackupSession, RecoveryPoint } from '../src/repository/types.js';
import { backdateMark, keys, type StoppingChild, startStoppingChild } from './stopping-child.js';

const CHILD = fileURLToPath(new URL('./prune-child.mjs', import.meta.url));
const BUILT = fileURLToPath(new URL('../dist/index.js', import.meta.url));
/**
 * The stale threshold of every process here. Small, so the test is short; large enough that a busy machine does
 * not starve a heartbeat (a holder fences itself after half of it).
 */
const STALE_MS = 3000;

type Pruner = StoppingChild;

function startPruner(
  folder: string,
  phase: 'marked' | 'before-delete',
  graceMs: number,
  wait: boolean,
): Pruner {
  return startStoppingChild({
    script: CHILD,
    args: [folder, String(STALE_MS), String(graceMs), String(wait)],
    env: { DRKIT_TEST_PRUNE_STOP_AT: phase },
    announcement: `drkit-test: prune stopping at ${phase}`,
    what: 'the pruner',
  });
}

const chunkKeys = (store: Store) => keys(store, 'chunks/');

describe.skipIf(process.platform !== 'linux')(
  'a paused pruner (SIGSTOP) cannot delete what committed points need',
  {
    timeout: 120_000,
  },
  () => {
    let fixture: RepositoryFixture;
    let pruner: Pruner | undefined;
    beforeEach(async () => {
      if (!existsSync(BUILT)) throw new Error(`${BUILT} is missing: run pnpm build first`);
      fixture = await createRepositoryFixture({ lockStaleAfterMs: STALE_MS });
    });
    afterEach(async () => {
      if (pruner?.child.exitCode === null) {
        pruner.child.kill('SIGCONT');
        pruner.child.kill('SIGKILL');
      }
      pruner = undefined;
      await fixture.cleanup();
    });

    /** Chunks left by an aborted session: unreferenced, candidates of the next mark. */
    async function litter(image: Uint8Array): Promise<void> {
      const session = await fixture.repository.beginBackup(TEST_LINEAGE);
      await storeImage(session, fixture.workers, image);
      await session.abort();
    }

    async function commitImage(
      session: BackupSession,
      image: Uint8Array,
    ): Promise<{ point: RecoveryPoint; written: number }> {
      const { index, chunksWritten } = await storeImage(session, fixture.workers, image);
      return { point: await session.commit(newPoint(image.byteLength), index), written: chunksWritten };
    }

    async function expectRestores(point: RecoveryPoint, image: Uint8Array, name: string): Promise<void> {
      const out = join(fixture.folder, name);
      await fixture.repository.restore(point.id, { path: out });
      expect(Buffer.compare(await readFile(out), image)).toBe(0);
    }

    it('stopped before its deletions past its lock lifetime: a backup breaks the lock, reuses the candidates and commits; the pruner then stops with a lost-lock error', async () => {
      const kept = diskImage(4, 0, 21);
      const reused = diskImage(6, 0, 22);
      const before = await fixture.repository.beginBackup(TEST_LINEAGE);
      const { point: keptPoint } = await commitImage(before, kept);
      await litter(reused);
      const candidates = (await chunkKeys(fixture.store)).length - 3; // kept: 3 chunks
      expect(await fixture.repository.prune()).toMatchObject({
        phase: 'marked',
        candidateChunks: candidates,
      });
      await backdateMark(fixture.store);

      pruner = startPruner(fixture.folder, 'before-delete', STALE_MS + 1, false);
      await pruner.stopped; // it holds the prune lock, has recomputed, and is about to delete every candidate
      expect(await fixture.store.has('locks/prune.json')).toBe(true);

      // Backups refuse while the paused pruner's lock is live, and break it once it is stale (no clock read here:
      // the event is a beginBackup that succeeds).
      let session: BackupSession | undefined;
      let refusals = 0;
      while (session === undefined) {
        try {
          session = await fixture.repository.beginBackup(TEST_LINEAGE);
        } catch (error) {
          if (!RepositoryLockedError.isInstance(error)) throw error;
          refusals++;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
      expect(refusals).toBeGreaterThan(0);
      expect(await fixture.store.has('locks/prune.json')).toBe(false); // broken by the backup
      const { point: reusedPoint, written } = await commitImage(session, reused);
      expect(written).toBe(0); // every chunk found present: the candidates are now referenced

      pruner.child.kill('SIGCONT');
      const { line, code } = await pruner.done;
      expect(code).toBe(1);
      expect(line).toMatchObject({ ok: false, code: 'REPOSITORY_LOCKED', retryable: false });
      // Found by its own clocks at its first check after the pause, before any deletion or I/O.
      expect(String(line.message)).toMatch(
        /prune lock locks\/prune\.json .* is no longer held: its heartbeat could not be written for more than 1\.500 s/,
      );

      expect(await chunkKeys(fixture.store)).toHaveLength(candidates + 3);
      const report = await fixture.repository.verify();
      expect(report.ok).toBe(true);
      expect(report.chunksChecked).toBe(candidates + 3);
      await expectRestores(reusedPoint, reused, 'reused.img');
      await expectRestores(keptPoint, kept, 'kept.img');
    });

    it('stopped between its mark and its sweep: backups run meanwhile (not blocked), reuse candidates and commit; the sweep keeps them', async () => {
      const reused = diskImage(6, 0, 23);
      const garbage = diskImage(3, 0, 24);
      await litter(reused);
      await litter(garbage);
      const all = await chunkKeys(fixture.store);
      const garbageKeys = all.filter((key) => !reusedKeys(reused).includes(key));
      expect(garbageKeys).toHaveLength(2);

      pruner = startPruner(fixture.folder, 'marked', STALE_MS + 1, true);
      await pruner.stopped; // the mark is written; the pruner will wait out the grace period, then sweep
      expect(await fixture.store.has('prune/mark.json')).toBe(true);
      expect(await fixture.store.has('locks/prune.json')).toBe(false); // the mark holds no lock

      const session = await fixture.repository.beginBackup(TEST_LINEAGE);
      const { point, written } = await commitImage(session, reused);
      expect(written).toBe(0);

      pruner.child.kill('SIGCONT');
      const { line, code } = await pruner.done;
      expect(code).toBe(0);
      expect(line).toMatchObject({
        ok: true,
        result: { phase: 'swept', chunksRemoved: 2, candidateChunks: 0 },
      });

      const left = await chunkKeys(fixture.store);
      expect(left).toEqual(all.filter((key) => !garbageKeys.includes(key)));
      expect((await fixture.repository.verify()).ok).toBe(true);
      await expectRestores(point, reused, 'reused.img');
    });
  },
);

/** The chunk keys of an image's non-zero chunks. */
function reusedKeys(image: Uint8Array): string[] {
  const keys: string[] = [];
  for (let offset = 0; offset < image.byteLength; offset += TEST_CHUNK_SIZE) {
    const chunk = image.subarray(offset, offset + TEST_CHUNK_SIZE);
    if (chunk.every((byte) => byte === 0)) continue;
    keys.push(chunkKey(new Uint8Array(createHash('sha256').update(chunk).digest())));
  }
  return keys;
}
