import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ChunkWorkerPool, type ChunkWorkerPoolOptions } from '../src/internal.js';

const faultyWorker = new URL('./fixtures/faulty-chunk-worker.mjs', import.meta.url);

const pools: ChunkWorkerPool[] = [];
afterEach(async () => {
  vi.useRealTimers();
  for (const pool of pools.splice(0)) await pool.close();
});

/** A pool of the faulty fixture worker; `starts[0]` counts the workers it started, `gates` let calls go on. */
function faultyPool(options: ChunkWorkerPoolOptions & { fixture?: Record<string, unknown> } = {}) {
  const starts = new Int32Array(new SharedArrayBuffer(4));
  const gates = new Int32Array(new SharedArrayBuffer(4 * 8));
  const pool = new ChunkWorkerPool({
    ...options,
    workerPath: faultyWorker,
    workerData: { starts, gates, ...options.fixture },
  });
  pools.push(pool);
  const open = (gate: number) => {
    Atomics.store(gates, gate, 1);
    Atomics.notify(gates, gate);
  };
  /** Resolves once a worker has set `gates[gate]`. */
  const reached = async (gate: number) => {
    // Atomics.waitAsync is in Node 22 and later, not yet in the ES lib this package's TypeScript targets.
    const { waitAsync } = Atomics as unknown as {
      waitAsync(array: Int32Array, index: number, value: number): { async: boolean; value: unknown };
    };
    const wait = waitAsync(gates, gate, 0);
    if (wait.async) await wait.value;
  };
  return { pool, starts, open, reached };
}

const bytes = (text: string) => new TextEncoder().encode(text);
const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest();

/** Settles every promise; the rejections, in order, and the count of those that resolved. */
async function settle(promises: Promise<unknown>[]) {
  const results = await Promise.allSettled(promises);
  return {
    resolved: results.filter((r) => r.status === 'fulfilled').length,
    errors: results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : [])),
  };
}

describe('ChunkWorkerPool failure paths', () => {
  it.each([
    ['exits (process.exit)', 'EXIT:0:3', { code: 'WORKER_CRASHED', retryable: true, exitCode: 3 }],
    ['throws an uncaught exception', 'THROW:0', { code: 'WORKER_CRASHED', retryable: true }],
  ])('a worker that %s fails only its own calls and is replaced', async (_name, command, expected) => {
    const { pool, starts, open } = faultyPool({ size: 2 });
    // Worker 0 gets the fatal call and one behind it; worker 1 holds two calls until its gate opens.
    const onDying = [pool.hash(bytes(command))];
    const onOther = [pool.hash(bytes('HOLD:1'))];
    onDying.push(pool.hash(bytes('queued behind the fatal call')));
    onOther.push(pool.hash(bytes('queued on the healthy worker')));
    open(0);
    const dying = await settle(onDying);
    expect(dying.resolved).toBe(0);
    expect(dying.errors).toHaveLength(2);
    for (const error of dying.errors) expect(error).toMatchObject({ ...expected, operation: 'hash' });
    // A call after the crash goes to the replacement, while worker 1 still holds its calls.
    const after = bytes('after the crash');
    expect(Buffer.compare(await pool.hash(after), sha256(after))).toBe(0);
    expect(pool.size).toBe(2);
    open(1);
    const other = await settle(onOther);
    expect(other).toEqual({ resolved: 2, errors: [] });
    expect(Atomics.load(starts, 0)).toBe(3);
  });

  it('stops replacing workers that die at startup, after maxConsecutiveCrashes deaths in a row', async () => {
    const { pool, starts } = faultyPool({ size: 1, maxConsecutiveCrashes: 3, fixture: { exitAtStart: 7 } });
    const errors: unknown[] = [];
    // Bounded: each call either dies with its worker or is refused once the pool gave up.
    for (let i = 0; i < 10; i++) {
      const error = await pool.hash(bytes(`call ${i}`)).catch((e: unknown) => e);
      errors.push(error);
      if (String((error as Error).message).includes('stopped replacing')) break;
    }
    const last = errors.at(-1) as Error & { code?: string; retryable?: boolean; exitCode?: number };
    expect(last).toMatchObject({ code: 'WORKER_CRASHED', retryable: false, exitCode: 7 });
    expect(last.message).toMatch(/3 times in a row/);
    for (const error of errors) expect(error).toMatchObject({ code: 'WORKER_CRASHED' });
    expect(Atomics.load(starts, 0)).toBe(3);
    // Refused at once, and nothing is started any more.
    await expect(pool.hash(bytes('later'))).rejects.toMatchObject({
      code: 'WORKER_CRASHED',
      retryable: false,
    });
    expect(Atomics.load(starts, 0)).toBe(3);
  });

  it('a call past callTimeoutMs rejects with TimeoutError; the stuck worker is stopped and replaced', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { pool, starts, reached } = faultyPool({ size: 1, callTimeoutMs: 5000 });
    const stuck = pool.hash(bytes('SPIN:7')).catch((e: unknown) => e);
    const behind = pool.hash(bytes('queued behind the stuck call')).catch((e: unknown) => e);
    await reached(7); // the worker is spinning: only terminate() can stop it
    await vi.advanceTimersByTimeAsync(4999);
    expect(Atomics.load(starts, 0)).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(await stuck).toMatchObject({ code: 'TIMEOUT', retryable: true });
    expect(String(await stuck)).toMatch(/hash call .*5 s/);
    expect(await behind).toMatchObject({ code: 'WORKER_CRASHED', operation: 'hash' });
    const after = bytes('after the timeout');
    expect(Buffer.compare(await pool.hash(after), sha256(after))).toBe(0);
    expect(Atomics.load(starts, 0)).toBe(2);
  });

  it('a completed call resets the count of consecutive deaths', async () => {
    const { pool, starts, open } = faultyPool({ size: 1, maxConsecutiveCrashes: 2 });
    for (let round = 0; round < 3; round++) {
      const gate = round;
      open(gate);
      await expect(pool.hash(bytes(`EXIT:${gate}:5`))).rejects.toMatchObject({ code: 'WORKER_CRASHED' });
      const data = bytes(`round ${round}`);
      expect(Buffer.compare(await pool.hash(data), sha256(data))).toBe(0);
    }
    expect(Atomics.load(starts, 0)).toBe(4);
  });

  it('close() rejects the calls in flight and later calls', async () => {
    const { pool } = faultyPool({ size: 1 });
    const held = pool.hash(bytes('HOLD:0')).catch((e: unknown) => e);
    await pool.close();
    expect(String(await held)).toMatch(/chunk worker pool closed/);
    await expect(pool.hash(bytes('x'))).rejects.toThrow(/chunk worker pool is closed/);
  });
});

describe('ChunkWorkerPool probe and knownHash', () => {
  it('a probe hashes without compressing; a second call with the known hash only compresses', async () => {
    const pool = new ChunkWorkerPool(1);
    pools.push(pool);
    const plain = new TextEncoder().encode('a chunk that compresses well. '.repeat(2000));
    const input = new Uint8Array(plain.byteLength);
    input.set(plain);
    const probed = await pool.encode(input, { probe: true });
    expect(probed.kind).toBe('probed');
    if (probed.kind !== 'probed') return;
    expect(Buffer.from(probed.hash)).toEqual(sha256(plain));
    // The input comes back whole, uncompressed.
    expect(Buffer.from(probed.returned.input!)).toEqual(Buffer.from(plain));

    const encoded = await pool.encode(probed.returned.input!, { knownHash: probed.hash, headroom: 12 });
    expect(encoded.kind).toBe('data');
    if (encoded.kind !== 'data') return;
    expect(Buffer.from(encoded.hash)).toEqual(sha256(plain));
    expect(encoded.codec).toBe(1);
    expect(encoded.payload.byteLength).toBeLessThan(plain.byteLength / 10);
    const decoded = await pool.decode(encoded.payload.slice(), 1, plain.byteLength);
    expect(Buffer.from(decoded.plain)).toEqual(Buffer.from(plain));

    // A probe of zeros, or of bytes equal to the parent's, answers as without it.
    expect((await pool.encode(new Uint8Array(4096), { probe: true })).kind).toBe('zero');
    const again = new Uint8Array(plain);
    expect((await pool.encode(again, { probe: true, parentHash: sha256(plain) })).kind).toBe('unchanged');
  });
});
