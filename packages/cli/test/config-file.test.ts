import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidSettingsError, NotFoundError } from '@drkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ProviderNotFoundError,
  SecretInConfigError,
  SecretUnavailableError,
} from '../src/config/config-errors.js';
import { parseConfig } from '../src/config/config-file.js';
import { importProvider } from '../src/config/providers.js';
import { checkNoLiteralSecrets, isSecretField, resolveSecretReferences } from '../src/config/secrets.js';
import { REDACTED, SecretRedactor } from '../src/secret-redactor.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drkit-cli-config-unit-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function thrown(body: () => unknown): unknown {
  try {
    body();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}

describe('secret fields', () => {
  it('are the fields whose last word says secret', () => {
    for (const name of [
      'password',
      'keyring',
      'secretAccessKey',
      'clientSecret',
      'apiToken',
      'key',
      'private_key',
      'auth-token',
      'passphrase',
    ]) {
      expect(isSecretField(name), name).toBe(true);
    }
    for (const name of [
      'accessKeyId',
      'keyringPath',
      'tokenUrl',
      'username',
      'monitors',
      'passwordFile',
      'cephx',
    ]) {
      expect(isSecretField(name), name).toBe(false);
    }
  });

  it('refuse literal strings and numbers, also in lists; accept references', () => {
    const error = thrown(() =>
      checkNoLiteralSecrets({ ceph: [{ cephx: { user: 'u', keyring: 'AQB…' } }] }, 'platforms[0].options'),
    );
    expect(SecretInConfigError.isInstance(error)).toBe(true);
    expect(InvalidSettingsError.isInstance(error)).toBe(true);
    expect((error as SecretInConfigError).field).toBe('platforms[0].options.ceph[0].cephx.keyring');
    expect((error as Error).message).not.toContain('AQB');
    expect(() => checkNoLiteralSecrets({ pin: 1, tokens: [1234] }, 'o')).toThrow(
      /o\.tokens\[0\]: is a secret/,
    );
    expect(() =>
      checkNoLiteralSecrets(
        { password: { env: 'X' }, keys: [{ file: '/k' }], cephx: false, token: null },
        'o',
      ),
    ).not.toThrow();
  });

  it('resolve from the environment and from files relative to the configuration, reporting each secret', async () => {
    await writeFile(join(dir, 'pw'), 's3cret-from-file\n');
    const seen: string[] = [];
    const resolved = await resolveSecretReferences(
      { openstack: { password: { env: 'PW' }, username: { env: 'USER_NAME' } }, keyring: { file: 'pw' } },
      'options',
      { env: { PW: 's3cret-from-env', USER_NAME: 'admin' }, baseDir: dir, onSecret: (s) => seen.push(s) },
    );
    expect(resolved).toEqual({
      openstack: { password: 's3cret-from-env', username: 'admin' },
      keyring: 's3cret-from-file',
    });
    // Only values in secret fields are redacted: a user name from the environment stays readable.
    expect(seen).toEqual(['s3cret-from-env', 's3cret-from-file']);
    const missing = await resolveSecretReferences({ a: { token: { env: 'NOPE' } } }, 'options', {
      env: {},
      baseDir: dir,
      onSecret: () => {},
    }).catch((e: unknown) => e);
    expect(SecretUnavailableError.isInstance(missing)).toBe(true);
    expect((missing as SecretUnavailableError).field).toBe('options.a.token');
    await expect(
      resolveSecretReferences({ key: { file: dir } }, 'o', { env: {}, baseDir: dir, onSecret: () => {} }),
    ).rejects.toThrow(/o\.key: .* is not a regular file/);
  });
});

describe('the redactor', () => {
  it('replaces each secret, a keyring’s key on its own too, and leaves short ones and other text alone', () => {
    const redactor = new SecretRedactor();
    redactor.add('[client.backup]\n\tkey = AQBw3xdlAAAAABAAq0n8NOTAREALKEYzZc2kEwQ9Gg==');
    redactor.add('pw');
    redactor.add('hunter22');
    expect(redactor.redact('bad key AQBw3xdlAAAAABAAq0n8NOTAREALKEYzZc2kEwQ9Gg== for hunter22 (pw)')).toBe(
      `bad key ${REDACTED} for ${REDACTED} (pw)`,
    );
    redactor.add('with "quotes"\nand lines');
    expect(redactor.redact(JSON.stringify({ reason: 'got with "quotes"\nand lines' }))).toBe(
      `{"reason":"got ${REDACTED}"}`,
    );
  });
});

describe('parseConfig', () => {
  const file = '/etc/drkit/drkit.yaml';

  it('resolves relative repository paths against the file, and defaults', () => {
    const config = parseConfig(
      {
        repository: '../backups/repo',
        platforms: [{ id: 'lab', provider: 'local-disk', options: { disks: [] } }],
      },
      file,
    );
    expect(config.repository).toEqual({ type: 'local', path: '/etc/backups/repo' });
    expect(config.platforms[0]).toMatchObject({
      id: 'lab',
      alias: 'local-disk',
      provider: { package: '@drkit/provider-agent', factory: 'createLocalDiskPlatform' },
    });
    expect(config.proxies).toBeUndefined();
    const synced = parseConfig(
      { repository: { path: 'repo', syncLevel: 'filesystem' }, platforms: [] },
      file,
    );
    expect(synced.repository).toEqual({ type: 'local', path: '/etc/drkit/repo', syncLevel: 'filesystem' });
  });

  it('names the field of each mistake', () => {
    const cases: [unknown, string][] = [
      [{ platform: [] }, '(top level).platform'],
      [{ platforms: [{ id: 'a b', provider: 'local-disk' }] }, 'platforms[0].id'],
      [
        {
          platforms: [
            { id: 'a', provider: 'local-disk' },
            { id: 'a', provider: 'ceph-rbd' },
          ],
        },
        'platforms[1].id',
      ],
      [{ platforms: [{ id: 'a', provider: { package: '@x/y' } }] }, 'platforms[0].provider.factory'],
      [{ platforms: [{ id: 'a', provider: 'local-disk', options: { id: 'b' } }] }, 'platforms[0].options.id'],
      [
        { platforms: [{ id: 'a', provider: 'local-disk' }], proxies: [{ id: 'p', platforms: ['z'] }] },
        'proxies[0].platforms[0]',
      ],
      [
        {
          platforms: [{ id: 'a', provider: 'local-disk' }],
          proxies: [{ id: 'p', httpTimeoutSeconds: 0, platforms: ['a'] }],
        },
        'proxies[0].httpTimeoutSeconds',
      ],
      [{ repository: { type: 'ftp', path: 'r' } }, 'repository.type'],
      [{ repository: { type: 's3' } }, 'repository.bucket'],
      [{ repository: { type: 's3', bucket: 'Not_A_Bucket' } }, 'repository.bucket'],
      [{ repository: { type: 's3', bucket: 'backups', path: 'r' } }, 'repository.path'],
      [{ repository: { type: 's3', bucket: 'backups', forcePathStyle: 'yes' } }, 'repository.forcePathStyle'],
      [
        { repository: { type: 's3', bucket: 'backups', credentials: { accessKeyId: 'AKIA' } } },
        'repository.credentials',
      ],
      [
        {
          repository: { type: 's3', bucket: 'backups', immutability: { mode: 'legal-hold', periodDays: 30 } },
        },
        'repository.immutability.mode',
      ],
      [
        {
          repository: { type: 's3', bucket: 'backups', immutability: { mode: 'compliance', periodDays: 0 } },
        },
        'repository.immutability.periodDays',
      ],
      [
        {
          repository: {
            type: 's3',
            bucket: 'backups',
            immutability: { mode: 'compliance', periodDays: 30, years: 1 },
          },
        },
        'repository.immutability.years',
      ],
      [{ repository: { path: 'r', syncLevel: 'fast' } }, 'repository.syncLevel'],
      [{ concurrency: 0 }, 'concurrency'],
      [{ version: 2 }, 'version'],
    ];
    for (const [raw, field] of cases) {
      const error = thrown(() => parseConfig(raw, file));
      expect(InvalidSettingsError.isInstance(error), JSON.stringify(raw)).toBe(true);
      expect((error as InvalidSettingsError).field, JSON.stringify(raw)).toBe(field);
    }
  });
});

describe('importProvider', () => {
  it('throws a typed ProviderNotFoundError for a package that is not installed', async () => {
    const error = await importProvider(
      { package: '@acme/not-installed', factory: 'f' },
      'platforms[0].provider.package',
      dir,
    ).catch((e: unknown) => e);
    expect(ProviderNotFoundError.isInstance(error)).toBe(true);
    expect(NotFoundError.isInstance(error)).toBe(true);
    expect(error).toMatchObject({
      packageName: '@acme/not-installed',
      field: 'platforms[0].provider.package',
    });
  });

  it('imports drkit’s own providers by their package name', async () => {
    const module = await importProvider(
      { package: '@drkit/provider-agent', factory: 'createLocalDiskPlatform' },
      'f',
      dir,
    );
    expect(typeof module.createLocalDiskPlatform).toBe('function');
  });
});
