import { describe, expect, it } from 'vitest';
import {
  AuthenticationError,
  DrkitError,
  InvalidSettingsError,
  NotFoundError,
  PointWithdrawnError,
  RepositoryLockedError,
  ThrottledError,
  UnreachableError,
} from './drkit-error.js';

describe('DrkitError', () => {
  it('carries a stable code, retryable flag, cause and name', () => {
    const cause = new Error('ECONNREFUSED');
    const error = new UnreachableError('vCenter 10.0.0.1:443 did not answer', { cause });
    expect(error.code).toBe('UNREACHABLE');
    expect(error.retryable).toBe(true);
    expect(error.cause).toBe(cause);
    expect(error.name).toBe('UnreachableError');
    expect(error).toBeInstanceOf(Error);
    expect(new AuthenticationError('no').retryable).toBe(false);
    expect(new AuthenticationError('no', { retryable: true }).retryable).toBe(true);
  });

  it('isInstance recognises errors across package copies by marker and code', () => {
    const error = new NotFoundError('gone');
    expect(DrkitError.isInstance(error)).toBe(true);
    expect(NotFoundError.isInstance(error)).toBe(true);
    expect(AuthenticationError.isInstance(error)).toBe(false);
    // A copy of the class from a duplicate package: same marker symbol, other prototype.
    const foreign = Object.assign(new Error('gone'), { code: 'NOT_FOUND' });
    Object.defineProperty(foreign, Symbol.for('drkit.error'), { value: true });
    expect(NotFoundError.isInstance(foreign)).toBe(true);
    expect(DrkitError.isInstance(new Error('plain'))).toBe(false);
    expect(DrkitError.isInstance(undefined)).toBe(false);
  });

  it('names the field of an invalid setting and serialises without the cause', () => {
    const error = new InvalidSettingsError('disks[1].path', 'must not be empty', {
      cause: { password: 'x' },
    });
    expect(error.field).toBe('disks[1].path');
    expect(error.message).toBe('disks[1].path: must not be empty');
    expect(JSON.stringify(error)).toBe(
      '{"name":"InvalidSettingsError","code":"INVALID_SETTINGS","message":"disks[1].path: must not be empty","retryable":false}',
    );
  });

  it('a withdrawn point is a retryable lock error that names what was missing', () => {
    const missing = { manifest: false, segments: [], chunks: ['ab'.repeat(32)], total: 1 };
    const error = new PointWithdrawnError('withdrawn', '20261202T031500123-1a2b3c4d', missing);
    expect(RepositoryLockedError.isInstance(error)).toBe(true);
    expect(PointWithdrawnError.isInstance(error)).toBe(true);
    expect(PointWithdrawnError.isInstance(new RepositoryLockedError('held'))).toBe(false);
    expect(error).toMatchObject({ code: 'REPOSITORY_LOCKED', retryable: true, missing });
    expect(JSON.parse(JSON.stringify(error))).toMatchObject({ pointId: error.pointId, missing });
  });

  it('keeps Retry-After on throttling', () => {
    expect(new ThrottledError('slow', { retryAfterMs: 1500 }).retryAfterMs).toBe(1500);
  });
});
