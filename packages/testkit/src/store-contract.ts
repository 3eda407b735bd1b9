import { randomBytes } from 'node:crypto';
import {
  type CallOptions,
  InvalidArgumentError,
  NotFoundError,
  type Store,
  type StoreEntry,
} from '@drkit/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

/** What a store can do beyond the contract every store must meet, declared up front so that tests skip honestly. */
export interface StoreContractCapabilities {
  /**
   * Calls reject with `signal.reason` when the signal aborts while they run, not only when it was aborted before
   * the call. Default true.
   */
  readonly abortInFlight?: boolean;
  /** Size of the blob the atomicity test overwrites while reading it. Default 8 MiB. */
  readonly largeBlobBytes?: number;
  /** Number of writers in the create-only race. Default 16. */
  readonly racingWriters?: number;
  /** Number of keys of the long-listing test, more than one S3 page (1 000). Default 1 100. */
  readonly manyKeys?: number;
}

/** A fresh, empty store for one test, and how to remove it. */
export interface StoreContractFixture {
  readonly store: Store;
  /** Removes everything the fixture created. Called after every test, also a failed one. */
  cleanup(): Promise<void>;
  /**
   * Another store object on the same blobs (another client: its own connections, no shared state), for the
   * read-after-write test. Optional: without it that test reads through a second reference to `store`.
   */
  readonly secondClient?: () => Store;
}

/** Options of {@link describeStoreContract}. */
export interface StoreContractOptions {
  /** Names the suite (`local folder`, `s3 (minio)`). */
  readonly name: string;
  /** Creates an empty store; called before every test. */
  readonly createStore: () => Promise<StoreContractFixture>;
  /** What the store can do; see {@link StoreContractCapabilities}. */
  readonly capabilities?: StoreContractCapabilities;
  /** Timeout of each test in ms (default 30 000; raise it for a remote store). */
  readonly timeoutMs?: number;
}

const text = (value: string): Uint8Array => new TextEncoder().encode(value);

async function collect(store: Store, prefix: string, options?: CallOptions): Promise<StoreEntry[]> {
  const entries: StoreEntry[] = [];
  for await (const entry of store.list(prefix, options)) entries.push(entry);
  return entries;
}

async function keys(store: Store, prefix: string): Promise<string[]> {
  return (await collect(store, prefix)).map((entry) => entry.key);
}

async function rejection(action: () => Promise<unknown>): Promise<unknown> {
  try {
    await action();
  } catch (error) {
    return error;
  }
  throw new Error('expected the call to reject');
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return (
    Buffer.compare(
      Buffer.from(a.buffer, a.byteOffset, a.byteLength),
      Buffer.from(b.buffer, b.byteOffset, b.byteLength),
    ) === 0
  );
}

/**
 * Whether every byte is `value`. Compares with memcmp against a buffer of that byte, not in a JavaScript loop: the
 * atomicity test checks megabytes on every read, and a byte loop made it slow on a busy machine.
 */
function uniform(bytes: Uint8Array, value: number): boolean {
  return same(bytes, new Uint8Array(bytes.byteLength).fill(value));
}

/**
 * The contract every drkit `Store` (from `@drkit/core`) must pass, as vitest tests: put/get/has round trips, lexicographic
 * listing with prefixes and nested keys, idempotent delete, `NotFoundError`, create-only puts of which exactly
 * one of many racing writers wins, atomic overwrites (a reader never sees part of a blob), `durable: false` puts
 * read back at once and `sync` of present, missing and deleted keys (from a generator) changing no blob, aborts
 * that reject with `signal.reason`, key validation, listings longer than one S3 page (1 000 keys), and
 * read-after-write, create-only and delete seen at once from a second client. Call it at the top level of a test
 * file.
 *
 * @example
 * ```ts
 * import { createLocalFolderStore } from '@drkit/core';
 * import { describeStoreContract } from '@drkit/testkit';
 *
 * describeStoreContract({
 *   name: 'local folder',
 *   async createStore() {
 *     const path = await mkdtemp(join(tmpdir(), 'store-'));
 *     return { store: createLocalFolderStore({ path }), cleanup: () => rm(path, { recursive: true }) };
 *   },
 * });
 * ```
 */
export function describeStoreContract(options: StoreContractOptions): void {
  const capabilities = options.capabilities ?? {};
  const abortInFlight = capabilities.abortInFlight ?? true;
  const largeBlobBytes = capabilities.largeBlobBytes ?? 8 * 1024 * 1024;
  const racingWriters = capabilities.racingWriters ?? 16;
  const manyKeys = capabilities.manyKeys ?? 1100;
  const timeout = options.timeoutMs ?? 30_000;

  describe(`store contract: ${options.name}`, () => {
    let fixture: StoreContractFixture | undefined;
    const store = (): Store => {
      if (fixture === undefined) throw new Error('the store fixture was not created');
      return fixture.store;
    };
    beforeEach(async () => {
      fixture = await options.createStore();
    }, timeout);
    afterEach(async () => {
      await fixture?.cleanup();
      fixture = undefined;
    }, timeout);

    it('describes itself', () => {
      expect(typeof store().kind).toBe('string');
      expect(store().kind).not.toBe('');
      expect(typeof store().location).toBe('string');
    });

    it('puts and gets binary blobs, including an empty one, and overwrites', { timeout }, async () => {
      const all = new Uint8Array(256).map((_, i) => i);
      expect(await store().put('blob/binary', all)).toBe(true);
      expect(same(await store().get('blob/binary'), all)).toBe(true);
      expect(await store().put('blob/empty', new Uint8Array(0))).toBe(true);
      expect((await store().get('blob/empty')).byteLength).toBe(0);
      expect(await store().put('blob/binary', text('replaced'))).toBe(true);
      expect(new TextDecoder().decode(await store().get('blob/binary'))).toBe('replaced');
    });

    it('says whether a key exists', { timeout }, async () => {
      expect(await store().has('a/b')).toBe(false);
      await store().put('a/b', text('x'));
      expect(await store().has('a/b')).toBe(true);
      expect(await store().has('a')).toBe(false);
      expect(await store().has('a/b/c')).toBe(false);
    });

    it('tells the size of a blob without reading it, and undefined for a missing key or a folder (when the store has size)', {
      timeout,
    }, async () => {
      const size = store().size?.bind(store());
      if (size === undefined) return;
      expect(await size('sized/b')).toBeUndefined();
      await store().put('sized/b', text('twelve bytes'));
      await store().put('sized/empty', new Uint8Array(0));
      expect(await size('sized/b')).toBe(12);
      expect(await size('sized/empty')).toBe(0);
      expect(await size('sized')).toBeUndefined();
      expect(await size('sized/b/c')).toBeUndefined();
    });

    it('is done with the bytes of a put when it resolves: reusing them changes nothing stored', {
      timeout,
    }, async () => {
      // Callers recycle their buffers once a put resolves (the engine's chunk buffers, an encrypted repository's
      // sealing buffers): a store that kept a reference would serve the later contents.
      const plain = new Uint8Array(64 * 1024).fill(0x41);
      await store().put('handed/plain', plain, { durable: false });
      plain.fill(0x42);
      const created = new Uint8Array(64 * 1024).fill(0x43);
      await store().put('handed/created', created, { ifAbsent: true });
      created.fill(0x44);
      const stored = async (key: string) => Buffer.from(await store().get(key));
      expect((await stored('handed/plain')).equals(Buffer.alloc(64 * 1024, 0x41))).toBe(true);
      expect((await stored('handed/created')).equals(Buffer.alloc(64 * 1024, 0x43))).toBe(true);
    });

    it('throws NotFoundError for a missing key', { timeout }, async () => {
      const error = await rejection(() => store().get('missing/key'));
      expect(NotFoundError.isInstance(error)).toBe(true);
    });

    it('lists in lexicographic key order, with sizes and times', { timeout }, async () => {
      const written = ['b', 'a/x', 'a-b', 'a/y/z', 'a.c', 'ab', 'c/d/e/f', 'a/y/a'];
      const started = Date.now();
      for (const key of written) await store().put(key, text(key.repeat(3)));
      const entries = await collect(store(), '');
      expect(entries.map((entry) => entry.key)).toEqual(
        [...written].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y))),
      );
      expect(entries.map((entry) => entry.key)).toEqual([
        'a-b',
        'a.c',
        'a/x',
        'a/y/a',
        'a/y/z',
        'ab',
        'b',
        'c/d/e/f',
      ]);
      for (const entry of entries) {
        expect(entry.size).toBe(entry.key.length * 3);
        expect(entry.modifiedAt).toBeInstanceOf(Date);
        expect(Math.abs(entry.modifiedAt.getTime() - started)).toBeLessThan(60 * 60 * 1000);
      }
    });

    it('lists by prefix: whole folders, partial names, nothing', { timeout }, async () => {
      for (const key of ['chunks/ab/ab01', 'chunks/ab/ab02', 'chunks/ac/ac01', 'chunksx', 'points/p.json']) {
        await store().put(key, text(key));
      }
      expect(await keys(store(), 'chunks/')).toEqual(['chunks/ab/ab01', 'chunks/ab/ab02', 'chunks/ac/ac01']);
      expect(await keys(store(), 'chunks/ab/')).toEqual(['chunks/ab/ab01', 'chunks/ab/ab02']);
      expect(await keys(store(), 'chunks/a')).toEqual(['chunks/ab/ab01', 'chunks/ab/ab02', 'chunks/ac/ac01']);
      expect(await keys(store(), 'chunks/ab/ab0')).toEqual(['chunks/ab/ab01', 'chunks/ab/ab02']);
      expect(await keys(store(), 'chunks')).toEqual([
        'chunks/ab/ab01',
        'chunks/ab/ab02',
        'chunks/ac/ac01',
        'chunksx',
      ]);
      expect(await keys(store(), 'chunks/zz/')).toEqual([]);
      expect(await keys(store(), 'nothing')).toEqual([]);
    });

    it('deletes idempotently', { timeout }, async () => {
      await store().put('d/one', text('1'));
      await store().put('d/two', text('2'));
      await store().delete('d/one');
      await store().delete('d/one');
      await store().delete('d/never');
      expect(await store().has('d/one')).toBe(false);
      expect(NotFoundError.isInstance(await rejection(() => store().get('d/one')))).toBe(true);
      expect(await keys(store(), 'd/')).toEqual(['d/two']);
    });

    it('writes create-only with ifAbsent, leaving an existing blob unchanged', { timeout }, async () => {
      expect(await store().put('once', text('first'), { ifAbsent: true })).toBe(true);
      expect(await store().put('once', text('second'), { ifAbsent: true })).toBe(false);
      expect(new TextDecoder().decode(await store().get('once'))).toBe('first');
      await store().delete('once');
      expect(await store().put('once', text('third'), { ifAbsent: true })).toBe(true);
      expect(new TextDecoder().decode(await store().get('once'))).toBe('third');
    });

    // Durability itself cannot be observed from outside a store (it needs a crash: core's crash tests put a
    // fault-injecting file system under the local folder store); what can be checked is that the calls a backup
    // relies on for it keep their meaning: a `durable: false` put is read back at once like any other, a
    // create-only put of a present key and `sync` leave every blob as it was, and `sync` skips keys that do not
    // exist and takes its keys from a generator.
    it('syncs present, missing and deleted keys without changing any blob (when the store has sync)', {
      timeout,
    }, async () => {
      await store().put('durable/a/one', text('one'));
      await store().put('durable/b/two', text('two'), { ifAbsent: true });
      expect(await store().put('durable/b/two', text('other'), { ifAbsent: true })).toBe(false);
      await store().put('durable/a/gone', text('gone'));
      await store().delete('durable/a/gone');
      await store().sync?.(['durable/a/one', 'durable/b/two', 'durable/c/missing', 'durable/a/gone']);
      await store().sync?.([]);
      expect(await keys(store(), 'durable/')).toEqual(['durable/a/one', 'durable/b/two']);
      expect(new TextDecoder().decode(await store().get('durable/b/two'))).toBe('two');
      expect(await store().has('durable/c/missing')).toBe(false);
    });

    it('reads a blob put with durable: false at once, and syncs it from a generator of keys', {
      timeout,
    }, async () => {
      const chunks = Array.from({ length: 20 }, (_, i) => `lazy/${String(i % 4)}/chunk-${i}`);
      for (const key of chunks) {
        expect(await store().put(key, text(key), { ifAbsent: true, durable: false })).toBe(true);
      }
      expect(await store().put(chunks[0]!, text('other'), { ifAbsent: true, durable: false })).toBe(false);
      expect(await store().put('lazy/overwritten', text('first'), { durable: false })).toBe(true);
      expect(await store().put('lazy/overwritten', text('second'), { durable: false })).toBe(true);
      let read = 0;
      await store().sync?.(
        (function* generate() {
          for (const key of chunks) {
            read++;
            yield key;
          }
        })(),
      );
      if (store().sync !== undefined) expect(read).toBe(chunks.length);
      for (const key of chunks) expect(new TextDecoder().decode(await store().get(key))).toBe(key);
      expect(new TextDecoder().decode(await store().get('lazy/overwritten'))).toBe('second');
      expect(await keys(store(), 'lazy/')).toHaveLength(chunks.length + 1);
    });

    it(`lets exactly one of ${racingWriters} racing create-only writers win`, { timeout }, async () => {
      for (let round = 0; round < 3; round++) {
        const key = `race/${round}`;
        const contents = Array.from({ length: racingWriters }, (_, i) =>
          text(`writer ${i} ${'x'.repeat(1000 * i)}`),
        );
        const results = await Promise.all(
          contents.map((content) => store().put(key, content, { ifAbsent: true })),
        );
        const winners = results.flatMap((won, i) => (won ? [i] : []));
        expect(winners).toHaveLength(1);
        expect(same(await store().get(key), contents[winners[0]!]!)).toBe(true);
        expect(await keys(store(), 'race/')).toHaveLength(round + 1);
      }
    });

    it('never shows a reader part of a blob while it is overwritten', { timeout }, async () => {
      const a = new Uint8Array(largeBlobBytes).fill(0xaa);
      const b = new Uint8Array(largeBlobBytes).fill(0xbb);
      await store().put('atomic', a);
      let writing = true;
      let reads = 0;
      const writer = (async () => {
        try {
          for (let i = 0; i < 6; i++) await store().put('atomic', i % 2 === 0 ? b : a);
        } finally {
          writing = false;
        }
      })();
      const readers = [0, 1].map(async () => {
        while (writing) {
          const seen = await store().get('atomic');
          reads++;
          expect(seen.byteLength).toBe(largeBlobBytes);
          expect(uniform(seen, seen[0]!) && (seen[0] === 0xaa || seen[0] === 0xbb)).toBe(true);
        }
      });
      await Promise.all([writer, ...readers]);
      expect(reads).toBeGreaterThan(0);
      expect(same(await store().get('atomic'), a)).toBe(true);
      expect(await keys(store(), 'atomic')).toEqual(['atomic']);
    });

    it('rejects every call with signal.reason once the signal has aborted, and writes nothing', {
      timeout,
    }, async () => {
      await store().put('present', text('x'));
      const reason = new Error('stop: contract test');
      const signal = AbortSignal.abort(reason);
      expect(await rejection(() => store().get('present', { signal }))).toBe(reason);
      expect(await rejection(() => store().put('written', text('x'), { signal }))).toBe(reason);
      expect(await rejection(() => store().put('written', text('x'), { signal, ifAbsent: true }))).toBe(
        reason,
      );
      expect(await rejection(() => store().has('present', { signal }))).toBe(reason);
      expect(await rejection(() => store().delete('present', { signal }))).toBe(reason);
      expect(await rejection(() => collect(store(), '', { signal }))).toBe(reason);
      if (store().sync !== undefined) {
        expect(await rejection(() => store().sync!(['present'], { signal }))).toBe(reason);
      }
      expect(await rejection(() => store().put('written', text('x'), { signal, durable: false }))).toBe(
        reason,
      );
      expect(await store().has('written')).toBe(false);
      expect(await store().has('present')).toBe(true);
    });

    it.skipIf(!abortInFlight)(
      'rejects a large put aborted mid-flight with signal.reason; the blob is then whole or absent',
      { timeout },
      async () => {
        const big = new Uint8Array(largeBlobBytes * 4).fill(0x5a);
        const controller = new AbortController();
        const reason = new Error('stop: mid-flight');
        const pending = store().put('inflight', big, { signal: controller.signal });
        // Aborted once the call has started, before any of its I/O can complete (that needs a turn of the event
        // loop): always mid-flight. A timer, however short, could fire after a fast store had finished.
        controller.abort(reason);
        expect(await rejection(() => pending)).toBe(reason);
        if (await store().has('inflight')) {
          const stored = await store().get('inflight');
          expect(stored.byteLength).toBe(big.byteLength);
          expect(uniform(stored, 0x5a)).toBe(true);
        }
        // Nothing but the key (or nothing) is listed: no temporary blob is visible.
        expect((await keys(store(), '')).filter((key) => key !== 'inflight')).toEqual([]);
      },
    );

    it('keeps keys with nested folders apart', { timeout }, async () => {
      const keyList = ['x/1/2/3/4/5', 'x/1/2/3/4/6', 'x/1/7', 'x/8'];
      for (const key of keyList) await store().put(key, text(key));
      for (const key of keyList) expect(new TextDecoder().decode(await store().get(key))).toBe(key);
      expect(await keys(store(), 'x/1/2/')).toEqual(['x/1/2/3/4/5', 'x/1/2/3/4/6']);
      await store().delete('x/1/2/3/4/5');
      expect(await keys(store(), 'x/')).toEqual(['x/1/2/3/4/6', 'x/1/7', 'x/8']);
    });

    it('refuses invalid keys with InvalidArgumentError', { timeout }, async () => {
      const invalid = ['', '/absolute', 'a//b', 'a/../b', '..', 'a/./b', 'trailing/', 'back\\slash'];
      for (const key of invalid) {
        const error = await rejection(() => store().put(key, text('x')));
        expect(InvalidArgumentError.isInstance(error), JSON.stringify(key)).toBe(true);
        expect(
          InvalidArgumentError.isInstance(await rejection(() => store().get(key))),
          JSON.stringify(key),
        ).toBe(true);
      }
      expect(await keys(store(), '')).toEqual([]);
    });

    it('stores many keys and lists every one exactly once', { timeout }, async () => {
      const names = Array.from({ length: 300 }, () => randomBytes(32).toString('hex'));
      await Promise.all(names.map((name) => store().put(`many/${name.slice(0, 2)}/${name}`, text(name))));
      const listed = await keys(store(), 'many/');
      expect(listed).toEqual(names.map((name) => `many/${name.slice(0, 2)}/${name}`).sort());
    });

    it(`lists ${manyKeys} keys (more than one S3 page of 1 000) in order, each exactly once`, {
      timeout,
    }, async () => {
      const names = Array.from({ length: manyKeys }, (_, i) => `long/${String(i).padStart(5, '0')}`);
      const pending = [...names];
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          for (let key = pending.pop(); key !== undefined; key = pending.pop())
            await store().put(key, text(key));
        }),
      );
      expect(await keys(store(), 'long/')).toEqual(names);
      expect(await keys(store(), 'long/010')).toEqual(names.filter((name) => name.startsWith('long/010')));
    });

    it('shows a write, a create-only write and a delete to a second client at once', {
      timeout,
    }, async () => {
      const other = fixture?.secondClient?.() ?? store();
      await store().put('raw/one', text('first'));
      expect(new TextDecoder().decode(await other.get('raw/one'))).toBe('first');
      await store().put('raw/one', text('second'));
      expect(new TextDecoder().decode(await other.get('raw/one'))).toBe('second');
      expect(await store().put('raw/once', text('mine'), { ifAbsent: true })).toBe(true);
      expect(await other.put('raw/once', text('theirs'), { ifAbsent: true })).toBe(false);
      expect(await other.has('raw/once')).toBe(true);
      await store().delete('raw/one');
      expect(await other.has('raw/one')).toBe(false);
      expect(await keys(other, 'raw/')).toEqual(['raw/once']);
    });
  });
}
