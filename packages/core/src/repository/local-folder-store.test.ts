import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { InvalidArgumentError, InvalidSettingsError, NotFoundError } from '../errors/drkit-error.js';
import { createLocalFolderStore } from './local-folder-store.js';
import { rejection } from './repository-fixture.js';
import type { Store } from './store.js';

// Records every fsync the store makes (the path of the synced file or folder), without changing what it does.
const synced = vi.hoisted(() => ({ paths: [] as string[] }));
vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:fs/promises')>();
  return {
    ...actual,
    open: async (...args: Parameters<typeof actual.open>) => {
      const handle = await actual.open(...args);
      const sync = handle.sync.bind(handle);
      handle.sync = async () => {
        await sync();
        synced.paths.push(String(args[0]));
      };
      return handle;
    },
  };
});

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

  it('makes an existing blob durable before a create-only put reports it present', async () => {
    // Another writer (or a crashed earlier run) linked the blob but may not have fsynced its folder yet.
    await store.put('chunks/ab/other', bytes('x'));
    await writeFile(join(folder, 'repo', 'chunks', 'ab', 'present'), 'theirs');
    synced.paths.length = 0;
    expect(await store.put('chunks/ab/present', bytes('ours'), { ifAbsent: true })).toBe(false);
    const root = join(folder, 'repo');
    // Its folder and every folder up to the root, so the entry survives a crash. (Its content was fsynced
    // before it was linked into place: only the temporary file of this put is synced besides.)
    expect(synced.paths.filter((path) => !path.includes('.drkit-tmp-'))).toEqual([
      join(root, 'chunks', 'ab'),
      join(root, 'chunks'),
      root,
    ]);
    expect(new TextDecoder().decode(await store.get('chunks/ab/present'))).toBe('theirs');
    expect(await readdir(join(root, 'chunks', 'ab'))).toEqual(['other', 'present']);
  });

  it('flushes the folders of the given keys once each, skipping missing keys', async () => {
    await store.put('chunks/ab/one', bytes('1'));
    await store.put('chunks/ab/two', bytes('2'));
    await store.put('chunks/cd/three', bytes('3'));
    synced.paths.length = 0;
    const root = join(folder, 'repo');
    await store.flush?.(['chunks/ab/one', 'chunks/ab/two', 'chunks/cd/three', 'chunks/ef/missing']);
    expect([...synced.paths].sort()).toEqual(
      [root, join(root, 'chunks'), join(root, 'chunks', 'ab'), join(root, 'chunks', 'cd')].sort(),
    );
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
