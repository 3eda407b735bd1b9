// An in-memory store for the engine's request-count tests: a map of blobs that counts every call it serves, by kind
// and by the key's first folder, with an optional `createOnlyProvesWhole` and an injectable failure.
import {
  NotFoundError,
  type Store,
  type StoreEntry,
  type StorePutOptions,
  UnreachableError,
} from '../src/index.js';

export type Call = 'get' | 'put' | 'has' | 'size' | 'list' | 'delete';

/** A map of blobs that counts every call by kind and by the key's first folder (`chunks`, `points`, …). */
export interface CountingStore extends Store {
  /** Calls of `kind` on keys under `folder/`. */
  count(kind: Call, folder: string): number;
  /** Create-only puts that found the key taken, by `put <folder>`. */
  readonly taken: Map<string, number>;
  reset(): void;
  /** While down, every call throws a retryable `UnreachableError` (a store whose endpoint went away). */
  down: boolean;
  /** Called before each put is served (a test's trigger). */
  beforePut?: (key: string) => void;
}

export function countingStore(createOnlyProvesWhole: boolean): CountingStore {
  const blobs = new Map<string, { data: Uint8Array; modifiedAt: Date }>();
  const counts = new Map<string, number>();
  const taken = new Map<string, number>();
  const bump = (map: Map<string, number>, kind: string, key: string) => {
    if (store.down) throw new UnreachableError(`memory store: ${kind} ${key}: the store is down`);
    const name = `${kind} ${key.split('/')[0]}`;
    map.set(name, (map.get(name) ?? 0) + 1);
  };
  const store: CountingStore = {
    kind: 'memory',
    location: 'memory:',
    ...(createOnlyProvesWhole ? { createOnlyProvesWhole: true as const } : {}),
    count: (kind, folder) => counts.get(`${kind} ${folder}`) ?? 0,
    taken,
    down: false,
    reset() {
      counts.clear();
      taken.clear();
    },
    async get(key) {
      bump(counts, 'get', key);
      const blob = blobs.get(key);
      if (blob === undefined) throw new NotFoundError(`no blob ${key}`);
      return blob.data.slice();
    },
    async put(key: string, data: Uint8Array, options?: StorePutOptions) {
      store.beforePut?.(key);
      bump(counts, 'put', key);
      if (options?.ifAbsent === true && blobs.has(key)) {
        bump(taken, 'put', key);
        return false;
      }
      blobs.set(key, { data: data.slice(), modifiedAt: new Date() });
      return true;
    },
    async has(key) {
      bump(counts, 'has', key);
      return blobs.has(key);
    },
    async size(key) {
      bump(counts, 'size', key);
      return blobs.get(key)?.data.byteLength;
    },
    async *list(prefix): AsyncIterable<StoreEntry> {
      bump(counts, 'list', prefix);
      const keys = [...blobs.keys()].filter((key) => key.startsWith(prefix)).sort();
      for (const key of keys) {
        const blob = blobs.get(key);
        if (blob !== undefined) yield { key, size: blob.data.byteLength, modifiedAt: blob.modifiedAt };
      }
    },
    async delete(key) {
      bump(counts, 'delete', key);
      blobs.delete(key);
    },
  };
  return store;
}
