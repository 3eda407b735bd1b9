// Two engines (as two Sync Proxy processes would) sharing one repository never back up one host at once.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import {
  createBackupEngine,
  createLocalFolderStore,
  openRepository,
  type Repository,
  RepositoryLockedError,
} from '../src/index.js';
import { hostLockKey, processScope } from '../src/repository/repository-lock.js';
import { createMemoryPlatform } from './memory-platform.js';

const CHUNK = 256 * 1024;
let dir: string;
const opened: Repository[] = [];

async function open(): Promise<Repository> {
  const repository = await openRepository({
    store: createLocalFolderStore({ path: join(dir, 'repo') }),
    create: opened.length === 0,
  });
  opened.push(repository);
  return repository;
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drkit-host-lock-'));
});

afterEach(async () => {
  for (const r of opened.splice(0)) await r.close();
  await rm(dir, { recursive: true, force: true });
});

it('makes a job of a second engine wait for the host until the first job settled its snapshot', async () => {
  const platform = createMemoryPlatform({
    retainsSnapshotAsBase: false,
    disks: [{ id: 'd1', capacity: CHUNK }],
  });
  platform.write('d1', 0, randomBytes(CHUNK));
  const first = createBackupEngine({
    repository: await open(),
    platforms: [platform],
    chunkSize: CHUNK,
    engineId: 'a',
  });
  const second = createBackupEngine({
    repository: await open(),
    platforms: [platform],
    chunkSize: CHUNK,
    engineId: 'b',
    hostLockPollIntervalMs: 10,
  });
  let open1!: () => void;
  platform.gates.set('d1', new Promise<void>((resolve) => (open1 = resolve)));
  let started!: () => void;
  const reading = new Promise<void>((resolve) => (started = resolve));
  platform.onChangesStart = () => started();
  const job1 = first.backup();
  await reading; // the first job holds the host and reads
  const waits: string[] = [];
  const job2 = second.backup({ onProgress: (p) => waits.push(p.state) });
  // Bounded work, not time: let the second job poll a few times while the first still reads.
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setTimeout(resolve, 5));
  expect(platform.created).toHaveLength(1); // the second job has not snapshotted the host
  platform.gates.delete('d1');
  open1();
  const [r1, r2] = await Promise.all([job1, job2]);
  expect([r1.succeeded, r2.succeeded]).toEqual([1, 1]);
  const snapshot2 = platform.events.indexOf(`snapshot:vm-1:${platform.created[1]}`);
  const release1 = platform.events.indexOf(`release:vm-1:${platform.created[0]}`);
  expect(release1).toBeGreaterThan(-1);
  expect(snapshot2).toBeGreaterThan(release1);
  // The second job planned from the first one's point.
  const points = await opened[0]!.points();
  expect(points).toHaveLength(2);
  expect(points[1]?.parentId).toBe(points[0]?.id);
  expect(waits[0]).toBe('waiting');
  await first.close();
  await second.close();
});

it("takes over a crashed process's host lock once its heartbeat is stale", async () => {
  const repository = await open();
  const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: CHUNK }] });
  const key = hostLockKey(platform.id, 'vm-1');
  const path = join(dir, 'repo', key);
  await mkdir(dirname(path), { recursive: true });
  const old = new Date(Date.now() - 3600_000).toISOString();
  await writeFile(
    path,
    JSON.stringify({
      formatVersion: 1,
      kind: 'host',
      sessionId: '0123456789abcdef',
      repositoryId: 'x',
      hostname: 'gone',
      pid: 1,
      startedAt: old,
      heartbeatAt: old,
      host: { platformId: platform.id, hostId: 'vm-1' },
    }),
  );
  const engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
  const result = await engine.backup();
  expect(result.succeeded).toBe(1);
  await engine.close();
  await expect(
    repository.lockHost({ platformId: platform.id, hostId: 'vm-1' }, { pollIntervalMs: 1 }),
  ).resolves.toBeDefined();
});

it('takes over at once the fresh lock of a process that no longer exists on this machine, and waits for a live one', async () => {
  const repository = await open();
  const platform = createMemoryPlatform({ disks: [{ id: 'd1', capacity: CHUNK }] });
  const scope = processScope();
  if (scope === null) return; // not Linux: only the heartbeat's age tells
  const lockFor = async (pid: number) => {
    const path = join(dir, 'repo', hostLockKey(platform.id, 'vm-1'));
    await mkdir(dirname(path), { recursive: true });
    const now = new Date().toISOString();
    await writeFile(
      path,
      JSON.stringify({
        formatVersion: 1,
        kind: 'host',
        sessionId: 'fedcba9876543210',
        repositoryId: 'x',
        hostname: hostname(),
        pid,
        scope,
        startedAt: now,
        heartbeatAt: now,
        host: { platformId: platform.id, hostId: 'vm-1' },
      }),
    );
  };
  const dead = spawn(process.execPath, ['-e', '']);
  await new Promise((resolve) => dead.on('exit', resolve));
  await lockFor(dead.pid!);
  const engine = createBackupEngine({
    repository,
    platforms: [platform],
    chunkSize: CHUNK,
    hostLockPollIntervalMs: 3_600_000, // a wait would outlast the test
  });
  expect((await engine.backup()).succeeded).toBe(1);

  const alive = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
  try {
    await lockFor(alive.pid!);
    const controller = new AbortController();
    const waiting = repository.lockHost(
      { platformId: platform.id, hostId: 'vm-1' },
      {
        signal: controller.signal,
        pollIntervalMs: 3_600_000,
        onWait: (heldBy) => controller.abort(new Error(heldBy)),
      },
    );
    await expect(waiting).rejects.toThrow(`pid ${alive.pid}`);
  } finally {
    alive.kill('SIGKILL');
  }
  await engine.close();
});

it('leaves its snapshot to reconcile() when another job took the host over while it ran (a paused process)', async () => {
  const repository = await open();
  const platform = createMemoryPlatform({
    retainsSnapshotAsBase: false,
    disks: [{ id: 'd1', capacity: CHUNK }],
  });
  platform.write('d1', 0, randomBytes(CHUNK));
  const path = join(dir, 'repo', hostLockKey(platform.id, 'vm-1'));
  let open1!: () => void;
  platform.gates.set('d1', new Promise<void>((resolve) => (open1 = resolve)));
  platform.onChangesStart = () => {
    // Another job judged this one's lock stale and took the host: its lock blob now names another session.
    void readFile(path, 'utf8')
      .then((text) => writeFile(path, JSON.stringify({ ...JSON.parse(text), sessionId: 'aaaaaaaaaaaaaaaa' })))
      .then(() => open1());
  };
  const engine = createBackupEngine({ repository, platforms: [platform], chunkSize: CHUNK });
  const result = await engine.backup();
  expect(result.succeeded).toBe(1); // the point is whole
  expect(result.releaseFailures).toHaveLength(1);
  expect(RepositoryLockedError.isInstance(result.releaseFailures[0]?.error)).toBe(true);
  expect(platform.liveSnapshots().map((s) => s.name)).toEqual(platform.created); // not settled
  expect((await repository.ledger.list()).map((e) => e.name)).toEqual(platform.created);
  expect(JSON.parse(await readFile(path, 'utf8')).sessionId).toBe('aaaaaaaaaaaaaaaa'); // the other job's lock stays
  const report = await engine.reconcile();
  expect(report.released.map((e) => e.name)).toEqual(platform.created);
  expect(platform.liveSnapshots()).toEqual([]);
  await engine.close();
});
