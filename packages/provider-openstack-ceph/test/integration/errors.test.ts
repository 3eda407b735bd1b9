// Failures against the real Ceph cluster of the global setup: a wrong key, an unreachable or silent monitor, a
// user without the caps, missing images, protected snapshots, a half-taken host snapshot, and a truncated
// export-diff stream in the middle of a backup (the only case that needs a stand-in: a wrapper around the real
// rbd that cuts its output, since a real cluster does not truncate a stream on demand).
import { mkdtempSync, rmSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AuthenticationError,
  createBackupEngine,
  createLocalFolderStore,
  type Host,
  type HostSnapshot,
  NotFoundError,
  openRepository,
  PermissionError,
  SourceProtocolError,
  UnreachableError,
} from '@drkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CephRbdPlatform, createCephRbdPlatform } from '../../src/index.js';
import type { CephClusterDescription } from './ceph-cluster-description.js';
import {
  adminCommand,
  backupClusterOptions,
  cephCluster,
  openRbdResources,
  rbdHelper,
  snapshotNames,
  uniqueImageName,
} from './ceph-test-cluster.js';

// A temp dir of this test file alone, so that counting the rbd calls' temp folders sees only ours.
const privateTmp = mkdtempSync(join(tmpdir(), 'drkit-ceph-errors-tmp-'));
process.env.TMPDIR = privateTmp;

const MiB = 1024 * 1024;
/** A well-formed key that the cluster does not know. */
const WRONG_KEY = 'AQBBY9hfBc0+AxAAzyym+6l+MeTpMlgNTbye/A==';

let cluster: CephClusterDescription;
let image: string;
let dir: string;

// Hooks and tests talk to a real cluster (python3-rbd, the rbd command) on what may be 2 busy cores: generous
// budgets, far above what they take, instead of vitest's 10 s and 5 s.
beforeAll(async () => {
  cluster = cephCluster();
  dir = await mkdtemp(join(tmpdir(), 'drkit-ceph-errors-'));
  image = uniqueImageName('errors');
  await rbdHelper(cluster, [
    { op: 'create', image, size: 8 * MiB },
    { op: 'fill', image, offset: 0, length: 6 * MiB, seed: 7 },
  ]);
}, 120_000);

afterAll(async () => {
  if (cluster && image) await rbdHelper(cluster, [{ op: 'remove', image }]).catch(() => {});
  if (dir) await rm(dir, { recursive: true, force: true });
  rmSync(privateTmp, { recursive: true, force: true });
}, 120_000);

function platformWith(overrides: Parameters<typeof backupClusterOptions>[1] = {}): CephRbdPlatform {
  return createCephRbdPlatform({
    id: 'ceph-errors',
    clusters: [backupClusterOptions(cluster, overrides)],
    hosts: [{ id: 'host', name: 'host', images: [`${cluster.pool}/${image}`] }],
  });
}

async function listHosts(platform: CephRbdPlatform): Promise<Host[]> {
  const hosts: Host[] = [];
  for await (const host of platform.hosts()) hosts.push(host);
  return hosts;
}

/** A port on 127.0.0.1 that nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

// Elapsed times are bounded in one direction only, and generously: a wrong key must fail before the configured
// timeout (not be waited out); a dead monitor must take about the configured timeout and end with rbd's own
// UnreachableError (a TimeoutError would mean the hard timer had to kill rbd); an abort must end the wait long
// before the timeout. None of these bounds is within 10 times of what the call takes on an idle machine.
describe('Ceph failures are typed, fast and never leak the key', { timeout: 120_000 }, () => {
  it('a wrong key is an AuthenticationError at once', async () => {
    const timeoutSeconds = 10;
    const platform = platformWith({ cephx: { user: 'backup', keyring: WRONG_KEY }, timeoutSeconds });
    const started = performance.now();
    const error = await listHosts(platform).then(
      () => undefined,
      (e: unknown) => e,
    );
    const elapsed = performance.now() - started;
    expect(AuthenticationError.isInstance(error), String(error)).toBe(true);
    expect((error as Error).message).toMatch(/refused client\.backup/);
    expect((error as Error).message).not.toContain(WRONG_KEY);
    // Refused at once (a few hundred ms), never waited out like an unreachable monitor.
    expect(elapsed).toBeLessThan(timeoutSeconds * 1000);
    console.log(`wrong key: AuthenticationError after ${Math.round(elapsed)} ms`);

    const status = await platform.verify();
    expect(status).toMatchObject({ status: 'abnormal', code: 'AUTHENTICATION_FAILED' });
    const disk = (await listHosts(platformWith()))[0]!.disks[0]!;
    const snapshot: HostSnapshot = {
      hostId: 'host',
      name: 'drkit-x',
      disks: [{ diskId: disk.id, ref: `test/${cluster.pool}/${image}@drkit-x` }],
      consistency: 'disk',
    };
    await expect(
      platform.changedBlockReader.open({
        disk,
        snapshot,
        diskSnapshot: snapshot.disks[0],
        chunkSize: 1024 * 1024,
      }),
    ).rejects.toSatisfy(AuthenticationError.isInstance);
  });

  it('an unreachable monitor is an UnreachableError within the configured timeout', async () => {
    const port = await closedPort();
    const platform = platformWith({ monitors: `127.0.0.1:${port}`, timeoutSeconds: 3 });
    const started = performance.now();
    const error = await listHosts(platform).then(
      () => undefined,
      (e: unknown) => e,
    );
    const elapsed = performance.now() - started;
    expect(UnreachableError.isInstance(error), String(error)).toBe(true);
    expect((error as Error).message).toMatch(/no monitor of Ceph cluster test .* answered within 3 s/);
    // At least about the configured 3 s (rbd's own timer, which starts after the process has); no upper bound:
    // the UnreachableError above says rbd gave up by itself, before the hard timer (3 × 3 + 5 s) killed it.
    expect(elapsed).toBeGreaterThan(2500);
    console.log(
      `unreachable monitor (closed port), timeoutSeconds 3: UnreachableError after ${Math.round(elapsed)} ms`,
    );
    expect(await platform.verify()).toMatchObject({ status: 'abnormal', code: 'UNREACHABLE' });
    expect(openRbdResources()).toBe(0);
  });

  it('a monitor that accepts connections and never answers is an UnreachableError within the timeout', async () => {
    const sockets = new Set<Socket>();
    const server: Server = createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    try {
      const platform = platformWith({ monitors: `v2:127.0.0.1:${port}`, timeoutSeconds: 2 });
      const started = performance.now();
      // UnreachableError, not the hard timer's TimeoutError (at 2 × 3 + 5 s): rbd's own timeout ended the wait.
      await expect(listHosts(platform)).rejects.toSatisfy(UnreachableError.isInstance);
      const elapsed = performance.now() - started;
      console.log(`silent monitor, timeoutSeconds 2: UnreachableError after ${Math.round(elapsed)} ms`);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('an abort ends a call that waits for an unreachable monitor at once, with the reason', async () => {
    const port = await closedPort();
    const platform = platformWith({ monitors: `127.0.0.1:${port}`, timeoutSeconds: 30 });
    const reason = new Error('stop waiting');
    const controller = new AbortController();
    setTimeout(() => controller.abort(reason), 300);
    // The signal's own reason, not the UnreachableError the 30 s timeout would give: the abort ended the wait.
    await expect(platform.verify({ signal: controller.signal })).rejects.toBe(reason);
    expect(openRbdResources()).toBe(0);
  });

  it('a user without snapshot rights gets a PermissionError that names the caps to grant', async () => {
    const user = `ro-${Date.now().toString(36)}`;
    const key = (
      await adminCommand(
        cluster,
        [
          'auth',
          'get-or-create-key',
          `client.${user}`,
          'mon',
          'profile rbd',
          'osd',
          `profile rbd-read-only pool=${cluster.pool}`,
        ],
        'ceph',
      )
    ).trim();
    try {
      const platform = platformWith({ cephx: { user, keyring: `[client.${user}]\n\tkey = ${key}\n` } });
      expect(await platform.verify()).toMatchObject({ status: 'normal', hostCount: 1 });
      const [host] = await listHosts(platform);
      const error = await platform
        .createSnapshot({ host: host!, name: 'drkit-denied', quiesce: 'none' })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(PermissionError.isInstance(error), String(error)).toBe(true);
      expect((error as Error).message).toContain(`mon 'profile rbd' osd 'profile rbd pool=${cluster.pool}'`);
      expect((error as Error).message).not.toContain(key);
      expect(await snapshotNames(cluster, image)).toEqual([]);
    } finally {
      await adminCommand(cluster, ['auth', 'del', `client.${user}`], 'ceph');
    }
  });

  it('a missing image is a skipped disk (backing-missing); a snapshot of it is a NotFoundError and a half-taken host snapshot is removed', async () => {
    const missing = uniqueImageName('missing');
    const platform = createCephRbdPlatform({
      id: 'ceph-errors-half',
      clusters: [backupClusterOptions(cluster)],
      hosts: [
        { id: 'half', name: 'half', images: [`${cluster.pool}/${image}`, `${cluster.pool}/${missing}`] },
      ],
    });
    // Listed, with the disk it cannot protect and why, rather than failing every host of the platform.
    const [listed] = await listHosts(platform);
    expect(listed!.disks.map((disk) => disk.id)).toEqual([`test/${cluster.pool}/${image}`]);
    expect(listed!.skippedDisks).toEqual([
      {
        id: `test/${cluster.pool}/${missing}`,
        name: missing,
        reason: 'backing-missing',
        detail: expect.stringContaining(
          `image ${cluster.pool}/${missing} does not exist on Ceph cluster test`,
        ),
      },
    ]);
    expect(await platform.verify()).toMatchObject({ status: 'normal', hostCount: 1 });
    const [good] = await listHosts(platformWith());
    const host: Host = {
      ...good!,
      id: 'half',
      disks: [
        good!.disks[0]!,
        {
          id: `test/${cluster.pool}/${missing}`,
          hostId: 'half',
          name: missing,
          capacityBytes: MiB,
          attributes: { 'ceph.cluster': 'test', 'ceph.pool': cluster.pool, 'ceph.image': missing },
        },
      ],
    };
    await expect(platform.createSnapshot({ host, name: 'drkit-half', quiesce: 'none' })).rejects.toSatisfy(
      NotFoundError.isInstance,
    );
    expect(
      await snapshotNames(cluster, image),
      'the snapshot taken on the existing image was removed',
    ).toEqual([]);
  });

  it('releasing is idempotent; a protected snapshot is a PermissionError until unprotected', async () => {
    const platform = platformWith();
    const [host] = await listHosts(platform);
    await platform.createSnapshot({ host: host!, name: 'drkit-protected', quiesce: 'none' });
    await adminCommand(cluster, ['snap', 'protect', `${cluster.pool}/${image}@drkit-protected`]);
    await expect(platform.releaseSnapshot({ hostId: 'host', name: 'drkit-protected' })).rejects.toSatisfy(
      (error: unknown) => PermissionError.isInstance(error) && /protected/.test(error.message),
    );
    await adminCommand(cluster, ['snap', 'unprotect', `${cluster.pool}/${image}@drkit-protected`]);
    await platform.releaseSnapshot({ hostId: 'host', name: 'drkit-protected' });
    await platform.releaseSnapshot({ hostId: 'host', name: 'drkit-protected' });
    // A platform object that never saw the host or the snapshot finds it by name.
    await platform.createSnapshot({ host: host!, name: 'drkit-elsewhere', quiesce: 'none' });
    await platformWith().releaseSnapshot({ hostId: 'unknown-host', name: 'drkit-elsewhere' });
    expect(await snapshotNames(cluster, image)).toEqual([]);
  });

  it('a truncated export-diff stream fails the disk task with a SourceProtocolError and commits no point', async () => {
    const wrapper = join(dir, 'rbd-truncating');
    await writeFile(
      wrapper,
      [
        '#!/bin/sh',
        '# The real rbd, with the output of export-diff cut after 100000 bytes and a successful exit.',
        'for arg in "$@"; do',
        '  if [ "$arg" = export-diff ]; then rbd "$@" | head -c 100000; exit 0; fi',
        'done',
        'exec rbd "$@"',
        '',
      ].join('\n'),
    );
    await chmod(wrapper, 0o755);
    const repository = await openRepository({
      store: createLocalFolderStore({ path: join(dir, 'repo-truncated') }),
      create: true,
    });
    const platform = createCephRbdPlatform({
      id: 'ceph-truncated',
      clusters: [backupClusterOptions(cluster)],
      hosts: [{ id: 'host', name: 'host', images: [`${cluster.pool}/${image}`] }],
      rbdPath: wrapper,
    });
    const engine = createBackupEngine({ repository, platforms: [platform] });
    try {
      const job = await engine.backup();
      expect(job.failed).toBe(1);
      const task = job.tasks[0]!;
      expect(task.status).toBe('failed');
      const error = task.status === 'failed' ? task.error : undefined;
      expect(SourceProtocolError.isInstance(error), String(error)).toBe(true);
      expect((error as Error).message).toMatch(/truncated at byte 100000/);
      expect(await repository.points()).toEqual([]);
      // The host snapshot was released through the ledger.
      expect(await repository.ledger.list()).toEqual([]);
      expect(await snapshotNames(cluster, image)).toEqual([]);
      expect(openRbdResources()).toBe(0);
    } finally {
      await engine.close();
      await repository.close();
    }
  });
});
