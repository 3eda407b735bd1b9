import { describe, expect, it } from 'vitest';
import { AuthenticationError } from '../errors/drkit-error.js';
import { abnormalStatus } from './platform-status.js';

describe('abnormalStatus', () => {
  it('reports a drkit error with its code, a system error with its errno code, and a prefix', () => {
    expect(abnormalStatus(new AuthenticationError('wrong password for admin'))).toMatchObject({
      status: 'abnormal',
      reason: 'wrong password for admin',
      code: 'AUTHENTICATION_FAILED',
    });
    const enoent = Object.assign(new Error('no such file'), { code: 'ENOENT' });
    const status = abnormalStatus(enoent, { prefix: 'disk d1: cannot open /dev/sdz' });
    expect(status).toMatchObject({ reason: 'disk d1: cannot open /dev/sdz: no such file', code: 'ENOENT' });
    expect(Number.isNaN(Date.parse(status.checkedAt))).toBe(false);
    expect(abnormalStatus('plain text')).not.toHaveProperty('code');
  });

  it('rethrows the abort reason instead of reporting it', () => {
    const controller = new AbortController();
    const reason = new Error('cancelled');
    controller.abort(reason);
    expect(() => abnormalStatus(new Error('x'), { signal: controller.signal })).toThrow(reason);
  });
});
