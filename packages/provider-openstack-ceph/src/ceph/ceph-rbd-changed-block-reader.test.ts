// The reader's handling of broken export-diff streams, with a fake rbd (the real cluster covers the rest in
// test/integration/): what a killed, failing or lying rbd gives, and that nothing is left behind.
import { mkdtempSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Disk, InvalidArgumentError, SourceProtocolError } from '@drkit/core';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type ExportDiffRecord, encodeExportDiff } from '../../test/export-diff-encoder.js';
import { createFakeRbdFolder, rbdTempFolders } from '../../test/fake-rbd.js';
import { createCephRbdPlatform } from './ceph-rbd-platform.js';

const privateTmp = mkdtempSync(join(tmpdir(), 'drkit-reader-test-'));
process.env.TMPDIR = privateTmp;
afterAll(() => rmSync(privateTmp, { recursive: true, force: true }));

const KEY = 'AQC5VglrRa/WHRAATEludz7fZlhA4ZKBxD9SHw==';
const SIZE = 3 * 1024 * 1024;
let fake: Awaited<ReturnType<typeof createFakeRbdFolder>>;

beforeEach(async () => {
  fake = await createFakeRbdFolder();
});
afterEach(async () => {
  await fake.remove();
  expect(await rbdTempFolders()).toEqual([]);
});

const disk: Disk = {
  id: 'fake/volumes/img',
  hostId: 'fake/volumes/img',
  name: 'img',
  capacityBytes: SIZE,
  attributes: { 'ceph.cluster': 'fake', 'ceph.pool': 'volumes', 'ceph.image': 'img' },
};
const snapshot = { hostId: disk.hostId, name: 'drkit-2' };

/**
 * A platform whose rbd answers `info` with an image of SIZE bytes and `export-diff` with `stream`, then runs
 * `after` (e.g. `exit 5`, `kill -9 $$`).
 */
async function platformWith(
  stream: Uint8Array,
  after = 'exit 0',
  info = `{"id":"abc123","size":${SIZE},"features":["layering","exclusive-lock","object-map","fast-diff"],"flags":[]}`,
) {
  const streamFile = join(fake.dir, 'stream.bin');
  await writeFile(streamFile, stream);
  const rbdPath = await fake.script(
    'rbd',
    [
      'for arg in "$@"; do',
      `  if [ "$arg" = info ]; then echo '${info}'; exit 0; fi`,
      `  if [ "$arg" = export-diff ]; then cat '${streamFile}'; ${after}; fi`,
      'done',
      'exit 22',
    ].join('\n'),
  );
  return createCephRbdPlatform({
    clusters: [
      {
        name: 'fake',
        monitors: '192.0.2.1',
        cephx: { user: 'backup', keyring: KEY },
        pool: 'volumes',
        incrementalMode: 'exact',
      },
    ],
    rbdPath,
  });
}

function fullStream(records: ExportDiffRecord[] = []): Uint8Array {
  return encodeExportDiff([
    { tag: 't', name: snapshot.name },
    { tag: 's', size: SIZE },
    { tag: 'w', offset: 0, data: new Uint8Array(2 * 1024 * 1024).fill(7) },
    { tag: 'z', offset: 2 * 1024 * 1024, length: 4096 },
    ...records,
    { tag: 'e' },
  ]);
}

async function readAll(platform: Awaited<ReturnType<typeof platformWith>>, signal?: AbortSignal) {
  await using session = await platform.changedBlockReader.open({ disk, snapshot, chunkSize: 1024 * 1024 });
  const changes: [string, number, number][] = [];
  for await (const change of session.changes(signal ? { signal } : {})) {
    changes.push([change.kind, change.offset, change.kind === 'data' ? change.data.length : change.length]);
  }
  return { changes, session };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (error: unknown) => error,
  );
}

// Each test starts fake rbd processes (sh scripts) for info and export-diff: fast alone, much slower when 2 cores
// are busy, so 30 s each rather than vitest's 5 s. Nothing is timed.
describe('the Ceph RBD reader on broken streams (fake rbd)', { timeout: 30_000 }, () => {
  it('reads a whole stream in chunk-sized pieces', async () => {
    const { changes, session } = await readAll(await platformWith(fullStream()));
    expect(session.validity).toEqual({ kind: 'full', reason: 'first-backup' });
    expect(session.capacityBytes).toBe(SIZE);
    expect(changes).toEqual([
      ['data', 0, 1024 * 1024],
      ['data', 1024 * 1024, 1024 * 1024],
      ['zero', 2 * 1024 * 1024, 4096],
    ]);
    const checkpoint = session.checkpoint();
    expect(checkpoint).toMatchObject({ diskId: disk.id, capacityBytes: SIZE, snapshotName: 'drkit-2' });
    expect(JSON.parse(checkpoint.token)).toEqual({
      format: 'drkit-ceph-rbd',
      version: 1,
      cluster: 'fake',
      pool: 'volumes',
      image: 'img',
      imageId: 'abc123',
      snapshot: 'drkit-2',
    });
  });

  it('a truncated stream with a clean exit is a SourceProtocolError naming the byte', async () => {
    const stream = fullStream().subarray(0, 1_500_000);
    const error = await rejection(readAll(await platformWith(stream)));
    expect(SourceProtocolError.isInstance(error), String(error)).toBe(true);
    expect((error as Error).message).toMatch(/truncated at byte 1500000/);
  });

  it('an rbd killed in the middle of the stream is a retryable SourceProtocolError', async () => {
    const error = await rejection(
      readAll(await platformWith(fullStream().subarray(0, 1_000_000), 'kill -9 $$')),
    );
    expect(SourceProtocolError.isInstance(error), String(error)).toBe(true);
    expect((error as Error).message).toMatch(/killed by SIGKILL/);
    expect((error as SourceProtocolError).retryable).toBe(true);
  });

  it('an rbd that fails in the middle of the stream reports its own error, not the short stream', async () => {
    const after = 'echo "rbd: export-diff error: (5) Input/output error" >&2; exit 5';
    const error = await rejection(readAll(await platformWith(fullStream().subarray(0, 1_000_000), after)));
    expect(SourceProtocolError.isInstance(error), String(error)).toBe(true);
    expect((error as Error).message).toMatch(
      /exit status 5 \(rbd said: rbd: export-diff error: \(5\) Input\/output error/,
    );
  });

  it('a stream of another snapshot or size is a SourceProtocolError', async () => {
    const other = encodeExportDiff([
      { tag: 't', name: 'drkit-other' },
      { tag: 's', size: SIZE },
      { tag: 'e' },
    ]);
    await expect(readAll(await platformWith(other))).rejects.toSatisfy(
      (error: unknown) =>
        SourceProtocolError.isInstance(error) && /reads snapshot "drkit-other"/.test(error.message),
    );
    const bigger = encodeExportDiff([
      { tag: 't', name: 'drkit-2' },
      { tag: 's', size: SIZE + 1 },
      { tag: 'e' },
    ]);
    await expect(readAll(await platformWith(bigger))).rejects.toSatisfy(
      (error: unknown) =>
        SourceProtocolError.isInstance(error) &&
        /declares 3145729 bytes, rbd info reported 3145728/.test(error.message),
    );
  });

  it('an abort in the middle of the stream rejects with the reason and kills rbd', async () => {
    const platform = await platformWith(fullStream(), 'exec sleep 30');
    const controller = new AbortController();
    await using session = await platform.changedBlockReader.open({ disk, snapshot, chunkSize: 1024 * 1024 });
    const reason = new Error('abort in the middle');
    const run = (async () => {
      for await (const change of session.changes({ signal: controller.signal })) {
        if (change.kind === 'zero') controller.abort(reason);
      }
    })();
    await expect(run).rejects.toBe(reason);
  });

  it('refuses a read without a snapshot, or with the base of another disk', async () => {
    const platform = await platformWith(fullStream());
    await expect(platform.changedBlockReader.open({ disk })).rejects.toSatisfy(
      InvalidArgumentError.isInstance,
    );
    const base = { diskId: 'other', token: '{}', capacityBytes: 1, createdAt: new Date().toISOString() };
    await expect(platform.changedBlockReader.open({ disk, snapshot, base })).rejects.toSatisfy(
      InvalidArgumentError.isInstance,
    );
    await expect(
      platform.changedBlockReader.open({ disk, snapshot: { hostId: 'h', name: '--evil' } }),
    ).rejects.toSatisfy(InvalidArgumentError.isInstance);
  });

  it('a base checkpoint it did not write means a full read (tracking-reset)', async () => {
    const platform = await platformWith(fullStream());
    const base = {
      diskId: disk.id,
      token: 'not json',
      capacityBytes: SIZE,
      createdAt: new Date().toISOString(),
    };
    await using session = await platform.changedBlockReader.open({ disk, snapshot, base });
    expect(session.validity).toMatchObject({ kind: 'full', reason: 'tracking-reset' });
  });
});
