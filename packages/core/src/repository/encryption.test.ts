import { createHash } from 'node:crypto';
import { readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  ChecksumMismatchError,
  InvalidSettingsError,
  RepositoryCorruptError,
  RepositoryKeyError,
} from '../errors/drkit-error.js';
import { chunkKey } from './chunk-blob.js';
import { createLocalFolderStore } from './local-folder-store.js';
import { indexKey, pointKey } from './point-metadata.js';
import { openRepository } from './repository.js';
import {
  backupImage,
  createRepositoryFixture,
  diskImage,
  type RepositoryFixture,
  rejection,
  TEST_CHUNK_SIZE,
} from './repository-fixture.js';

// Cheap scrypt parameters for the tests (the default, 2^16, costs 64 MiB and ~0.3 s per open).
const FAST = { N: 2 ** 10, r: 8, p: 1 };
const PASSPHRASE = 'correct horse battery staple';

let fixture: RepositoryFixture | undefined;

afterEach(async () => {
  await fixture?.cleanup();
  fixture = undefined;
});

async function encryptedFixture(passphrase = PASSPHRASE): Promise<RepositoryFixture> {
  fixture = await createRepositoryFixture({ encryption: { passphrase, scrypt: FAST } });
  return fixture;
}

/** Every file under the folder, by store key (temporary files of the store left out). */
async function files(folder: string): Promise<Map<string, { size: number; mtimeMs: number }>> {
  const out = new Map<string, { size: number; mtimeMs: number }>();
  for (const entry of await readdir(folder, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    const info = await stat(path);
    out.set(relative(folder, path).split('\\').join('/'), { size: info.size, mtimeMs: info.mtimeMs });
  }
  return out;
}

function sha256(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(bytes).digest());
}

async function restored(f: RepositoryFixture, pointId: string, repository = f.repository): Promise<Buffer> {
  const path = join(f.folder, `../restore-${pointId}-${Math.random()}`);
  try {
    await repository.restore(pointId, { path });
    return await readFile(path);
  } finally {
    await rm(path, { force: true });
  }
}

async function flipByte(path: string, at: number): Promise<void> {
  const bytes = await readFile(path);
  bytes[at]! ^= 0x01;
  await writeFile(path, bytes);
}

describe('encryption at rest', { timeout: 60_000 }, () => {
  it('backs up and restores every point byte for byte, sealing every blob but config and keys', async () => {
    const f = await encryptedFixture();
    expect(f.repository.encrypted).toBe(true);
    const first = diskImage(8, 1000, 1);
    const p1 = await backupImage(f.repository, f.workers, first);
    const second = first.slice();
    second.set(diskImage(1, 0, 7), 3 * TEST_CHUNK_SIZE);
    const p2 = await backupImage(f.repository, f.workers, second, { parentId: p1.id });
    expect(Buffer.compare(await restored(f, p1.id), first)).toBe(0);
    expect(Buffer.compare(await restored(f, p2.id), second)).toBe(0);

    // Another repository object (another process) with the passphrase reads the same points.
    const reader = await f.reopen();
    expect((await reader.points()).map((p) => p.id)).toEqual([p1.id, p2.id]);
    expect(Buffer.compare(await restored(f, p2.id, reader), second)).toBe(0);
    const report = await reader.verify();
    expect(report.ok).toBe(true);
    expect(report.chunksChecked).toBeGreaterThan(0);

    const stored = await files(f.folder);
    const config = JSON.parse(
      (await readFile(join(f.folder, 'config'), 'utf8')).split('\ndrkit-sha256:')[0]!,
    );
    expect(config.features).toEqual(['sealed-aes256gcm']);
    const keyFiles = [...stored.keys()].filter((k) => k.startsWith('keys/'));
    expect(keyFiles).toHaveLength(1);
    const keyText = await readFile(join(f.folder, keyFiles[0]!), 'utf8');
    expect(keyText).toContain('"kdf": "scrypt"');
    expect(keyText).not.toContain(PASSPHRASE);

    // Every other blob is sealed, none shows a plain byte of the disk or of the metadata.
    const plainMarkers = ['chunk 2 seed 1', 'host one', 'disk-1', 'DRKC', 'DRKS', 'DRKM'];
    let sealed = 0;
    for (const key of stored.keys()) {
      if (key === 'config' || key.startsWith('keys/')) continue;
      const bytes = await readFile(join(f.folder, key));
      expect(bytes.subarray(0, 5).toString('latin1'), key).toBe('DRKE\x01');
      for (const marker of plainMarkers) expect(bytes.includes(marker), `${key} holds ${marker}`).toBe(false);
      sealed++;
    }
    expect(sealed).toBeGreaterThan(8);

    // Chunk ids are keyed: no chunk is stored under the SHA-256 of its plain bytes.
    const chunkKeys = [...stored.keys()].filter((k) => k.startsWith('chunks/'));
    const plainIds = new Set<string>();
    for (const image of [first, second]) {
      for (let at = 0; at < image.byteLength; at += TEST_CHUNK_SIZE) {
        const chunk = image.subarray(at, Math.min(at + TEST_CHUNK_SIZE, image.byteLength));
        if (chunk.some((b) => b !== 0)) plainIds.add(chunkKey(sha256(chunk)));
      }
    }
    expect(chunkKeys).toHaveLength(plainIds.size); // one blob per distinct non-zero chunk: dedup still works
    for (const key of chunkKeys) expect(plainIds.has(key)).toBe(false);
  });

  it('a wrong, missing or needless passphrase is a RepositoryKeyError and writes nothing', async () => {
    const f = await encryptedFixture();
    await backupImage(f.repository, f.workers, diskImage(3, 0, 2));
    const before = await files(f.folder);
    const store = createLocalFolderStore({ path: f.folder });

    const wrong = await rejection(openRepository({ store, encryption: { passphrase: 'Tr0ub4dor&3' } }));
    expect(RepositoryKeyError.isInstance(wrong)).toBe(true);
    expect((wrong as Error).message).toContain('does not unlock');
    expect((wrong as Error).message).not.toContain('Tr0ub4dor');
    const wrongCreate = await rejection(
      openRepository({ store, create: true, encryption: { passphrase: 'Tr0ub4dor&3' } }),
    );
    expect(RepositoryKeyError.isInstance(wrongCreate)).toBe(true);
    const missing = await rejection(openRepository({ store }));
    expect(RepositoryKeyError.isInstance(missing)).toBe(true);
    expect((missing as Error).message).toContain('is encrypted');
    const byKey = await rejection(openRepository({ store, encryption: { key: new Uint8Array(32) } }));
    expect(RepositoryKeyError.isInstance(byKey)).toBe(true);
    expect(await files(f.folder)).toEqual(before);

    const plain = await createRepositoryFixture();
    try {
      const needless = await rejection(
        openRepository({ store: plain.store, encryption: { passphrase: PASSPHRASE, scrypt: FAST } }),
      );
      expect(RepositoryKeyError.isInstance(needless)).toBe(true);
      expect((needless as Error).message).toContain('not encrypted');
      expect(plain.repository.encrypted).toBe(false);
      expect(
        RepositoryKeyError.isInstance(
          await rejection(plain.repository.changePassphrase({ passphrase: 'x' })),
        ),
      ).toBe(true);
    } finally {
      await plain.cleanup();
    }
  });

  it('refuses encryption settings that cannot be right', async () => {
    const f = await encryptedFixture();
    const store = createLocalFolderStore({ path: f.folder });
    for (const encryption of [
      { passphrase: '' },
      { key: new Uint8Array(16) },
      { passphrase: 'p', scrypt: { N: 1000, r: 8, p: 1 } },
      { passphrase: 'p', scrypt: { N: 2 ** 24, r: 32, p: 1 } },
    ]) {
      const error = await rejection(openRepository({ store, encryption }));
      expect(InvalidSettingsError.isInstance(error), JSON.stringify(encryption)).toBe(true);
    }
  });

  it('a flipped bit in any blob is a typed error naming it; a blob moved to another key does not open', async () => {
    const f = await encryptedFixture();
    const image = diskImage(4, 0, 3);
    const p1 = await backupImage(f.repository, f.workers, image);
    const p2 = await backupImage(f.repository, f.workers, diskImage(4, 0, 4), { diskId: 'disk-2' });
    const stored = [...(await files(f.folder)).keys()];

    // A chunk: verify marks it damaged; restore refuses it.
    const chunk = stored.find((k) => k.startsWith('chunks/'))!;
    await flipByte(join(f.folder, chunk), 40);
    const reader = await f.reopen();
    const report = await reader.verify();
    expect(report.ok).toBe(false);
    expect(report.damaged.map((d) => `chunks/${d.chunkId.slice(0, 2)}/${d.chunkId}`)).toEqual([chunk]);
    expect(report.damaged[0]!.problem).toBe('unreadable');

    // A segment or manifest: restore is refused with the blob named.
    const manifest = indexKey(p2.id);
    await flipByte(join(f.folder, manifest), 20);
    const fresh = await f.reopen();
    const restoreError = await rejection(fresh.restore(p2.id, { path: join(f.folder, '../r2') }));
    expect(
      RepositoryCorruptError.isInstance(restoreError) || ChecksumMismatchError.isInstance(restoreError),
    ).toBe(true);
    expect((restoreError as Error).message).toContain(manifest);

    // Point metadata: an unreadable point naming its key.
    await flipByte(join(f.folder, pointKey(p1.id)), 30);
    const unreadable = await (await f.reopen()).unreadablePoints();
    expect(unreadable.map((u) => [u.id, u.problem])).toEqual([[p1.id, 'corrupt']]);
    expect(unreadable[0]!.detail).toContain(pointKey(p1.id));

    // Moving a sealed blob to another key: it does not authenticate there.
    await rename(join(f.folder, pointKey(p2.id)), join(f.folder, pointKey(p1.id)));
    const moved = await (await f.reopen()).unreadablePoints();
    expect(moved.map((u) => [u.id, u.problem])).toEqual([[p1.id, 'corrupt']]);

    // The key blob: opening names it.
    const keyBlob = stored.find((k) => k.startsWith('keys/'))!;
    await flipByte(join(f.folder, keyBlob), 60);
    const keyError = await rejection(f.reopen());
    expect(RepositoryCorruptError.isInstance(keyError)).toBe(true);
    expect((keyError as Error).message).toContain(keyBlob);
  });

  it('changePassphrase re-wraps the data key and rewrites nothing else', async () => {
    const f = await encryptedFixture();
    const image = diskImage(6, 123, 5);
    const point = await backupImage(f.repository, f.workers, image);
    const before = await files(f.folder);
    await f.repository.changePassphrase({ passphrase: 'a new passphrase', scrypt: FAST });
    const after = await files(f.folder);
    const changed = [...new Set([...before.keys(), ...after.keys()])].filter(
      (k) => JSON.stringify(before.get(k)) !== JSON.stringify(after.get(k)),
    );
    expect(changed.every((k) => k.startsWith('keys/'))).toBe(true);
    expect(changed).toHaveLength(2); // the old key blob gone, a new one written
    expect([...after.keys()].filter((k) => k.startsWith('keys/'))).toHaveLength(1);

    const old = await rejection(f.reopen());
    expect(RepositoryKeyError.isInstance(old)).toBe(true);
    const renewed = await f.reopen({ encryption: { passphrase: 'a new passphrase' } });
    expect(Buffer.compare(await restored(f, point.id, renewed), image)).toBe(0);
    // The repository object that changed it goes on working, and can change it again.
    expect(Buffer.compare(await restored(f, point.id), image)).toBe(0);
    await f.repository.changePassphrase({ key: new Uint8Array(32).fill(7) });
    const byKey = await f.reopen({ encryption: { key: new Uint8Array(32).fill(7) } });
    expect((await byKey.points()).map((p) => p.id)).toEqual([point.id]);
    const byPassphrase = await rejection(f.reopen({ encryption: { passphrase: 'a new passphrase' } }));
    expect(RepositoryKeyError.isInstance(byPassphrase)).toBe(true);
    expect((byPassphrase as Error).message).toContain('give encryption.key');
  });

  it('two processes creating the same encrypted repository end with one configuration and one key blob', async () => {
    const f = await encryptedFixture();
    const folder = join(f.folder, 'shared');
    const open = () =>
      openRepository({
        store: createLocalFolderStore({ path: folder }),
        create: true,
        encryption: { passphrase: PASSPHRASE, scrypt: FAST },
        workers: f.workers,
      });
    const [a, b] = await Promise.all([open(), open()]);
    try {
      expect(a.id).toBe(b.id);
      const stored = await files(folder);
      expect([...stored.keys()].filter((k) => k.startsWith('keys/'))).toHaveLength(1);
      const point = await backupImage(a, f.workers, diskImage(2, 0, 9));
      expect((await b.points()).map((p) => p.id)).toEqual([point.id]);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('opens with the default scrypt parameters', async () => {
    fixture = await createRepositoryFixture({ encryption: { passphrase: PASSPHRASE } });
    const keyFile = [...(await files(fixture.folder)).keys()].find((k) => k.startsWith('keys/'))!;
    const text = await readFile(join(fixture.folder, keyFile), 'utf8');
    expect(text).toContain('"N": 65536');
    const point = await backupImage(fixture.repository, fixture.workers, diskImage(2, 0, 11));
    const reader = await fixture.reopen();
    expect((await reader.point(point.id)).id).toBe(point.id);
  });
});
