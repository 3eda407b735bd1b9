import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RepositoryLockedError } from '../errors/drkit-error.js';
import { createLocalFolderStore } from './local-folder-store.js';
import { TEST_LINEAGE } from './repository-fixture.js';
import { acquireBackupLock, acquirePruneLock } from './repository-lock.js';
import type { Store } from './store.js';

const STALE_MS = 600;

// The holder's fence on fake clocks: the wall clock (Date) and the monotonic clock (performance.now) move only
// when the test moves them, each on its own, as a suspended VM (wall only) or a stepped wall clock (monotonic
// only) would. The heartbeat timer is faked too and never fires.
describe('a lock holder checks both clocks', () => {
  let folder: string;
  let store: Store;
  let monotonic = 0;
  beforeEach(async () => {
    folder = await mkdtemp(join(tmpdir(), 'drkit-lock-'));
    store = createLocalFolderStore({ path: folder });
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'Date'] });
    monotonic = 1_000;
    vi.spyOn(performance, 'now').mockImplementation(() => monotonic);
  });
  afterEach(async () => {
    vi.restoreAllMocks();
    vi.useRealTimers();
    await rm(folder, { recursive: true, force: true });
  });

  it('the wall clock alone (a suspended machine: the monotonic clock stood still) breaks the lock', async () => {
    const { lock } = await acquirePruneLock(store, 'r', STALE_MS, undefined);
    lock.checkLive();
    vi.setSystemTime(Date.now() + STALE_MS / 2);
    lock.checkLive(); // exactly half: still held
    vi.setSystemTime(Date.now() + 1);
    expect(() => lock.checkLive()).toThrow(RepositoryLockedError);
    expect(() => lock.checkLive()).toThrow(
      /no longer held: its heartbeat could not be written for more than 0\.300 s/,
    );
    await lock.release();
  });

  it('the monotonic clock alone (the wall clock set back) breaks the lock', async () => {
    const lock = await acquireBackupLock(store, 'r', TEST_LINEAGE, STALE_MS, undefined);
    vi.setSystemTime(Date.now() - 60_000);
    lock.checkLive();
    monotonic += STALE_MS / 2 + 1;
    const error = (() => {
      try {
        lock.checkLive();
      } catch (caught) {
        return caught;
      }
    })();
    expect(RepositoryLockedError.isInstance(error)).toBe(true);
    expect((error as RepositoryLockedError).retryable).toBe(false);
    // Once broken, for good: the clocks coming back does not revive it, and confirm() fails before any I/O.
    monotonic -= STALE_MS;
    await expect(lock.confirm()).rejects.toThrow(RepositoryLockedError);
    await lock.release();
  });
});
