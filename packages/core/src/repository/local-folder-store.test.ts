import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InvalidArgumentError, InvalidSettingsError, NotFoundError } from '../errors/drkit-error.js';
import { createLocalFolderStore } from './local-folder-store.js';
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
