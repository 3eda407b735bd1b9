import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { mutateDiskImage, writeDiskImage } from '@drkit/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, sha256File } from './run-cli.js';

const MiB = 1024 * 1024;
let dir: string;
let repo: string;
let image: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drkit-cli-'));
  repo = join(dir, 'repo');
  image = join(dir, 'disk.img');
  await writeDiskImage(image, { size: 24 * MiB, seed: 7 });
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('drkit CLI', () => {
  it('--help lists every command and exits 0; no command is a usage error', async () => {
    const help = await runCli(['--help']);
    expect(help.code).toBe(0);
    for (const command of [
      'backup',
      'platforms',
      'hosts',
      'points',
      'host-points',
      'restore',
      'verify',
      'prune',
      'ledger',
      'change-passphrase',
    ]) {
      expect(help.stdout).toMatch(new RegExp(`^  ${command}\\b`, 'm'));
    }
    expect((await runCli([])).code).toBe(2);
    const unknown = await runCli(['frobnicate', '--repo', repo]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command "frobnicate"/);
    expect((await runCli(['points', '--no-such-flag'])).code).toBe(2);
    const level = await runCli(['points', '--repo', repo, '--sync-level', 'fast']);
    expect(level.code).toBe(2);
    expect(level.stderr).toMatch(/--sync-level takes none, filesystem, file, got "fast"/);
  });

  it('needs a repository, from --repo or DRKIT_REPO', async () => {
    const none = await runCli(['points'], { DRKIT_REPO: '' });
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/--repo/);
    const missing = await runCli(['points'], { DRKIT_REPO: join(dir, 'nothing-here') });
    expect(missing.code).toBe(3);
  });

  it('backs up twice, lists points as JSON, restores both identically', async () => {
    const sums = [await sha256File(image)];
    const first = await runCli(['backup', image, '--repo', repo, '--json']);
    expect(first.code, first.stderr).toBe(0);
    const job = JSON.parse(first.stdout);
    expect(job.tasks[0].validity).toEqual({ kind: 'full', reason: 'first-backup' });
    await mutateDiskImage(image, { fraction: 0.02, seed: 8, lastByte: true });
    sums.push(await sha256File(image));
    // At another sync level: the repository does not record one, and one level after the other is safe.
    const second = await runCli(['backup', image], {
      DRKIT_REPO: repo,
      DRKIT_SYNC_LEVEL: process.platform === 'linux' ? 'filesystem' : 'none',
    });
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/superset incremental/);

    const listed = await runCli(['points', '--repo', repo, '--json']);
    const points = JSON.parse(listed.stdout);
    expect(points).toHaveLength(2);
    for (const p of points) {
      expect(Object.keys(p)).toEqual(
        expect.arrayContaining([
          'id',
          'host',
          'disk',
          'time',
          'snapshotAt',
          'jobId',
          'taskId',
          'sizeBytes',
          'validity',
        ]),
      );
      expect(Date.parse(p.snapshotAt)).toBeLessThanOrEqual(Date.parse(p.createdAt));
      expect(p.time).toBe(p.createdAt);
      expect(typeof p.taskId).toBe('string');
      expect(p.sizeBytes).toBe(24 * MiB);
      expect(p.disk.id).toBe(image);
      // The id drkit always filed this machine's disks under: later backups keep building on earlier points.
      expect(p.platformId).toBe(`local-${hostname()}`);
      expect(p.host.id).toBe(hostname());
    }
    expect(points[1].validity).toEqual({ kind: 'superset' });
    expect(points[0].jobId).toBe(job.jobId);
    expect(points[1].jobId).not.toBe(job.jobId);
    for (const [i, p] of points.entries()) {
      const target = join(dir, `restored-${i}.img`);
      const restored = await runCli(['restore', p.id, target, '--repo', repo]);
      expect(restored.code, restored.stderr).toBe(0);
      expect(await sha256File(target)).toBe(sums[i]);
    }
    const table = await runCli(['points', '--repo', repo]);
    expect(table.stdout.split('\n')[0]).toMatch(
      /^ID\s+SNAPSHOT TIME\s+COMMITTED\s+HOST\s+DISK\s+SIZE\s+CHANGE SET/,
    );
  });

  it('encrypts a new repository with a passphrase from a file, refuses a wrong one, and changes it', async () => {
    const sealed = join(dir, 'sealed-repo');
    const secretFile = join(dir, 'passphrase');
    const secret = 'cli passphrase 0f the test';
    await writeFile(secretFile, `${secret}\n`);
    const sum = await sha256File(image);
    const first = await runCli([
      'backup',
      image,
      '--repo',
      sealed,
      '--passphrase-file',
      secretFile,
      '--json',
    ]);
    expect(first.code, first.stderr).toBe(0);
    const config = await readFile(join(sealed, 'config'), 'utf8');
    expect(config).toContain('sealed-aes256gcm');
    // No blob of the repository holds the passphrase or a plain chunk header.
    for (const entry of await readdir(sealed, { recursive: true, withFileTypes: true })) {
      if (!entry.isFile()) continue;
      const bytes = await readFile(join(entry.parentPath, entry.name));
      expect(bytes.includes(secret)).toBe(false);
      expect(bytes.includes('DRKC')).toBe(false);
    }

    const none = await runCli(['points', '--repo', sealed]);
    expect(none.code).toBe(4);
    expect(none.stderr).toMatch(/is encrypted; give its passphrase/);
    const wrong = await runCli(['points', '--repo', sealed], { DRKIT_PASSPHRASE: 'not the passphrase' });
    expect(wrong.code).toBe(4);
    expect(wrong.stderr).toMatch(/does not unlock/);
    const listed = await runCli(['points', '--repo', sealed, '--json'], { DRKIT_PASSPHRASE: secret });
    expect(listed.code, listed.stderr).toBe(0);
    const [point] = JSON.parse(listed.stdout);

    const changed = await runCli(['change-passphrase', '--repo', sealed, '--passphrase-file', secretFile], {
      DRKIT_NEW_PASSPHRASE: 'the new cli passphrase',
    });
    expect(changed.code, changed.stderr).toBe(0);
    expect((await runCli(['points', '--repo', sealed, '--passphrase-file', secretFile])).code).toBe(4);
    const target = join(dir, 'restored-sealed.img');
    const restored = await runCli(['restore', point.id, target, '--repo', sealed], {
      DRKIT_PASSPHRASE: 'the new cli passphrase',
    });
    expect(restored.code, restored.stderr).toBe(0);
    expect(await sha256File(target)).toBe(sum);
    const missingFile = await runCli(['points', '--repo', sealed, '--passphrase-file', join(dir, 'no-such')]);
    expect(missingFile.code).toBe(9);
    expect(missingFile.stderr).toMatch(/--passphrase-file/);
  });

  it('exits 3 for an unknown point and 9 for a malformed point id', async () => {
    const result = await runCli([
      'restore',
      '20200101T000000000-deadbeef',
      join(dir, 'x.img'),
      '--repo',
      repo,
    ]);
    expect(result.code, result.stderr).toBe(3);
    const malformed = await runCli(['restore', 'no-such-point', join(dir, 'x.img'), '--repo', repo]);
    expect(malformed.code).toBe(9);
    expect(malformed.stderr).toMatch(/not a point id/);
  });

  it('verify finds a chunk corrupted on purpose (exit 6), and restore refuses it (exit 6)', async () => {
    const chunkDirs = await readdir(join(repo, 'chunks'));
    const sub = join(repo, 'chunks', chunkDirs[0]!);
    const chunk = join(sub, (await readdir(sub))[0]!);
    const original = await readFile(chunk);
    const damaged = Buffer.from(original);
    damaged[damaged.length - 1]! ^= 0xff;
    await writeFile(chunk, damaged);
    try {
      const verify = await runCli(['verify', '--repo', repo, '--json']);
      expect(verify.code).toBe(6);
      const report = JSON.parse(verify.stdout);
      expect(report.ok).toBe(false);
      expect(report.damaged.length).toBe(1);
      expect(report.damaged[0].pointIds.length).toBeGreaterThanOrEqual(1);
      const pointId = report.damaged[0].pointIds[0];
      const restore = await runCli(['restore', pointId, join(dir, 'bad.img'), '--repo', repo]);
      expect(restore.code).toBe(6);
      expect(restore.stderr).toMatch(/chunk/i);
    } finally {
      await writeFile(chunk, original);
    }
  });

  it('prune keeps the last N points and frees unreferenced chunks', async () => {
    const dry = await runCli(['prune', '--keep-last', '1', '--dry-run', '--json', '--repo', repo]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(JSON.parse(dry.stdout).removed).toHaveLength(1);
    expect(JSON.parse((await runCli(['points', '--json', '--repo', repo])).stdout)).toHaveLength(2);
    const real = await runCli(['prune', '--keep-last', '1', '--json', '--repo', repo]);
    expect(real.code, real.stderr).toBe(0);
    const out = JSON.parse(real.stdout);
    expect(out.removed).toHaveLength(1);
    // The chunks only the removed point referenced are marked, not yet deleted: a prune after the grace period
    // deletes them.
    expect(out).toMatchObject({ phase: 'marked', chunksRemoved: 0 });
    expect(out.candidateChunks).toBeGreaterThan(0);
    expect(Date.parse(out.sweepAfter) - Date.parse(out.markedAt)).toBe(20 * 60_000);
    const again = await runCli(['prune', '--keep-last', '1', '--repo', repo]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/marked at .* wait out the grace period: run prune again from /);
    const left = JSON.parse((await runCli(['points', '--json', '--repo', repo])).stdout);
    expect(left).toHaveLength(1);
    // The remaining point still restores to the current image content.
    const target = join(dir, 'after-prune.img');
    expect((await runCli(['restore', left[0].id, target, '--repo', repo])).code).toBe(0);
    expect(await sha256File(target)).toBe(await sha256File(image));
    expect((await runCli(['prune', '--repo', repo])).code).toBe(2);
  });

  it('ledger shows who holds each entry and until when, also in --json', async () => {
    const base = {
      kind: 'snapshot',
      platformId: 'local',
      hostId: 'vm-1',
      state: 'pending',
      jobId: 'job-1',
      createdAt: '2024-06-01T10:20:00.000Z',
    };
    const entries = [
      {
        ...base,
        id: 'a-held',
        name: 'drkit-held',
        owner: { engineId: 'proxy-a', hostname: 'host-a', pid: 4242 },
        leaseExpiresAt: '2999-01-01T00:00:00.000Z',
      },
      {
        ...base,
        id: 'b-expired',
        name: 'drkit-expired',
        owner: { engineId: 'proxy-b', hostname: 'host-b', pid: 7 },
        leaseExpiresAt: '2024-06-01T10:30:00.000Z',
      },
      { ...base, id: 'c-old', name: 'drkit-old' },
    ];
    await mkdir(join(repo, 'ledger'), { recursive: true });
    for (const e of entries) await writeFile(join(repo, 'ledger', `${e.id}.json`), JSON.stringify(e));
    try {
      const text = await runCli(['ledger', '--repo', repo]);
      expect(text.code, text.stderr).toBe(0);
      expect(text.stdout).toContain(
        'pending snapshot drkit-held on local/vm-1 (job job-1, created 2024-06-01T10:20:00.000Z, owner proxy-a on host-a (pid 4242), lease until 2999-01-01T00:00:00.000Z)',
      );
      expect(text.stdout).toContain(
        'owner proxy-b on host-b (pid 7), lease expired 2024-06-01T10:30:00.000Z',
      );
      expect(text.stdout).toContain(
        'drkit-old on local/vm-1 (job job-1, created 2024-06-01T10:20:00.000Z, no owner',
      );
      const json = await runCli(['ledger', '--json', '--repo', repo]);
      expect(json.code, json.stderr).toBe(0);
      const listed = JSON.parse(json.stdout) as { id: string }[];
      expect([...listed].sort((x, y) => x.id.localeCompare(y.id))).toEqual(entries);
    } finally {
      for (const e of entries) await rm(join(repo, 'ledger', `${e.id}.json`), { force: true });
    }
  });
});
