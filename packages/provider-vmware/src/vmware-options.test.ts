import { InvalidSettingsError } from '@drkit/core';
import { describe, expect, it } from 'vitest';
import { normalizeThumbprint } from './soap/vmware-tls.js';
import { resolveVmwareOptions, sdkUrlOf } from './vmware-options.js';

const base = {
  id: 'vc',
  url: 'https://vc.example.com',
  username: 'backup@vsphere.local',
  password: 's3cret-pw',
};

function fieldOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    if (InvalidSettingsError.isInstance(error)) {
      expect(error.message).not.toContain('s3cret-pw');
      return error.field;
    }
    throw error;
  }
  return undefined;
}

describe('options', () => {
  it('normalizes the URL to the SDK endpoint', () => {
    expect(sdkUrlOf('https://vc.example.com').href).toBe('https://vc.example.com/sdk');
    expect(sdkUrlOf('vc.example.com:8443').href).toBe('https://vc.example.com:8443/sdk');
    expect(sdkUrlOf('https://10.0.0.5/sdk/').href).toBe('https://10.0.0.5/sdk');
  });

  it('names the field of what is wrong, and never echoes the password', () => {
    expect(fieldOf(() => resolveVmwareOptions({ ...base, id: '' }))).toBe('id');
    expect(fieldOf(() => resolveVmwareOptions({ ...base, url: 'http://vc' }))).toBe('url');
    expect(fieldOf(() => resolveVmwareOptions({ ...base, url: 'https://root:s3cret-pw@vc' }))).toBe('url');
    expect(fieldOf(() => resolveVmwareOptions({ ...base, url: 'https://vc/ui' }))).toBe('url');
    expect(fieldOf(() => resolveVmwareOptions({ ...base, password: '' }))).toBe('password');
    expect(fieldOf(() => resolveVmwareOptions({ ...base, pageSize: 0 }))).toBe('pageSize');
    expect(fieldOf(() => resolveVmwareOptions({ ...base, httpTimeoutSeconds: 1.5 }))).toBe(
      'httpTimeoutSeconds',
    );
    expect(fieldOf(() => resolveVmwareOptions({ ...base, transport: 'nfc' as never }))).toBe('transport');
    expect(fieldOf(() => resolveVmwareOptions({ ...base, tls: { ca: 'not pem' } }))).toBe('tls.ca');
    expect(fieldOf(() => resolveVmwareOptions({ ...base, tls: { thumbprint: 'AB:CD' } }))).toBe(
      'tls.thumbprint',
    );
    expect(fieldOf(() => resolveVmwareOptions({ ...base, tls: { ca: 'x', thumbprint: 'y' } }))).toBe('tls');
    expect(fieldOf(() => resolveVmwareOptions({ ...base, limits: 4 as never }))).toBe('limits');
    expect(fieldOf(() => resolveVmwareOptions({ ...base, limits: { connectionsPerHost: 0 } }))).toBe(
      'limits.connectionsPerHost',
    );
    expect(fieldOf(() => resolveVmwareOptions({ ...base, limits: { connectionsPerHost: 2.5 } }))).toBe(
      'limits.connectionsPerHost',
    );
    expect(fieldOf(() => resolveVmwareOptions({ ...base, limits: { connectionsPerVcenter: -1 } }))).toBe(
      'limits.connectionsPerVcenter',
    );
  });

  it('takes SHA-256 thumbprints in any spelling and refuses SHA-1', () => {
    const hex = 'ab'.repeat(32);
    expect(normalizeThumbprint(hex)).toBe(Array(32).fill('AB').join(':'));
    expect(normalizeThumbprint(Array(32).fill('ab').join(':'))).toBe(Array(32).fill('AB').join(':'));
    expect(() => normalizeThumbprint('ab'.repeat(20))).toThrow(/SHA-1/);
  });

  it('defaults', () => {
    expect(resolveVmwareOptions(base)).toMatchObject({
      transport: 'nbd',
      httpTimeoutSeconds: 600,
      pageSize: 100,
      apiVersion: '6.7',
      // VDDK programming guide, "NFC Session Limits and Timeouts": 48 per ESXi host, 52 through vCenter.
      limits: { connectionsPerHost: 48, connectionsPerVcenter: 52 },
    });
    expect(resolveVmwareOptions({ ...base, limits: { connectionsPerVcenter: 8 } }).limits).toEqual({
      connectionsPerHost: 8,
      connectionsPerVcenter: 8,
    });
  });
});
