// The reader's handling of broken export-diff streams, with a fake rbd (the real cluster covers the rest in
// test/integration/): what a killed, failing or lying rbd gives, and that nothing is left behind.
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type Checkpoint,
  type Disk,
  type HostSnapshot,
  InvalidArgumentError,
  type Logger,
  SourceProtocolError,
  TimeoutError,
} from '@drkit/core';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
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
const snapshot: HostSnapshot = {
  hostId: disk.hostId,
  name: 'drkit-2',
  disks: [{ diskId: disk.id, ref: 'fake/volumes/img@drkit-2' }],
  consistency: 'disk',
};
const diskSnapshot = snapshot.disks[0]!;
const CHUNK = 1024 * 1024;

const INFO = `{"id":"abc123","size":${SIZE},"features":["layering","exclusive-lock","object-map","fast-diff"],"flags":[]}`;

/**
 * A platform whose rbd answers `info` with an image of SIZE bytes (after running `beforeInfo`) and `export-diff`
 * with `stream`, then runs `after` (e.g. `exit 5`, `kill -9 $$`). Every call's argv is appended to `calls.log`,
 * one line each.
 */
async function platformWith(stream: Uint8Array, after = 'exit 0', info = INFO, beforeInfo = '') {
  const streamFile = join(fake.dir, 'stream.bin');
  await writeFile(streamFile, stream);
  const rbdPath = await fake.script(
    'rbd',
    [
      `echo "$*" >> '${join(fake.dir, 'calls.log')}'`,
      'for arg in "$@"; do',
      `  if [ "$arg" = info ]; then ${beforeInfo} echo '${info}'; exit 0; fi`,
      `  if [ "$arg" = export-diff ]; then cat '${streamFile}'; ${after}; fi`,
      'done',
      'exit 22',
    ].join('\n'),
  );
  return createCephRbdPlatform({
    id: 'fake-platform',
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

/** The argv of every rbd call so far, one string each. */
async function calls(): Promise<string[]> {
  const text = await readFile(join(fake.dir, 'calls.log'), 'utf8').catch(() => '');
  return text.split('\n').filter((line) => line !== '');
}

async function readAll(
  platform: Awaited<ReturnType<typeof platformWith>>,
  signal?: AbortSignal,
  base?: Checkpoint,
) {
  await using session = await platform.changedBlockReader.open({
    disk,
    snapshot,
    diskSnapshot,
    chunkSize: CHUNK,
    ...(base ? { base } : {}),
  });
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
    await using session = await platform.changedBlockReader.open({
      disk,
      snapshot,
      diskSnapshot,
      chunkSize: CHUNK,
    });
    const reason = new Error('abort in the middle');
    const run = (async () => {
      for await (const change of session.changes({ signal: controller.signal })) {
        if (change.kind === 'zero') controller.abort(reason);
      }
    })();
    await expect(run).rejects.toBe(reason);
  });

  it('refuses a read without a snapshot, or with the snapshot of another image or disk', async () => {
    const platform = await platformWith(fullStream());
    const reader = platform.changedBlockReader;
    await expect(reader.open({ disk, chunkSize: CHUNK })).rejects.toSatisfy(InvalidArgumentError.isInstance);
    const evil: HostSnapshot = { ...snapshot, name: '--evil', disks: [] };
    await expect(reader.open({ disk, snapshot: evil, chunkSize: CHUNK })).rejects.toSatisfy(
      InvalidArgumentError.isInstance,
    );
    for (const ref of ['fake/volumes/other@drkit-2', 'fake/volumes/img', 'fake/volumes/img@--evil', 'x']) {
      await expect(
        reader.open({ disk, snapshot, diskSnapshot: { diskId: disk.id, ref }, chunkSize: CHUNK }),
        ref,
      ).rejects.toSatisfy(InvalidArgumentError.isInstance);
    }
    await expect(
      reader.open({
        disk,
        snapshot,
        diskSnapshot: { diskId: 'other', ref: diskSnapshot.ref },
        chunkSize: CHUNK,
      }),
    ).rejects.toSatisfy(InvalidArgumentError.isInstance);
    // Nothing was run for any of them.
    expect(await calls()).toEqual([]);
  });

  it('declares a stream reader of 512-byte blocks, one read at a time; its sessions are stream sessions', async () => {
    const platform = await platformWith(fullStream());
    const reader = platform.changedBlockReader;
    expect([reader.mode, reader.blockSize, reader.maxConcurrentReads]).toEqual(['stream', 512, 1]);
    await using session = await reader.open({ disk, snapshot, diskSnapshot, chunkSize: CHUNK });
    expect(session.mode).toBe('stream');
    expect(session.readRange).toBeUndefined();
    expect(session.snapshotName).toBe('drkit-2');
  });

  it('reads the snapshot the disk snapshot names (snapshot.name only without one)', async () => {
    const platform = await platformWith(fullStream());
    await using session = await platform.changedBlockReader.open({ disk, snapshot, chunkSize: CHUNK });
    expect(session.snapshotName).toBe('drkit-2');
    expect((await calls()).some((line) => line.endsWith('info volumes/img@drkit-2 --format json'))).toBe(
      true,
    );
  });

  it.each([
    ['not JSON', 'not json', /its token is not JSON/],
    [
      "another provider's",
      JSON.stringify({ format: 'drkit-vmware', version: 1, changeId: '52 d0 ...' }),
      /of format "drkit-vmware", not drkit-ceph-rbd/,
    ],
    [
      'another version',
      JSON.stringify({ format: 'drkit-ceph-rbd', version: 2, snapshot: 'drkit-1' }),
      /version 1 \(its token is of version 2\)/,
    ],
    [
      'one missing a field',
      JSON.stringify({
        format: 'drkit-ceph-rbd',
        version: 1,
        cluster: 'fake',
        pool: 'volumes',
        image: 'img',
      }),
      /format drkit-ceph-rbd version 1 with cluster, pool, image, imageId and snapshot/,
    ],
    [
      'one naming an unusable snapshot',
      JSON.stringify({
        format: 'drkit-ceph-rbd',
        version: 1,
        cluster: 'fake',
        pool: 'volumes',
        image: 'img',
        imageId: 'abc123',
        snapshot: '--from-snap',
      }),
      /drkit's Ceph RBD reader/,
    ],
  ])(
    'a base checkpoint it did not write (%s) means a full read: checkpoint-invalid, not a throw',
    async (_what, token, detail) => {
      const platform = await platformWith(fullStream());
      const base = { diskId: disk.id, token, capacityBytes: SIZE, createdAt: new Date().toISOString() };
      const { changes, session } = await readAll(platform, undefined, base);
      expect(session.validity).toMatchObject({ kind: 'full', reason: 'checkpoint-invalid' });
      expect(session.validity.kind === 'full' && session.validity.detail).toMatch(detail);
      expect(session.fromSnapshotName).toBeUndefined();
      // The whole image, from a plain export-diff (no --from-snap): the bytes a full read gives.
      expect(changes).toEqual([
        ['data', 0, CHUNK],
        ['data', CHUNK, CHUNK],
        ['zero', 2 * CHUNK, 4096],
      ]);
      const exports = (await calls()).filter((line) => line.includes('export-diff'));
      expect(exports).toHaveLength(1);
      expect(exports[0]).not.toContain('--from-snap');
    },
  );

  it("another disk's checkpoint means a full read (checkpoint-invalid), even when its token is this image's", async () => {
    const platform = await platformWith(fullStream());
    const token = JSON.stringify({
      format: 'drkit-ceph-rbd',
      version: 1,
      cluster: 'fake',
      pool: 'volumes',
      image: 'img',
      imageId: 'abc123',
      snapshot: 'drkit-1',
    });
    const base = {
      diskId: 'fake/volumes/other',
      token,
      capacityBytes: SIZE,
      createdAt: new Date().toISOString(),
    };
    const { changes, session } = await readAll(platform, undefined, base);
    expect(session.validity).toEqual({
      kind: 'full',
      reason: 'checkpoint-invalid',
      detail: `the base checkpoint belongs to disk "fake/volumes/other", not ${disk.id}: reading volumes/img in full`,
    });
    expect(session.fromSnapshotName).toBeUndefined();
    expect(changes).toEqual([
      ['data', 0, CHUNK],
      ['data', CHUNK, CHUNK],
      ['zero', 2 * CHUNK, 4096],
    ]);
    // Neither the base snapshot of the token was looked at, nor a diff from it started.
    expect((await calls()).filter((line) => line.includes('drkit-1'))).toEqual([]);
  });

  it('commit and abandon only record the outcome: the first counts, a second call or one after close is harmless', async () => {
    const platform = await platformWith(fullStream());
    const point = (session: { checkpoint(): Checkpoint }) => ({
      pointId: 'p1',
      checkpoint: session.checkpoint(),
    });
    const committed = await platform.changedBlockReader.open({
      disk,
      snapshot,
      diskSnapshot,
      chunkSize: CHUNK,
    });
    for await (const _change of committed.changes());
    expect(committed.outcome).toBeUndefined();
    await committed.commit(point(committed));
    expect(committed.outcome).toBe('committed');
    await committed.commit(point(committed));
    await committed.abandon({ kind: 'failed', error: new Error('late') });
    expect(committed.outcome).toBe('committed');
    await committed.close();
    await committed.abandon({ kind: 'cancelled', error: 'after close' });
    await committed.commit(point(committed));
    expect(committed.outcome).toBe('committed');

    const abandoned = await platform.changedBlockReader.open({
      disk,
      snapshot,
      diskSnapshot,
      chunkSize: CHUNK,
    });
    await abandoned.abandon({ kind: 'failed', error: new Error('the repository failed') });
    await abandoned.commit(point(abandoned));
    expect(abandoned.outcome).toBe('abandoned');
    await abandoned.close();
    await abandoned.close();

    // Closed with neither: abandoned.
    const looked = await platform.changedBlockReader.open({ disk, snapshot, diskSnapshot, chunkSize: CHUNK });
    await looked.close();
    expect(looked.outcome).toBe('abandoned');
    await looked.commit(point(looked));
    expect(looked.outcome).toBe('abandoned');
    // Outcomes ran no rbd command: only the two info and one export-diff per session.
    expect((await calls()).filter((line) => / snap /.test(line))).toEqual([]);
  });

  it("requestTimeoutSeconds replaces the cluster's timeoutSeconds for every rbd command of the session", async () => {
    const platform = await platformWith(fullStream());
    const { changes } = await readAll(platform);
    expect(changes).toHaveLength(3);
    const timeouts = (line: string) =>
      ['--client-mount-timeout', '--rados-mon-op-timeout', '--rados-osd-op-timeout'].map((option) => {
        const args = line.split(' ');
        return args[args.indexOf(option) + 1];
      });
    // Without it: the cluster's own (the default 30 s).
    for (const line of await calls()) expect(timeouts(line)).toEqual(['30', '30', '30']);

    await fake.remove();
    fake = await createFakeRbdFolder();
    const bounded = await platformWith(fullStream());
    await using session = await bounded.changedBlockReader.open({
      disk,
      snapshot,
      diskSnapshot,
      chunkSize: CHUNK,
      requestTimeoutSeconds: 8.5,
    });
    for await (const _change of session.changes());
    const lines = await calls();
    expect(lines.filter((line) => / info /.test(line))).toHaveLength(1);
    expect(lines.filter((line) => / export-diff /.test(line))).toHaveLength(1);
    for (const line of lines) expect(timeouts(line), line).toEqual(['9', '9', '9']);
  });

  it('an rbd command unanswered for requestTimeoutSeconds is killed: TimeoutError', async () => {
    // A real process and a real 300 ms timer: `rbd info` hangs (`sleep 30`); the TimeoutError says the timer
    // killed it. How long that took is not asserted.
    const platform = await platformWith(fullStream(), 'exit 0', INFO, 'exec sleep 30;');
    const timers = vi.spyOn(globalThis, 'setTimeout');
    try {
      await expect(
        platform.changedBlockReader.open({
          disk,
          snapshot,
          diskSnapshot,
          chunkSize: CHUNK,
          requestTimeoutSeconds: 0.3,
        }),
      ).rejects.toSatisfy(
        (error: unknown) =>
          TimeoutError.isInstance(error) && /made no progress for 0\.3 s and was killed/.test(error.message),
      );
      expect(timers).toHaveBeenCalledWith(expect.any(Function), 300);
    } finally {
      timers.mockRestore();
    }
    await expect(
      platform.changedBlockReader.open({ disk, snapshot, chunkSize: CHUNK, requestTimeoutSeconds: 0 }),
    ).rejects.toSatisfy(InvalidArgumentError.isInstance);
  });

  it('open honours its deadline: a deadline already past rejects with a TimeoutError', async () => {
    const platform = await platformWith(fullStream());
    await expect(
      platform.changedBlockReader.open({
        disk,
        snapshot,
        diskSnapshot,
        chunkSize: CHUNK,
        deadline: Date.now() - 1,
      }),
    ).rejects.toSatisfy(TimeoutError.isInstance);
  });

  it('logs each rbd command at debug level with its argv, never the key or the keyring', async () => {
    const lines: string[] = [];
    const record = (level: string) => (fields: Readonly<Record<string, unknown>>, message: string) => {
      lines.push(`${level} ${message} ${JSON.stringify(fields)}`);
    };
    const logger: Logger = {
      debug: record('debug'),
      info: record('info'),
      warn: record('warn'),
      error: record('error'),
    };
    const platform = await platformWith(fullStream());
    await using session = await platform.changedBlockReader.open({
      disk,
      snapshot,
      diskSnapshot,
      chunkSize: CHUNK,
      logger,
    });
    for await (const _change of session.changes());
    const text = lines.join('\n');
    expect(text).toContain('"argv":["rbd","info","volumes/img@drkit-2","--format","json"]');
    expect(text).toContain('"argv":["rbd","export-diff","--no-progress","volumes/img@drkit-2","-"]');
    expect(text).toContain('"user":"client.backup"');
    expect(text).toMatch(/rbd command ended .*"exitCode":0/);
    expect(text).toContain('ceph rbd read opened');
    expect(lines.every((line) => line.startsWith('debug '))).toBe(true);
    expect(text).not.toContain(KEY);
    expect(text).not.toContain('keyring');
    expect(text).not.toContain('--conf');
  });
});
