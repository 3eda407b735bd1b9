import { describe, expect, it } from 'vitest';
import { RepositoryCorruptError } from '../errors/drkit-error.js';
import { createLocalFolderStore } from './local-folder-store.js';
import { SEALED_BLOB_OVERHEAD, SealedStore } from './sealed-store.js';
import { deriveMasterKey, deriveSubkey, ID_KEY_INFO, SEAL_KEY_INFO, seal, unseal } from './sealing.js';
import type { Store } from './store.js';

/** A store in memory, enough for the sealed store's unit tests. */
function memoryStore(): Store & { blobs: Map<string, Uint8Array> } {
  const blobs = new Map<string, Uint8Array>();
  return {
    kind: 'memory',
    location: 'test',
    blobs,
    async get(key) {
      const blob = blobs.get(key);
      if (blob === undefined) throw Object.assign(new Error(`no ${key}`), { code: 'ENOENT' });
      return blob;
    },
    async put(key, data, options) {
      if (options?.ifAbsent && blobs.has(key)) return false;
      blobs.set(key, new Uint8Array(data));
      return true;
    },
    async has(key) {
      return blobs.has(key);
    },
    async size(key) {
      return blobs.get(key)?.byteLength;
    },
    async *list(prefix) {
      for (const [key, blob] of blobs) {
        if (key.startsWith(prefix)) yield { key, size: blob.byteLength, modifiedAt: new Date(0) };
      }
    },
    async delete(key) {
      blobs.delete(key);
    },
  };
}

describe('sealing primitives', () => {
  const key = new Uint8Array(32).fill(7);
  it('derives distinct subkeys and a deterministic master key', async () => {
    expect(Buffer.from(deriveSubkey(key, SEAL_KEY_INFO))).not.toEqual(
      Buffer.from(deriveSubkey(key, ID_KEY_INFO)),
    );
    const salt = new Uint8Array(16);
    const a = await deriveMasterKey('pass', salt, { N: 1024, r: 8, p: 1 });
    const b = await deriveMasterKey('pass', salt, { N: 1024, r: 8, p: 1 });
    expect(Buffer.from(a)).toEqual(Buffer.from(b));
    // NFC: the same passphrase typed with a combining accent gives the same key.
    const composed = await deriveMasterKey('caf\u00e9', salt, { N: 1024, r: 8, p: 1 });
    const decomposed = await deriveMasterKey('cafe\u0301', salt, { N: 1024, r: 8, p: 1 });
    expect(Buffer.from(composed)).toEqual(Buffer.from(decomposed));
  });

  it('seals into a buffer of its own, with headroom, and refuses another key or other associated data', () => {
    const plain = new Uint8Array(100).fill(3);
    const aad = Buffer.from('aad');
    const sealed = seal(key, plain, aad, 5);
    expect(sealed.byteOffset).toBe(0);
    expect(sealed.buffer.byteLength).toBe(5 + 12 + 100 + 16);
    const opened = unseal(key, sealed.subarray(5), aad, 'blob x');
    expect(Buffer.from(opened)).toEqual(Buffer.from(plain));
    expect(opened.byteOffset === 0 && opened.buffer.byteLength === 100).toBe(true);
    expect(() => unseal(new Uint8Array(32), sealed.subarray(5), aad, 'blob x')).toThrow(/blob x/);
    expect(() => unseal(key, sealed.subarray(5), Buffer.from('other'), 'blob x')).toThrow(
      /does not authenticate/,
    );
    expect(() => unseal(key, sealed.subarray(5, 20), aad, 'blob x')).toThrow(/too short/);
  });
});

describe('SealedStore', () => {
  const sealKey = new Uint8Array(32).fill(9);

  it('seals every blob but config and keys, binds each to its key, and names the blob on every flipped bit', async () => {
    const inner = memoryStore();
    const store = new SealedStore(inner, sealKey);
    const plain = Buffer.from('{"hostName":"host one"}\n');
    await store.put('points/x.json', plain);
    await store.put('config', plain);
    await store.put('keys/0123', plain);
    const raw = inner.blobs.get('points/x.json')!;
    expect(Buffer.from(raw.subarray(0, 5)).toString('latin1')).toBe('DRKE\x01');
    expect(raw.byteLength).toBe(plain.byteLength + SEALED_BLOB_OVERHEAD);
    expect(Buffer.from(raw).includes(plain)).toBe(false);
    expect(Buffer.from(inner.blobs.get('config')!)).toEqual(plain);
    expect(Buffer.from(inner.blobs.get('keys/0123')!)).toEqual(plain);
    expect(Buffer.from(await store.get('points/x.json'))).toEqual(plain);
    expect(await store.size!('points/x.json')).toBe(plain.byteLength);
    const listed = [];
    for await (const entry of store.list('points/')) listed.push([entry.key, entry.size]);
    expect(listed).toEqual([['points/x.json', plain.byteLength]]);

    for (let bit = 0; bit < raw.byteLength * 8; bit += 5) {
      const flipped = new Uint8Array(raw);
      flipped[bit >> 3]! ^= 1 << (bit & 7);
      inner.blobs.set('points/x.json', flipped);
      const error = await store.get('points/x.json').catch((e: unknown) => e);
      expect(RepositoryCorruptError.isInstance(error), `bit ${bit}`).toBe(true);
      expect((error as Error).message).toContain('points/x.json');
    }
    // The same sealed bytes under another key do not open.
    inner.blobs.set('points/y.json', raw);
    await expect(store.get('points/y.json')).rejects.toThrow(
      /points\/y\.json in the memory store test is damaged: it does not authenticate/,
    );
    // Nor under another data key.
    inner.blobs.set('points/x.json', raw);
    await expect(new SealedStore(inner, new Uint8Array(32)).get('points/x.json')).rejects.toThrow(
      /does not authenticate/,
    );
  });

  it('seals into buffers it recycles once the inner store has written them, never after a failed write', async () => {
    const given: Uint8Array[] = [];
    const inner = memoryStore();
    const innerPut = inner.put.bind(inner);
    let fail = false;
    inner.put = async (key, data, options) => {
      given.push(data);
      if (fail) throw new Error('the store is unreachable');
      return innerPut(key, data, options);
    };
    const store = new SealedStore(inner, sealKey);
    const first = new Uint8Array(256 * 1024).fill(0x5a);
    const second = new Uint8Array(200 * 1024).fill(0x6b);
    expect(await store.put('chunks/5a/one', first)).toBe(true);
    expect(await store.put('chunks/6b/two', second)).toBe(true);
    // The second blob was sealed into the first one's buffer, and neither stored blob changed.
    expect(given[1]!.buffer).toBe(given[0]!.buffer);
    expect(given[1]!.byteLength).toBe(second.byteLength + SEALED_BLOB_OVERHEAD);
    expect(Buffer.from(await store.get('chunks/5a/one'))).toEqual(Buffer.from(first));
    expect(Buffer.from(await store.get('chunks/6b/two'))).toEqual(Buffer.from(second));
    fail = true;
    await expect(store.put('chunks/5a/three', first)).rejects.toThrow('the store is unreachable');
    fail = false;
    // After a failure a client may still hold the body (an aborted upload): that buffer is never reused.
    expect(await store.put('chunks/5a/four', first)).toBe(true);
    expect(given[3]!.buffer).not.toBe(given[2]!.buffer);
    expect(Buffer.from(await store.get('chunks/5a/four'))).toEqual(Buffer.from(first));
    // Two puts in flight at once seal into two buffers.
    const both = [store.put('chunks/5a/five', first), store.put('chunks/6b/six', second)];
    await Promise.all(both);
    expect(given[5]!.buffer).not.toBe(given[4]!.buffer);
    expect(Buffer.from(await store.get('chunks/6b/six'))).toEqual(Buffer.from(second));
  });

  it('reports a blob emptied by a crash as empty, and keeps the stores durability', async () => {
    const inner = memoryStore();
    const store = new SealedStore(inner, sealKey);
    inner.blobs.set('chunks/ab/x', new Uint8Array(0));
    expect(await store.size!('chunks/ab/x')).toBe(0);
    expect(store.sync).toBeUndefined();
    const local = new SealedStore(createLocalFolderStore({ path: '/nonexistent-drkit-test' }), sealKey);
    expect(typeof local.sync).toBe('function');
  });
});
