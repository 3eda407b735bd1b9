// Prune racing backups on Ceph RGW 16: a pruner in a real child process (the built core and store-s3), stopped with
// SIGSTOP at a phase it announces (DRKIT_TEST_PRUNE_STOP_AT), while backups in this process find the prune's
// candidates present (a create-only put answered 412, no HeadObject) and commit. The ordering comes from the
// prune's phases, not from timing; the grace period and the lock's stale threshold are small but above 0. No chunk
// a committed point references may be deleted: every committed point restores byte-identical, verify is clean. And
// the other way round: a backup child paused before its point metadata (DRKIT_TEST_BACKUP_STOP_AT) while a sweep
// deletes the chunks its 412s found has its point withdrawn, never committed.
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type BackupSession,
  openRepository,
  type RecoveryPoint,
  type Repository,
  RepositoryLockedError,
  type Store,
} from '@drkit/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { S3Store } from '../../src/index.js';
import { rgw } from './rgw-description.js';
import { freshBucket, removeBucket, rgwStore } from './rgw-fixture.js';

const PRUNE_CHILD = fileURLToPath(new URL('./prune-child.mjs', import.meta.url));
const BACKUP_CHILD = fileURLToPath(new URL('./backup-child.mjs', import.meta.url));
const BUILT = [
  fileURLToPath(new URL('../../dist/index.js', import.meta.url)),
  fileURLToPath(new URL('../../../core/dist/index.js', import.meta.url)),
];
/** The stale threshold of every process here: small, so the test is short; large enough for a busy machine. */
const STALE_MS = 3000;
const CHUNK = 256 * 1024;
const LINEAGE = { platformId: 'platform-1', hostId: 'host-1', diskId: 'disk-1' };

/** A child process that stops itself with SIGSTOP at a phase it announces. */
interface StoppingChild {
  readonly child: ChildProcess;
  /** Resolves when the child announced its stop and the kernel shows it stopped. */
  readonly stopped: Promise<void>;
  /** The child's last standard-output line (JSON) and exit code. */
  readonly done: Promise<{ line: Record<string, unknown>; code: number | null }>;
}

/** Runs a child script with the peer in its environment, waiting for `announcement` on its standard error. */
function startStoppingChild(
  script: string,
  args: readonly string[],
  env: Record<string, string>,
  announcement: string,
  what: string,
): StoppingChild {
  const child = spawn(process.execPath, [script, ...args], {
    env: { ...process.env, ...env, DRKIT_TEST_RGW: JSON.stringify(rgw()) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  const announced = new Promise<void>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes(`${announcement}\n`)) resolve();
    });
    child.on('exit', (code) =>
      reject(new Error(`${what} exited (${code}) before it stopped: ${stderr}${stdout}`)),
    );
  });
  const stopped = announced.then(async () => {
    // The announcement comes right before SIGSTOP: wait until the kernel says the process is stopped ("T").
    for (;;) {
      const stat = await readFile(`/proc/${child.pid}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('T')) return;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  });
  const done = new Promise<{ line: Record<string, unknown>; code: number | null }>((resolve, reject) => {
    child.on('close', (code) => {
      try {
        resolve({
          line: JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as Record<string, unknown>,
          code,
        });
      } catch {
        reject(new Error(`${what} printed no result (exit ${code}): ${stderr}${stdout}`));
      }
    });
  });
  return { child, stopped, done };
}

function startPruner(
  bucket: string,
  phase: 'marked' | 'before-delete',
  graceMs: number,
  wait: boolean,
): StoppingChild {
  return startStoppingChild(
    PRUNE_CHILD,
    [bucket, String(STALE_MS), String(graceMs), String(wait)],
    { DRKIT_TEST_PRUNE_STOP_AT: phase },
    `drkit-test: prune stopping at ${phase}`,
    'the pruner',
  );
}

/** A backup that reuses every chunk of `imageFile` through 412s and stops right before its point metadata. */
function startPausedBackup(bucket: string, imageFile: string): StoppingChild {
  return startStoppingChild(
    BACKUP_CHILD,
    [bucket, String(STALE_MS), imageFile, String(CHUNK)],
    { DRKIT_TEST_BACKUP_STOP_AT: 'before-point' },
    'drkit-test: backup stopping at before-point',
    'the backup',
  );
}

/** An image of `chunks` random chunks (incompressible: stored raw), deterministic per seed. */
function image(chunks: number, seed: number): Uint8Array {
  const out = new Uint8Array(chunks * CHUNK);
  for (let i = 0; i < out.byteLength; i += 32) {
    out.set(createHash('sha256').update(`${seed}:${i}`).digest(), i);
  }
  return out;
}

const chunkHash = (plain: Uint8Array) => new Uint8Array(createHash('sha256').update(plain).digest());
const chunkKeyOf = (plain: Uint8Array) => {
  const hex = Buffer.from(chunkHash(plain)).toString('hex');
  return `chunks/${hex.slice(0, 2)}/${hex}`;
};

/** Puts every chunk of `bytes` in the session (as the engine does over S3: no hasChunk); the index and puts won. */
async function storeChunks(session: BackupSession, bytes: Uint8Array) {
  const index = session.createIndex({ capacityBytes: bytes.byteLength, chunkSize: CHUNK });
  let written = 0;
  for (let i = 0; i * CHUNK < bytes.byteLength; i++) {
    const plain = bytes.subarray(i * CHUNK, (i + 1) * CHUNK);
    const hash = chunkHash(plain);
    index.setId(i, hash);
    if (await session.putChunk({ hash, codec: 0, payload: plain, plainLength: plain.byteLength })) written++;
  }
  return { index, written };
}

async function commitImage(
  repository: Repository,
  bytes: Uint8Array,
  session?: BackupSession,
): Promise<{ point: RecoveryPoint; written: number }> {
  const backup = session ?? (await repository.beginBackup(LINEAGE));
  const { index, written } = await storeChunks(backup, bytes);
  const point = await backup.commit(
    {
      ...LINEAGE,
      hostName: 'host one',
      diskName: 'disk one',
      createdAt: new Date().toISOString(),
      capacityBytes: bytes.byteLength,
      chunkSize: CHUNK,
      validity: { kind: 'full', reason: 'first-backup' },
      stats: {
        bytesRead: bytes.byteLength,
        bytesWritten: written * CHUNK,
        bytesSkippedUnchanged: 0,
        bytesDeduplicated: bytes.byteLength - written * CHUNK,
        bytesZero: 0,
        seconds: 0,
      },
    },
    index,
  );
  return { point, written };
}

/** Chunks left by an aborted session: unreferenced, candidates of the next mark. */
async function litter(repository: Repository, bytes: Uint8Array): Promise<void> {
  const session = await repository.beginBackup(LINEAGE);
  await storeChunks(session, bytes);
  await session.abort();
}

async function keys(store: Store, prefix: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of store.list(prefix)) found.push(entry.key);
  return found;
}

/** Moves the pending prune mark back a day: its grace period has passed. */
async function backdateMark(store: Store): Promise<void> {
  const mark = JSON.parse(new TextDecoder().decode(await store.get('prune/mark.json')));
  mark.markedAt = new Date(Date.now() - 24 * 60 * 60 * 1000).toISOString();
  await store.delete('prune/mark.json');
  await store.put('prune/mark.json', new TextEncoder().encode(JSON.stringify(mark)));
}

describe.skipIf(process.platform !== 'linux')(
  'prune racing backups on Ceph RGW 16',
  { timeout: 180_000 },
  () => {
    let bucket: string;
    let work: string;
    let store: S3Store;
    let repository: Repository;
    let paused: StoppingChild | undefined;
    beforeEach(async () => {
      for (const built of BUILT)
        if (!existsSync(built)) throw new Error(`${built} is missing: run pnpm -r build first`);
      bucket = await freshBucket();
      work = await mkdtemp(join(tmpdir(), 'drkit-s3-prune-'));
      store = rgwStore(bucket);
      repository = await openRepository({ store, create: true, lockStaleAfterMs: STALE_MS });
    });
    afterEach(async () => {
      if (paused?.child.exitCode === null) {
        paused.child.kill('SIGCONT');
        paused.child.kill('SIGKILL');
      }
      paused = undefined;
      await repository.close();
      store.destroy();
      await removeBucket(bucket);
      await rm(work, { recursive: true, force: true });
    });

    async function expectRestores(point: RecoveryPoint, bytes: Uint8Array): Promise<void> {
      const out = join(work, `${point.id}.img`);
      await repository.restore(point.id, { path: out });
      expect(Buffer.compare(await readFile(out), bytes)).toBe(0);
    }

    it('stopped between its mark and its sweep: backups run meanwhile, find the candidates present (412) and commit; the sweep keeps them and deletes only garbage', async () => {
      const reused = image(6, 1);
      const garbage = image(3, 2);
      await litter(repository, reused);
      await litter(repository, garbage);
      const all = await keys(store, 'chunks/');
      expect(all).toHaveLength(9);

      paused = startPruner(bucket, 'marked', STALE_MS + 1, true);
      await paused.stopped; // the mark is written; the pruner will wait out the grace period, then sweep
      expect(await store.has('prune/mark.json')).toBe(true);
      expect(await store.has('locks/prune.json')).toBe(false); // the mark holds no lock

      // Two backups commit while the prune is marked: one reuses every candidate, one writes new chunks.
      const fresh = image(4, 3);
      const { point, written } = await commitImage(repository, reused);
      expect(written).toBe(0); // every chunk found present by its create-only put
      const { point: freshPoint, written: freshWritten } = await commitImage(repository, fresh);
      expect(freshWritten).toBe(4);

      paused.child.kill('SIGCONT');
      const { line, code } = await paused.done;
      expect(line).toMatchObject({ ok: true, result: { phase: 'swept', chunksRemoved: 3 } });
      expect(code).toBe(0);

      const garbageKeys = new Set(
        Array.from({ length: 3 }, (_, i) => chunkKeyOf(garbage.subarray(i * CHUNK, (i + 1) * CHUNK))),
      );
      const left = await keys(store, 'chunks/');
      expect(left.filter((key) => garbageKeys.has(key))).toEqual([]);
      expect(left).toHaveLength(6 + 4);
      const report = await repository.verify();
      expect(report.ok).toBe(true);
      expect(report.chunksChecked).toBe(10);
      await expectRestores(point, reused);
      await expectRestores(freshPoint, fresh);
    });

    it('stopped before its deletions past its lock lifetime: a backup breaks the stale lock, reuses the candidates and commits; the pruner then stops with a lost-lock error and deletes nothing', async () => {
      const kept = image(3, 4);
      const reused = image(5, 5);
      const { point: keptPoint } = await commitImage(repository, kept);
      await litter(repository, reused);
      expect(await repository.prune({ graceMs: STALE_MS + 1 })).toMatchObject({
        phase: 'marked',
        candidateChunks: 5,
      });
      await backdateMark(store);

      paused = startPruner(bucket, 'before-delete', STALE_MS + 1, false);
      await paused.stopped; // it holds the prune lock, has recomputed, and is about to delete every candidate
      expect(await store.has('locks/prune.json')).toBe(true);

      // Backups refuse while the paused pruner's lock is live, and break it once it is stale (the event is a
      // beginBackup that succeeds; bounded by attempts).
      let session: BackupSession | undefined;
      let refusals = 0;
      while (session === undefined) {
        try {
          session = await repository.beginBackup(LINEAGE);
        } catch (error) {
          if (!RepositoryLockedError.isInstance(error)) throw error;
          refusals++;
          expect(refusals).toBeLessThan(1000);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
      expect(refusals).toBeGreaterThan(0);
      expect(await store.has('locks/prune.json')).toBe(false); // broken by the backup
      const { point: reusedPoint, written } = await commitImage(repository, reused, session);
      expect(written).toBe(0);

      paused.child.kill('SIGCONT');
      const { line, code } = await paused.done;
      expect(code).toBe(1);
      expect(line).toMatchObject({ ok: false, code: 'REPOSITORY_LOCKED', retryable: false });
      expect(String(line.message)).toMatch(/prune lock locks\/prune\.json .* is no longer held/);

      expect(await keys(store, 'chunks/')).toHaveLength(3 + 5);
      const report = await repository.verify();
      expect(report.ok).toBe(true);
      expect(report.chunksChecked).toBe(8);
      await expectRestores(reusedPoint, reused);
      await expectRestores(keptPoint, kept);
    });

    it('a backup paused before its point metadata past its lock lifetime, whose puts found the candidates taken (412): a sweep deletes them, and the point is withdrawn with a typed, retryable error, never committed', async () => {
      const kept = image(3, 6);
      const reused = image(5, 7);
      const { point: keptPoint } = await commitImage(repository, kept);
      await litter(repository, reused);
      expect(await repository.prune({ graceMs: STALE_MS + 1 })).toMatchObject({
        phase: 'marked',
        candidateChunks: 5,
      });
      await backdateMark(store);

      const file = join(work, 'reused.img');
      await writeFile(file, reused);
      paused = startPausedBackup(bucket, file);
      await paused.stopped; // every put found its chunk taken; it wrote its manifest and confirmed its lock
      expect(await keys(store, 'locks/backup-')).toHaveLength(1);

      // Sweeps as soon as the paused session's lock is stale (the event: a prune that no longer refuses).
      let swept: Awaited<ReturnType<Repository['prune']>> | undefined;
      for (let attempt = 0; swept === undefined; attempt++) {
        expect(attempt).toBeLessThan(1000);
        try {
          swept = await repository.prune({ graceMs: STALE_MS + 1 });
        } catch (error) {
          if (!RepositoryLockedError.isInstance(error)) throw error;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
      expect(swept).toMatchObject({ phase: 'swept', chunksRemoved: 5 });
      expect(await keys(store, 'locks/backup-')).toEqual([]);
      expect(await keys(store, 'chunks/')).toHaveLength(3);

      paused.child.kill('SIGCONT');
      const { line, code } = await paused.done;
      expect(code).toBe(1);
      expect(line).toMatchObject({ ok: false, withdrawn: true, code: 'REPOSITORY_LOCKED', retryable: true });
      expect(line.missing).toMatchObject({ manifest: false, segments: [], total: 5 });

      // Never a committed point with a missing chunk: its metadata and manifest are gone.
      expect(await keys(store, 'points/')).toEqual([`points/${keptPoint.id}.json`]);
      expect(await keys(store, 'indexes/')).toEqual([`indexes/${keptPoint.id}`]);
      expect((await repository.points()).map((p) => p.id)).toEqual([keptPoint.id]);
      expect((await repository.verify()).ok).toBe(true);
      await expectRestores(keptPoint, kept);
    });
  },
);
