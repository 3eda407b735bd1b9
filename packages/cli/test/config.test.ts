import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { mutateDiskImage, writeDiskImage } from '@drkit/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { type CliRun, runCli, sha256File } from './run-cli.js';

const MiB = 1024 * 1024;
const FAKE_PROVIDER = new URL('./fixtures/fake-provider.mjs', import.meta.url);
const PASSWORD = 'fake-password-6d1c2b9e';
const KEYRING_KEY = 'AQBw3xdlAAAAABAAq0n8NOTAREALKEYzZc2kEwQ9Gg==';
const KEYRING = `[client.backup]\n\tkey = ${KEYRING_KEY}\n`;
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

let dir: string;
let yamlConfig: string;
let jsonConfig: string;
const images: Record<string, string> = {};
/** Every stdout and stderr of every run: no secret may be in any of them. */
const outputs: string[] = [];

/** Runs drkit with the fake provider's password in the environment, and keeps what it printed. */
async function drkit(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliRun> {
  const run = await runCli(args, { DRKIT_REPO: '', DRKIT_CONFIG: '', FAKE_PASSWORD: PASSWORD, ...env });
  outputs.push(run.stdout, run.stderr);
  return run;
}

async function writeConfig(name: string, config: unknown): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, name.endsWith('.json') ? JSON.stringify(config, null, 2) : stringify(config));
  return path;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drkit-cli-config-'));
  for (const [name, size, seed] of [
    ['a.img', 8 * MiB, 1],
    ['b.img', 4 * MiB, 2],
    ['c.img', 3 * MiB, 3],
    ['d.img', 2 * MiB, 4],
  ] as const) {
    images[name] = join(dir, name);
    await writeDiskImage(images[name], { size, seed });
  }
  // A third-party provider: a package in the config folder's node_modules, and the same module as a loose file.
  const pkg = join(dir, 'node_modules', '@acme', 'drkit-provider-fake');
  await mkdir(pkg, { recursive: true });
  await writeFile(
    join(pkg, 'package.json'),
    JSON.stringify({
      name: '@acme/drkit-provider-fake',
      version: '1.0.0',
      type: 'module',
      exports: './index.js',
    }),
  );
  await copyFile(FAKE_PROVIDER, join(pkg, 'index.js'));
  await mkdir(join(dir, 'providers'));
  await copyFile(FAKE_PROVIDER, join(dir, 'providers', 'fake-provider.mjs'));
  await writeFile(join(dir, 'ceph.keyring'), KEYRING);

  yamlConfig = await writeConfig('drkit.yaml', {
    repository: './repo-yaml',
    platforms: [
      {
        id: 'lab',
        provider: 'local-disk',
        options: {
          hostId: 'lab-1',
          hostName: 'lab-one',
          disks: [
            { path: images['a.img'], name: 'a.img' },
            { path: images['b.img'], name: 'b.img' },
          ],
        },
      },
      {
        id: 'acme-pkg',
        provider: { package: '@acme/drkit-provider-fake', factory: 'createFakePlatform' },
        options: {
          hosts: [{ id: 'pkg-1', name: 'pkg-one', disks: [{ id: 'c', name: 'c', path: images['c.img'] }] }],
        },
      },
    ],
  });
  jsonConfig = await writeConfig('drkit.json', {
    repository: { path: './repo-json' },
    platforms: [
      {
        id: 'acme',
        provider: {
          package: pathToFileURL(join(dir, 'providers', 'fake-provider.mjs')).href,
          factory: 'createFakePlatform',
        },
        options: {
          password: { env: 'FAKE_PASSWORD' },
          keyring: { file: './ceph.keyring' },
          expectedPasswordSha256: sha256(PASSWORD),
          expectedKeyringSha256: sha256(KEYRING.replace(/\n$/, '')),
          hosts: [
            {
              id: 'vm-1',
              name: 'vm-one',
              disks: [{ id: 'vda', name: 'Hard disk 1', path: images['d.img'] }],
              skippedDisks: [
                {
                  id: 'cd0',
                  name: 'cdrom',
                  reason: 'unsupported-disk',
                  detail: 'an ISO image is not a disk',
                },
              ],
            },
          ],
        },
      },
    ],
    proxies: [
      { id: 'proxy-a', name: 'proxy-a.lab', maxMountedDisks: 2, httpTimeoutSeconds: 60, platforms: ['acme'] },
    ],
  });
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('drkit with a configuration file', () => {
  it('platforms: one line per platform with its status and host count, also as JSON (YAML config)', async () => {
    const text = await drkit(['platforms', '--config', yamlConfig]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout.split('\n').filter(Boolean)).toEqual([
      'lab (local): status Normal, 1 host',
      'acme-pkg (fake): status Normal, 1 host',
    ]);
    const json = await drkit(['platforms', '--json'], { DRKIT_CONFIG: yamlConfig });
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual([
      expect.objectContaining({ id: 'lab', kind: 'local', status: 'normal', hostCount: 1 }),
      expect.objectContaining({ id: 'acme-pkg', kind: 'fake', status: 'normal', hostCount: 1 }),
    ]);
  });

  it('hosts: the disks of each host with their capacity', async () => {
    const json = await drkit(['hosts', '--config', yamlConfig, '--platform', 'lab', '--json']);
    expect(json.code, json.stderr).toBe(0);
    const hosts = JSON.parse(json.stdout);
    expect(hosts).toHaveLength(1);
    expect(hosts[0]).toMatchObject({ platformId: 'lab', id: 'lab-1', name: 'lab-one', skippedDisks: [] });
    expect(
      hosts[0].disks.map((d: { name: string; capacityBytes: number }) => [d.name, d.capacityBytes]),
    ).toEqual([
      ['a.img', 8 * MiB],
      ['b.img', 4 * MiB],
    ]);
    const text = await drkit(['hosts', '--config', yamlConfig, '--platform', 'lab']);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain('lab: host lab-one (id lab-1), 2 disks');
    expect(text.stdout).toMatch(/^ {2}disk a\.img .*: 8\.00 MiB$/m);
  });

  it('backup --platform --host, twice, then restore --host-point gives back every disk byte for byte', async () => {
    const sums = [{ a: await sha256File(images['a.img']!), b: await sha256File(images['b.img']!) }];
    const first = await drkit([
      'backup',
      '--config',
      yamlConfig,
      '--platform',
      'lab',
      '--host',
      'lab-one',
      '--json',
    ]);
    expect(first.code, first.stderr).toBe(0);
    const job = JSON.parse(first.stdout);
    expect([job.succeeded, job.failed, job.skipped]).toEqual([2, 0, 0]);
    expect(job.hostPoints).toHaveLength(1);
    expect(job.hostPoints[0]).toMatchObject({ platformId: 'lab', hostId: 'lab-1' });
    expect(job.hostPoints[0].pointIds).toHaveLength(2);

    await mutateDiskImage(images['a.img']!, { fraction: 0.05, seed: 9, lastByte: true });
    sums.push({ a: await sha256File(images['a.img']!), b: sums[0]!.b });
    const second = await drkit(['backup', '--config', yamlConfig, '--platform', 'lab', '--host', 'lab-1']);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/^lab-1\/.*a\.img: point .*superset incremental/m);
    expect(second.stdout).toMatch(/^host lab-1: host point \S+ \(2 disk\(s\)\)/m);

    const listed = await drkit(['host-points', '--config', yamlConfig, '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    const hostPoints = JSON.parse(listed.stdout);
    expect(hostPoints).toHaveLength(2);
    expect(hostPoints[0].id).toBe(job.hostPoints[0].id);
    expect(hostPoints.map((hp: { points: unknown[] }) => hp.points.length)).toEqual([2, 2]);
    const points = JSON.parse((await drkit(['points', '--config', yamlConfig, '--json'])).stdout);
    expect(points).toHaveLength(4);
    expect(new Set(points.map((p: { platformId: string }) => p.platformId))).toEqual(new Set(['lab']));
    expect(points.filter((p: { hostPointId: string }) => p.hostPointId === hostPoints[1].id)).toHaveLength(2);

    // The first by its id, the second by its job's id.
    for (const [i, ref] of [hostPoints[0].id, hostPoints[1].jobId].entries()) {
      const to = join(dir, `restored-yaml-${i}`);
      const restored = await drkit([
        'restore',
        '--config',
        yamlConfig,
        '--host-point',
        ref,
        '--to',
        to,
        '--json',
      ]);
      expect(restored.code, restored.stderr).toBe(0);
      const summary = JSON.parse(restored.stdout);
      expect(summary.hostPointId).toBe(hostPoints[i].id);
      expect(summary.disks.map((d: { path: string }) => d.path).sort()).toEqual([
        join(to, 'a.img'),
        join(to, 'b.img'),
      ]);
      expect(summary.bytes).toBe(12 * MiB);
      expect(await sha256File(join(to, 'a.img'))).toBe(sums[i]!.a);
      expect(await sha256File(join(to, 'b.img'))).toBe(sums[i]!.b);
    }
    // Never over existing files.
    const again = await drkit([
      'restore',
      '--config',
      yamlConfig,
      '--host-point',
      hostPoints[0].id,
      '--to',
      join(dir, 'restored-yaml-0'),
    ]);
    expect(again.code).toBe(9);
    expect(again.stderr).toMatch(/refusing to overwrite/);
  });

  it('loads a third-party provider package from the configuration file’s folder by its name', async () => {
    const run = await drkit([
      'backup',
      '--config',
      yamlConfig,
      '--platform',
      'acme-pkg',
      '--host',
      'pkg-1',
      '--json',
    ]);
    expect(run.code, run.stderr).toBe(0);
    const job = JSON.parse(run.stdout);
    expect(job.tasks.map((t: { status: string }) => t.status)).toEqual(['succeeded']);
    const to = join(dir, 'restored-pkg');
    const restored = await drkit([
      'restore',
      '--config',
      yamlConfig,
      '--host-point',
      job.hostPoints[0].id,
      '--to',
      to,
    ]);
    expect(restored.code, restored.stderr).toBe(0);
    expect(await sha256File(join(to, 'c'))).toBe(await sha256File(images['c.img']!));
  });

  it('a host with a skipped disk: the other disks are backed up, the skipped one is listed, exit 12 (JSON config)', async () => {
    // The password (env) and keyring (file) reached the provider intact: it compares their hashes.
    const status = await drkit(['platforms', '--config', jsonConfig, '--json']);
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout)).toEqual([
      expect.objectContaining({ id: 'acme', kind: 'fake', status: 'normal', hostCount: 1 }),
    ]);
    const hosts = await drkit(['hosts', '--config', jsonConfig]);
    expect(hosts.code, hosts.stderr).toBe(0);
    expect(hosts.stdout).toContain('acme: host vm-one (id vm-1), 1 disk, 1 skipped');
    expect(hosts.stdout).toContain('  skipped cdrom (id cd0): unsupported-disk: an ISO image is not a disk');
    const hostsJson = JSON.parse((await drkit(['hosts', '--config', jsonConfig, '--json'])).stdout);
    expect(hostsJson[0].skippedDisks).toEqual([
      { id: 'cd0', name: 'cdrom', reason: 'unsupported-disk', detail: 'an ISO image is not a disk' },
    ]);

    const run = await drkit(['backup', '--config', jsonConfig, '--host', 'vm-one', '--json']);
    expect(run.code, run.stderr).toBe(12);
    const job = JSON.parse(run.stdout);
    expect([job.succeeded, job.failed, job.skipped]).toEqual([1, 0, 1]);
    expect(job.tasks).toEqual([
      expect.objectContaining({ status: 'succeeded', hostId: 'vm-1', diskId: 'vda', proxyId: 'proxy-a' }),
      expect.objectContaining({ status: 'skipped', diskId: 'cd0', reason: 'unsupported-disk' }),
    ]);
    const text = await drkit(['backup', '--config', jsonConfig, '--platform', 'acme', '--host', 'vm-1']);
    expect(text.code).toBe(12);
    expect(text.stdout).toMatch(/^vm-1\/vda: point /m);
    expect(text.stderr).toContain('vm-1/cd0: SKIPPED (unsupported-disk): an ISO image is not a disk');

    const to = join(dir, 'restored-json');
    const restored = await drkit([
      'restore',
      '--config',
      jsonConfig,
      '--host-point',
      job.hostPoints[0].id,
      '--to',
      to,
    ]);
    expect(restored.code, restored.stderr).toBe(0);
    expect(await sha256File(join(to, 'Hard_disk_1'))).toBe(await sha256File(images['d.img']!));
  });

  it('--quiesce: required fails the disks of a platform that reads live (exit 10); a bad mode is a usage error', async () => {
    const run = await drkit([
      'backup',
      '--config',
      jsonConfig,
      '--host',
      'vm-1',
      '--quiesce',
      'required',
      '--json',
    ]);
    expect(run.code).toBe(10);
    const job = JSON.parse(run.stdout);
    expect(job.tasks[0]).toMatchObject({ status: 'failed', error: { code: 'QUIESCE_FAILED' } });
    const bad = await drkit(['backup', '--config', jsonConfig, '--host', 'vm-1', '--quiesce', 'sometimes']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--quiesce takes required, preferred, none/);
  });
});

describe('secrets in the configuration', () => {
  async function fakeConfig(name: string, options: Record<string, unknown>): Promise<string> {
    return writeConfig(name, {
      platforms: [
        {
          id: 'acme',
          provider: { package: './providers/fake-provider.mjs', factory: 'createFakePlatform' },
          options,
        },
      ],
    });
  }

  it('a missing variable or file is an error naming the field', async () => {
    const env = await fakeConfig('missing-env.yaml', {
      openstack: { password: { env: 'DRKIT_TEST_UNSET' } },
    });
    const run = await drkit(['platforms', '--config', env, '--json']);
    expect(run.code).toBe(9);
    expect(JSON.parse(run.stdout).error).toMatchObject({
      name: 'SecretUnavailableError',
      code: 'INVALID_SETTINGS',
      field: 'platforms[0].options.openstack.password',
    });
    expect(run.stderr).toContain(
      'platforms[0].options.openstack.password: environment variable DRKIT_TEST_UNSET is not set',
    );
    const file = await fakeConfig('missing-file.yaml', {
      ceph: [{ cephx: { user: 'backup', keyring: { file: './no-such.keyring' } } }],
    });
    const missing = await drkit(['platforms', '--config', file]);
    expect(missing.code).toBe(9);
    expect(missing.stderr).toContain(
      `platforms[0].options.ceph[0].cephx.keyring: cannot read ${join(dir, 'no-such.keyring')} (ENOENT)`,
    );
  });

  it('a literal secret is refused, naming the field and not the value', async () => {
    for (const [name, options, field] of [
      [
        'literal.json',
        { openstack: { password: 'hunter2-literal-pw' } },
        'platforms[0].options.openstack.password',
      ],
      ['literal-key.yaml', { secretAccessKey: 'hunter2-literal-pw' }, 'platforms[0].options.secretAccessKey'],
      [
        'literal-keyring.yaml',
        { ceph: [{ cephx: { user: 'backup', keyring: 'hunter2-literal-pw' } }] },
        'platforms[0].options.ceph[0].cephx.keyring',
      ],
    ] as const) {
      const run = await drkit(['platforms', '--config', await fakeConfig(name, options), '--json']);
      expect(run.code).toBe(9);
      expect(JSON.parse(run.stdout).error).toMatchObject({ name: 'SecretInConfigError', field });
      expect(run.stderr).toContain(`${field}: is a secret and must not be written in the configuration file`);
      expect(run.stderr).toContain('{ env: VARIABLE } or { file: PATH }');
      expect(run.stdout + run.stderr).not.toContain('hunter2-literal-pw');
    }
  });

  it('a provider that quotes its password in a message: the CLI prints it redacted', async () => {
    const config = await fakeConfig('quoting.yaml', {
      password: { env: 'FAKE_PASSWORD' },
      quotePasswordInStatus: true,
    });
    const text = await drkit(['platforms', '--config', config]);
    expect(text.code).toBe(10);
    expect(text.stdout).toBe('acme (fake): status Abnormal: login refused for password [redacted]\n');
    const json = await drkit(['platforms', '--config', config, '--json']);
    expect(JSON.parse(json.stdout)[0].reason).toBe('login refused for password [redacted]');
  });
});

describe('configuration errors', () => {
  it('a provider package that is not installed: NOT_FOUND (exit 3), saying what to install', async () => {
    const config = await writeConfig('no-package.yaml', {
      platforms: [
        { id: 'x', provider: { package: '@acme/drkit-provider-nope', factory: 'createNopePlatform' } },
      ],
    });
    const run = await drkit(['platforms', '--config', config, '--json']);
    expect(run.code).toBe(3);
    expect(JSON.parse(run.stdout).error).toMatchObject({
      name: 'ProviderNotFoundError',
      code: 'NOT_FOUND',
      field: 'platforms[0].provider.package',
      package: '@acme/drkit-provider-nope',
    });
    expect(run.stderr).toContain('npm install @acme/drkit-provider-nope');
    const path = await writeConfig('no-file.yaml', {
      platforms: [{ id: 'x', provider: { package: './providers/nope.mjs', factory: 'createNopePlatform' } }],
    });
    const file = await drkit(['platforms', '--config', path]);
    expect(file.code).toBe(3);
    expect(file.stderr).toContain(`there is no module at ${join(dir, 'providers', 'nope.mjs')}`);
  });

  it('a factory the module does not export, a v1 platform, an unknown alias: exit 9 naming the field', async () => {
    const cases = [
      [
        { package: './providers/fake-provider.mjs', factory: 'createOther' },
        {},
        /provider\.factory: .*exports no function createOther \(it exports createFakePlatform\)/,
      ],
      [
        { package: './providers/fake-provider.mjs', factory: 'createFakePlatform' },
        { specificationVersion: 'v1' },
        /implements the provider specification v1; this drkit implements v2/,
      ],
      [
        'vmware-ish',
        {},
        /platforms\[0\]\.provider: "vmware-ish" is not a provider drkit knows \(local-disk, openstack-ceph, ceph-rbd, aws\)/,
      ],
    ] as const;
    for (const [i, [provider, options, message]] of cases.entries()) {
      const config = await writeConfig(`bad-provider-${i}.yaml`, {
        platforms: [{ id: 'x', provider, options }],
      });
      const run = await drkit(['hosts', '--config', config]);
      expect(run.code, run.stderr).toBe(9);
      expect(run.stderr).toMatch(message);
    }
  });

  it('an unknown repository type, an S3 secret written in the file, a platform without id, an unbound platform: exit 9', async () => {
    const ftp = await writeConfig('ftp.json', { repository: { type: 'ftp', path: 'r' } });
    const run = await drkit(['points', '--config', ftp]);
    expect(run.code).toBe(9);
    expect(run.stderr).toContain('repository.type: must be local');
    const literal = await writeConfig('s3.json', {
      repository: {
        type: 's3',
        bucket: 'backups',
        credentials: { accessKeyId: 'AKIAEXAMPLE', secretAccessKey: 'written-in-the-file-0123456789' },
      },
    });
    const secretRun = await drkit(['points', '--config', literal]);
    expect(secretRun.code).toBe(9);
    expect(secretRun.stderr).toContain('repository.credentials.secretAccessKey');
    expect(secretRun.stderr).not.toContain('written-in-the-file');
    const noId = await writeConfig('no-id.yaml', { platforms: [{ provider: 'local-disk', options: {} }] });
    expect((await drkit(['platforms', '--config', noId])).stderr).toContain('platforms[0].id: is required');
    const unbound = await writeConfig('unbound.yaml', {
      platforms: [
        { id: 'a', provider: 'local-disk' },
        { id: 'b', provider: 'local-disk' },
      ],
      proxies: [{ id: 'p', platforms: ['a'] }],
    });
    const proxies = await drkit(['platforms', '--config', unbound]);
    expect(proxies.code).toBe(9);
    expect(proxies.stderr).toContain('proxies: no Sync Proxy is bound to platform b');
    const tooMany = await writeConfig('too-many.yaml', {
      platforms: [{ id: 'a', provider: 'local-disk' }],
      proxies: [{ id: 'p', maxMountedDisks: 151, platforms: ['a'] }],
    });
    expect((await drkit(['platforms', '--config', tooMany])).stderr).toContain(
      'proxies[0].maxMountedDisks: must be a whole number from 1 to 150',
    );
  });

  it('usage errors: platform commands without a file, disk paths with --platform, --host-point without --to', async () => {
    const none = await drkit(['platforms']);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain(
      'platforms needs a configuration file: pass --config <file> or set DRKIT_CONFIG',
    );
    expect(
      (await drkit(['backup', images['a.img']!, '--platform', 'lab', '--config', yamlConfig])).code,
    ).toBe(2);
    expect((await drkit(['backup', '--config', yamlConfig, '--platform', 'lab'])).code).toBe(2);
    expect((await drkit(['backup', '--config', yamlConfig, '--host', 'lab-1'])).stderr).toContain(
      'name the platform: --platform <id>',
    );
    expect((await drkit(['restore', '--config', yamlConfig, '--host-point', 'x'])).code).toBe(2);
    const unknown = await drkit([
      'restore',
      '--config',
      yamlConfig,
      '--host-point',
      'no-such',
      '--to',
      join(dir, 'x'),
    ]);
    expect(unknown.code).toBe(3);
    expect((await drkit(['points', '--config', join(dir, 'missing.yaml')])).code).toBe(3);
  });

  it('no secret value appears in anything drkit printed in these tests', async () => {
    expect(outputs.length).toBeGreaterThan(40);
    const text = outputs.join('\n');
    for (const secret of [PASSWORD, KEYRING_KEY, KEYRING.trim()]) expect(text).not.toContain(secret);
    expect(text).toContain('[redacted]');
    // And the configuration files themselves hold none.
    for (const file of [yamlConfig, jsonConfig]) {
      const content = await readFile(file, 'utf8');
      expect(content).not.toContain(PASSWORD);
      expect(content).not.toContain(KEYRING_KEY);
    }
  });
});
