import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openRepository, type Repository } from '../src/index.js';
import { ChunkWorkerPool } from '../src/internal.js';
import {
  backupImage,
  createRepositoryFixture,
  diskImage,
  type RepositoryFixture,
  TEST_CHUNK_SIZE,
} from '../src/repository/repository-fixture.js';

const faultyWorker = new URL('./fixtures/faulty-chunk-worker.mjs', import.meta.url);

let fixture: RepositoryFixture;
let faulty: ChunkWorkerPool;
let repository: Repository;

beforeEach(async () => {
  fixture = await createRepositoryFixture();
  // 4 chunks: random, zeros, text, random: 3 chunks to decode.
  await backupImage(fixture.repository, fixture.workers, diskImage(4, 0, 21));
});
afterEach(async () => {
  await repository.close();
  await faulty.close();
  await fixture.cleanup();
});

/** The same repository, read through a pool whose decode calls fail the way `fault` says, `times` times. */
async function openWithFaultyWorkers(fault: 'throw' | 'exit', times?: number): Promise<Repository> {
  const budget = times === undefined ? undefined : new Int32Array(new SharedArrayBuffer(4)).fill(times);
  faulty = new ChunkWorkerPool({
    size: 1,
    workerPath: faultyWorker,
    workerData: { faults: { decode: fault }, budget },
  });
  repository = await openRepository({ store: fixture.store, workers: faulty });
  return repository;
}

describe('verify when a chunk worker fails', () => {
  it.each(['throw', 'exit'] as const)(
    'a worker that dies once (%s) is not chunk damage: the chunk is decoded again on the replacement',
    async (fault) => {
      const report = await (await openWithFaultyWorkers(fault, 1)).verify();
      expect(report).toMatchObject({ ok: true, damaged: [], chunksChecked: 3 });
      expect(report.bytesChecked).toBe(3 * TEST_CHUNK_SIZE);
      expect(await fixture.repository.damagedChunks()).toEqual(new Set());
    },
  );

  it('workers that keep dying fail verify with WorkerCrashedError and mark nothing damaged', async () => {
    const error = await (await openWithFaultyWorkers('throw')).verify().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toMatchObject({ code: 'WORKER_CRASHED' });
    expect(await fixture.repository.damagedChunks()).toEqual(new Set());
  });
});
