import { InvalidSettingsError } from '@drkit/core';
import { describe, expect, it } from 'vitest';
import { normalizeCephUser, parseCephKey } from './ceph-key.js';

const KEY = 'AQBBY9hfBc0+AxAAzyym+6l+MeTpMlgNTbye/A==';

function message(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    expect(InvalidSettingsError.isInstance(error), String(error)).toBe(true);
    return (error as InvalidSettingsError).message;
  }
  throw new Error('expected an InvalidSettingsError');
}

describe('parseCephKey', () => {
  it('accepts the bare key, as the console field shows it', () => {
    expect(parseCephKey(KEY, 'cinder', 'k')).toBe(KEY);
    expect(parseCephKey(`  ${KEY}\n`, 'cinder', 'k')).toBe(KEY);
  });

  it('accepts a keyring file and takes the section of the user', () => {
    const keyring = [
      '[client.admin]',
      '\tkey = AQC3VglrnYPZMRAA+rwgwcW8EYszCGs1A7P68Q==',
      '[client.cinder]',
      `\tkey = ${KEY}`,
      '\tcaps mon = "profile rbd"',
      '\tcaps osd = "profile rbd pool=volumes"',
    ].join('\n');
    expect(parseCephKey(keyring, 'cinder', 'k')).toBe(KEY);
    expect(parseCephKey(`[client.cinder]\r\nkey=${KEY}\r\n`, 'cinder', 'k')).toBe(KEY);
  });

  it('rejects keys that are not Ceph keys, naming the field and never echoing the input', () => {
    for (const bad of [
      'not a key',
      'AQBBY9hf',
      'QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=',
      `${KEY.slice(0, -4)}AAA=`,
    ]) {
      const text = message(() => parseCephKey(bad, 'cinder', 'clusters[0].cephx.keyring'));
      expect(text).toMatch(
        /^clusters\[0\]\.cephx\.keyring: the key of client\.cinder is not a valid Ceph key/,
      );
      expect(text).not.toContain(bad);
    }
    expect(message(() => parseCephKey('', 'cinder', 'f'))).toMatch(/^f: paste the key of client\.cinder/);
    expect(message(() => parseCephKey(undefined, 'cinder', 'f'))).toMatch(/^f: paste the key/);
  });

  it('says which sections a keyring of another user holds', () => {
    const text = message(() => parseCephKey(`[client.glance]\n\tkey = ${KEY}\n`, 'cinder', 'f'));
    expect(text).toMatch(/holds \[client\.glance\] but not \[client\.cinder\]/);
    expect(text).not.toContain(KEY);
    expect(message(() => parseCephKey('[client.cinder]\n\tcaps mon = "x"\n', 'cinder', 'f'))).toMatch(
      /section has no "key = \.\.\." line/,
    );
  });
});

describe('normalizeCephUser', () => {
  it('accepts names with and without client.', () => {
    expect(normalizeCephUser('client.backup', 'u')).toBe('backup');
    expect(normalizeCephUser('cinder', 'u')).toBe('cinder');
  });
  it('rejects empty and malformed names', () => {
    expect(message(() => normalizeCephUser('', 'clusters[0].cephx.user'))).toMatch(
      /^clusters\[0\]\.cephx\.user: name/,
    );
    expect(message(() => normalizeCephUser('bad user', 'u'))).toMatch(/is not a Ceph user name/);
    expect(message(() => normalizeCephUser('-x', 'u'))).toMatch(/is not a Ceph user name/);
  });
});
