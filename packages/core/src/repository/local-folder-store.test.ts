import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FaultInjectingFileSystem } from '../../test/fault-injecting-file-system.js';
import { InvalidArgumentError, InvalidSettingsError, NotFoundError } from '../errors/drkit-error.js';
import { createLocalFolderStore, createLocalFolderStoreOn } from './local-folder-store.js';
import { rejection } from './repository-fixture.js';
import type { Store } from './store.js';

const bytes = (text: string) => new TextEncoder().encode(text);

async function keys(store: Store, prefix: string): Promise<string[]> {
  const result: string[] = [];
  for await (const entry of store.list(prefix)) result.push(entry.key);
  return result;
}

// The behaviour every store shares is in @drkit/testkit's contract suite (packages/testkit/test); these are the
// local-folder specifics.
describe('local folder store', () => {
  let folder: string;
  let store: Store;
  beforeEach(async () => {
    folder = await mkdtemp(join(tmpdir(), 'drkit-store-'));
    store = createLocalFolderStore({ path: join(folder, 'repo') });
  });
  afterEach(() => rm(folder, { recursive: true, force: true }));

  it('needs a path', () => {
    expect(() => createLocalFolderStore({ path: '' })).toThrow(InvalidSettingsError);
  });

  it('describes itself', () => {
    expect(store.kind).toBe('local-folder');
    expect(store.location).toBe(join(folder, 'repo'));
  });

  it('maps keys to nested files and leaves no temporary file behind', async () => {
    expect(await store.put('a/b/c', bytes('one'))).toBe(true);
    expect(await store.put('a/b/c', bytes('two'), { ifAbsent: true })).toBe(false);
    expect(await readdir(join(folder, 'repo', 'a', 'b'))).toEqual(['c']);
    expect(new TextDecoder().decode(await store.get('a/b/c'))).toBe('one');
  });

  it('refuses an unknown sync level, and filesystem where there is no syncfs', () => {
    expect(() => createLocalFolderStore({ path: folder, syncLevel: 'fast' as never })).toThrow(
      InvalidSettingsError,
    );
    const fs = new FaultInjectingFileSystem();
    expect(() =>
      createLocalFolderStoreOn(fs, { path: '/r', syncLevel: 'filesystem', platform: 'darwin' }),
    ).toThrow(/only Linux/);
  });

  it('syncs the real file system at every level', async () => {
    for (const syncLevel of ['file', 'filesystem', 'none'] as const) {
      if (syncLevel === 'filesystem' && process.platform !== 'linux') continue;
      const leveled = createLocalFolderStore({ path: join(folder, syncLevel), syncLevel });
      await leveled.sync?.(['chunks/ab/missing']); // nothing written yet: nothing to sync
      expect(await leveled.put('chunks/ab/one', bytes('1'), { durable: false })).toBe(true);
      expect(await leveled.put('chunks/ab/one', bytes('2'), { ifAbsent: true })).toBe(false);
      expect(await leveled.put('points/p', bytes('p'), { ifAbsent: true })).toBe(true);
      await leveled.sync?.(['chunks/ab/one', 'chunks/cd/missing']);
      expect(new TextDecoder().decode(await leveled.get('chunks/ab/one'))).toBe('1');
    }
  });
  it('validates keys', async () => {
    for (const key of ['', '/abs', 'a//b', 'a/../b', '..', './a', 'a/', 'a\\b', 'a/.drkit-tmp-x', 'a\nb']) {
      const error = await rejection(store.put(key, bytes('x')));
      expect(InvalidArgumentError.isInstance(error), JSON.stringify(key)).toBe(true);
      expect(InvalidArgumentError.isInstance(await rejection(store.get(key))), JSON.stringify(key)).toBe(
        true,
      );
    }
    expect(InvalidArgumentError.isInstance(await rejection(keys(store, '../')))).toBe(true);
  });

  it('treats a folder as no blob', async () => {
    await store.put('dir/file', bytes('x'));
    expect(await store.has('dir')).toBe(false);
    expect(NotFoundError.isInstance(await rejection(store.get('dir')))).toBe(true);
    await store.delete('dir');
    expect(await store.has('dir/file')).toBe(true);
  });

  it('lists in byte order across folder boundaries and skips temporary files', async () => {
    for (const key of ['a/x', 'a-b', 'a/y/z', 'b', 'a.c', 'ab']) await store.put(key, bytes(key));
    await writeFile(join(folder, 'repo', 'a', '.drkit-tmp-0123'), 'partial');
    expect(await keys(store, '')).toEqual(['a-b', 'a.c', 'a/x', 'a/y/z', 'ab', 'b']);
    expect(await keys(store, 'a')).toEqual(['a-b', 'a.c', 'a/x', 'a/y/z', 'ab']);
    expect(await keys(store, 'a/')).toEqual(['a/x', 'a/y/z']);
    expect(await keys(store, 'a/y')).toEqual(['a/y/z']);
    expect(await keys(store, 'nothing/')).toEqual([]);
  });

  it('lists sizes and modification times', async () => {
    const before = Date.now() - 2000;
    await store.put('k', bytes('12345'));
    const entries = [];
    for await (const entry of store.list('k')) entries.push(entry);
    const [entry] = entries;
    expect(entry?.size).toBe(5);
    expect(entry!.modifiedAt.getTime()).toBeGreaterThan(before);
  });

  it('reads an empty store as empty', async () => {
    expect(await keys(store, '')).toEqual([]);
    expect(await store.has('x')).toBe(false);
    await store.delete('x');
  });
});

// What each call syncs, counted by a fault-injecting file system under the store.
describe('local folder store durability', () => {
  const root = '/srv/repo';
  const paths = (_fs: FaultInjectingFileSystem, calls: string[]) =>
    calls.map((call) => call.replace(root, '<root>'));
  function storeOn(syncLevel: 'file' | 'filesystem' | 'none', writebackBytes?: number) {
    const fs = new FaultInjectingFileSystem();
    const synced: string[] = [];
    const fsync = fs.fsync.bind(fs);
    fs.fsync = async (path) => {
      await fsync(path);
      synced.push(`fsync ${path}`);
    };
    const syncfs = fs.syncfs.bind(fs);
    fs.syncfs = async (path) => {
      await syncfs(path);
      synced.push(`syncfs ${path}`);
    };
    return {
      fs,
      synced,
      store: createLocalFolderStoreOn(fs, {
        path: root,
        syncLevel,
        platform: 'linux',
        ...(writebackBytes === undefined ? {} : { writebackBytes }),
      }),
    };
  }

  it('at file level: a blob is fsynced before it is linked; a durable put fsyncs its folder chain', async () => {
    const { fs, synced, store } = storeOn('file');
    await store.put('chunks/ab/one', bytes('1'), { durable: false });
    expect(synced).toEqual([]); // the temporary file's own sync is not a path call
    expect(fs.fsyncs).toBe(1);
    await store.put('points/p', bytes('p'));
    // Its folder chain, and the folders above the root that the first (not durable) put created.
    expect(paths(fs, synced)).toEqual(['fsync <root>/points', 'fsync <root>', 'fsync /srv', 'fsync /']);
    // The next durable put in that folder: the chain above it is known durable.
    synced.length = 0;
    await store.put('points/q', bytes('q'));
    expect(paths(fs, synced)).toEqual(['fsync <root>/points']);
    fs.crash();
    expect(fs.files()).toEqual(['/srv/repo/points/p', '/srv/repo/points/q']);
  });

  it('at file level: a create-only durable put that finds the key present syncs that blob and its folders up to the root', async () => {
    const { fs, synced, store } = storeOn('file');
    await store.put('chunks/ab/present', bytes('theirs'), { durable: false });
    synced.length = 0;
    expect(await store.put('chunks/ab/present', bytes('ours'), { ifAbsent: true })).toBe(false);
    expect(paths(fs, synced)).toEqual([
      'fsync <root>/chunks/ab/present',
      'fsync <root>/chunks/ab',
      'fsync <root>/chunks',
      'fsync <root>',
      'fsync /srv',
      'fsync /',
    ]);
    expect(new TextDecoder().decode(await store.get('chunks/ab/present'))).toBe('theirs');
    // Without durable, nothing: the commit's sync covers it.
    synced.length = 0;
    expect(await store.put('chunks/ab/present', bytes('ours'), { ifAbsent: true, durable: false })).toBe(
      false,
    );
    expect(synced).toEqual([]);
  });

  it('at file level: sync fsyncs the folder chain of the given keys once each, missing keys included', async () => {
    const { fs, synced, store } = storeOn('file');
    await store.put('chunks/ab/one', bytes('1'), { durable: false });
    await store.put('chunks/ab/two', bytes('2'), { durable: false });
    await store.put('chunks/cd/three', bytes('3'), { durable: false });
    synced.length = 0;
    await store.sync?.(['chunks/ab/one', 'chunks/ab/two', 'chunks/cd/three', 'chunks/ef/missing']);
    expect(paths(fs, synced).sort()).toEqual(
      [
        'fsync /',
        'fsync /srv',
        'fsync <root>',
        'fsync <root>/chunks',
        'fsync <root>/chunks/ab',
        'fsync <root>/chunks/cd',
      ].sort(),
    );
    // Durable now: a crash keeps all three.
    fs.crash();
    expect(fs.files()).toEqual([
      '/srv/repo/chunks/ab/one',
      '/srv/repo/chunks/ab/two',
      '/srv/repo/chunks/cd/three',
    ]);
  });

  it('at filesystem level: no sync while writing, one syncfs per sync and per durable put', async () => {
    const { fs, synced, store } = storeOn('filesystem');
    await store.put('chunks/ab/one', bytes('1'), { durable: false });
    await store.put('chunks/ab/one', bytes('x'), { ifAbsent: true, durable: false });
    expect(synced).toEqual([]);
    await store.sync?.(['chunks/ab/one']);
    await store.put('points/p', bytes('p'), { ifAbsent: true });
    expect(await store.put('chunks/ab/one', bytes('x'), { ifAbsent: true })).toBe(false);
    expect(paths(fs, synced)).toEqual(['syncfs <root>', 'syncfs <root>', 'syncfs <root>']);
    await store.sync?.([]);
    expect(fs.syncCalls).toBe(3);
  });

  it('at filesystem level: one background syncfs per writebackBytes put unsynced, awaited by the next sync', async () => {
    const { fs, store } = storeOn('filesystem', 10);
    const settled = () => new Promise((resolve) => setImmediate(resolve));
    await store.put('chunks/ab/one', bytes('12345'), { durable: false });
    await settled();
    expect(fs.syncfsCalls).toBe(0);
    await store.put('chunks/ab/two', bytes('67890'), { durable: false });
    await settled();
    // The tenth byte started one syncfs in the background: what it covered survives a crash.
    expect(fs.syncfsCalls).toBe(1);
    await store.put('chunks/ab/three', bytes('abcdefghijklmno'), { durable: false });
    await settled();
    expect(fs.syncfsCalls).toBe(2);
    await store.put('chunks/ab/four', bytes('4'), { durable: false });
    await settled();
    expect(fs.syncfsCalls).toBe(2); // one byte since the last one
    fs.crash();
    expect(fs.files()).toEqual([
      '/srv/repo/chunks/ab/one',
      '/srv/repo/chunks/ab/three',
      '/srv/repo/chunks/ab/two',
    ]);
    await store.put('chunks/ab/four', bytes('4'), { durable: false });
    await store.sync?.(['chunks/ab/four']);
    expect(fs.syncfsCalls).toBe(3);
  });

  it('at file or none level, or with writebackBytes 0: no background syncfs', async () => {
    for (const [level, writebackBytes] of [
      ['file', 1],
      ['none', 1],
      ['filesystem', 0],
    ] as const) {
      const { fs, store } = storeOn(level, writebackBytes);
      for (const name of ['a', 'b', 'c'])
        await store.put(`chunks/ab/${name}`, bytes('1234'), { durable: false });
      expect(fs.syncfsCalls, level).toBe(0);
    }
    expect(() => storeOn('filesystem', -1)).toThrow(InvalidSettingsError);
    expect(() => storeOn('filesystem', 1.5)).toThrow(InvalidSettingsError);
  });

  it('once a syncfs fails, background or not, every later sync and durable put fails', async () => {
    const { fs, store } = storeOn('filesystem', 4);
    let failures = 1;
    const syncfs = fs.syncfs.bind(fs);
    fs.syncfs = async (path) => {
      if (failures > 0) {
        failures -= 1;
        throw Object.assign(
          new Error('syncfs of /srv/repo failed (sync --file-system): Input/output error'),
          {
            code: 'EIO',
          },
        );
      }
      await syncfs(path);
    };
    await store.put('chunks/ab/one', bytes('1234'), { durable: false }); // starts the failing background syncfs
    const sticky = await store.sync?.(['chunks/ab/one']).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(sticky).toBeInstanceOf(Error);
    expect((sticky as Error & { code?: string }).code).toBe('EIO');
    expect((sticky as Error).message).toContain('no later sync succeeds');
    expect((sticky as Error).message).toContain('Input/output error');
    // Later syncfs calls would succeed, yet nothing may be reported durable any more.
    await expect(store.sync?.(['chunks/ab/one'])).rejects.toBe(sticky);
    await expect(store.put('points/p', bytes('p'), { ifAbsent: true })).rejects.toBe(sticky);
    fs.crash();
    expect(fs.files()).toEqual([]);
  });

  it('at level none: nothing, and a crash loses everything', async () => {
    const { fs, store } = storeOn('none');
    await store.put('config', bytes('c'));
    await store.put('chunks/ab/one', bytes('1'), { durable: false });
    await store.sync?.(['chunks/ab/one']);
    expect(fs.syncCalls).toBe(0);
    fs.crash();
    expect(fs.files()).toEqual([]);
  });

  it('loses a blob put with durable: false in a crash before its sync, never leaves a part of it', async () => {
    for (const syncLevel of ['file', 'filesystem'] as const) {
      const { fs, store } = storeOn(syncLevel);
      await store.put('config', bytes('durable'));
      await store.put('chunks/ab/one', bytes('volatile'), { durable: false });
      fs.crash();
      expect(fs.files(), syncLevel).toEqual(['/srv/repo/config']);
      expect(await store.has('chunks/ab/one')).toBe(false);
    }
  });
});
