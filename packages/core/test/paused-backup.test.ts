// A backup session in a real child process, stopped with SIGSTOP right before it writes its point metadata (its
// lock just confirmed), past its lock's lifetime, while a prune in this process sweeps: the session must never
// commit a point that names a deleted chunk. The child runs the built core (`pnpm build` first).
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RepositoryLockedError } from '../src/errors/drkit-error.js';
import {
  backupImage,
  createRepositoryFixture,
  diskImage,
  type RepositoryFixture,
  storeImage,
  TEST_CHUNK_SIZE,
  TEST_LINEAGE,
} from '../src/repository/repository-fixture.js';
import type { PruneResult } from '../src/repository/types.js';
import { backdateMark, keys, type StoppingChild, startStoppingChild } from './stopping-child.js';

const CHILD = fileURLToPath(new URL('./backup-child.mjs', import.meta.url));
const BUILT = fileURLToPath(new URL('../dist/index.js', import.meta.url));
/** The stale threshold of every process here (a holder fences itself after half of it). */
const STALE_MS = 3000;

type Backup = StoppingChild;

function startBackup(folder: string, imageFile: string): Backup {
  return startStoppingChild({
    script: CHILD,
    args: [folder, String(STALE_MS), imageFile, String(TEST_CHUNK_SIZE)],
    env: { DRKIT_TEST_BACKUP_STOP_AT: 'before-point' },
    announcement: 'drkit-test: backup stopping at before-point',
    what: 'the backup',
  });
}

describe.skipIf(process.platform !== 'linux')(
  'a backup paused (SIGSTOP) between its lock check and its point metadata',
  { timeout: 120_000 },
  () => {
    let fixture: RepositoryFixture;
    let images: string;
    let backup: Backup | undefined;
    beforeEach(async () => {
      if (!existsSync(BUILT)) throw new Error(`${BUILT} is missing: run pnpm build first`);
      fixture = await createRepositoryFixture({ lockStaleAfterMs: STALE_MS });
      images = await mkdtemp(join(tmpdir(), 'drkit-images-'));
    });
    afterEach(async () => {
      if (backup?.child.exitCode === null) {
        backup.child.kill('SIGCONT');
        backup.child.kill('SIGKILL');
      }
      backup = undefined;
      await fixture.cleanup();
      await rm(images, { recursive: true, force: true });
    });

    /** Chunks left by an aborted session: unreferenced, candidates of the next mark. */
    async function litter(image: Uint8Array): Promise<void> {
      const session = await fixture.repository.beginBackup(TEST_LINEAGE);
      await storeImage(session, fixture.workers, image);
      await session.abort();
    }

    /** Sweeps as soon as the paused session's lock is stale (the event: a prune that no longer refuses). */
    async function sweepPastTheLock(): Promise<PruneResult> {
      for (;;) {
        try {
          return await fixture.repository.prune();
        } catch (error) {
          if (!RepositoryLockedError.isInstance(error)) throw error;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
    }

    async function startPaused(image: Uint8Array): Promise<Backup> {
      const file = join(images, 'image.bin');
      await writeFile(file, image);
      backup = startBackup(fixture.folder, file);
      await backup.stopped;
      expect(await keys(fixture.store, 'locks/backup-')).toHaveLength(1);
      return backup;
    }

    it('a sweep broke its stale lock and deleted the candidates it reused: the point is withdrawn with a typed, retryable error', async () => {
      const kept = diskImage(3, 0, 31);
      const reused = diskImage(5, 0, 32);
      const keptPoint = await backupImage(fixture.repository, fixture.workers, kept);
      const keptChunks = (await keys(fixture.store, 'chunks/')).length;
      await litter(reused);
      const allChunks = (await keys(fixture.store, 'chunks/')).length;
      const candidates = allChunks - keptChunks;
      expect(candidates).toBeGreaterThan(1);
      expect(await fixture.repository.prune()).toMatchObject({
        phase: 'marked',
        candidateChunks: candidates,
      });
      await backdateMark(fixture.store);

      const paused = await startPaused(reused); // it found every chunk present (hasChunk), wrote its manifest
      const swept = await sweepPastTheLock();
      expect(swept).toMatchObject({ phase: 'swept', chunksRemoved: candidates });
      expect(await keys(fixture.store, 'locks/backup-')).toEqual([]); // its stale lock, removed by the sweep
      expect(await keys(fixture.store, 'chunks/')).toHaveLength(keptChunks);

      paused.child.kill('SIGCONT');
      const { line, code } = await paused.done;
      expect(code).toBe(1);
      expect(line).toMatchObject({ ok: false, withdrawn: true, code: 'REPOSITORY_LOCKED', retryable: true });
      expect(line.missing).toMatchObject({ manifest: false, segments: [], total: candidates });
      expect((line.missing as { chunks: string[] }).chunks).toHaveLength(Math.min(5, candidates));
      expect(String(line.message)).toMatch(/was withdrawn: .* a prune deleted what it names \(chunks\//);

      // Never a committed point with a missing chunk: its metadata and manifest are gone.
      expect(await keys(fixture.store, 'points/')).toEqual([`points/${keptPoint.id}.json`]);
      expect(await keys(fixture.store, 'indexes/')).toEqual([`indexes/${keptPoint.id}`]);
      const other = await fixture.reopen();
      expect((await other.points()).map((p) => p.id)).toEqual([keptPoint.id]);
      expect((await other.verify()).ok).toBe(true);
    });

    it('its lock went stale but the sweep deleted nothing it names: the check finds every blob and the point stands', async () => {
      const kept = diskImage(4, 0, 33);
      const garbage = diskImage(3, 0, 34);
      const keptPoint = await backupImage(fixture.repository, fixture.workers, kept);
      await litter(garbage);
      const before = await keys(fixture.store, 'chunks/');
      expect(await fixture.repository.prune()).toMatchObject({ phase: 'marked', candidateChunks: 2 });
      await backdateMark(fixture.store);

      const paused = await startPaused(kept); // reuses the kept point's chunks, none a candidate
      expect(await sweepPastTheLock()).toMatchObject({ phase: 'swept', chunksRemoved: 2 });
      expect(await keys(fixture.store, 'locks/backup-')).toEqual([]);

      paused.child.kill('SIGCONT');
      const { line, code } = await paused.done;
      expect(line).toMatchObject({ ok: true });
      expect(code).toBe(0);
      const pointId = (line.point as { id: string }).id;
      expect(await keys(fixture.store, 'chunks/')).toHaveLength(before.length - 2);
      const other = await fixture.reopen();
      expect((await other.points()).map((p) => p.id).sort()).toEqual([keptPoint.id, pointId].sort());
      expect((await other.verify()).ok).toBe(true);
      const out = join(images, 'restored.img');
      await other.restore(pointId, { path: out });
      expect(Buffer.compare(await readFile(out), kept)).toBe(0);
    });
  },
);
