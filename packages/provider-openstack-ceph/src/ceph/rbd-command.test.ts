import { mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AuthenticationError,
  InvalidArgumentError,
  InvalidSettingsError,
  NotFoundError,
  PermissionError,
  SourceProtocolError,
  TimeoutError,
  UnreachableError,
} from '@drkit/core';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createFakeRbdFolder, fakeConnection, rbdTempFolders } from '../../test/fake-rbd.js';
import { openRbdStream, rbdError, runRbd, runRbdJson, scrubSecrets } from './rbd-command.js';

// This file's own temp dir, so that the rbd calls' temp folders can be counted.
const privateTmp = mkdtempSync(join(tmpdir(), 'drkit-rbd-command-test-'));
process.env.TMPDIR = privateTmp;
afterAll(() => rmSync(privateTmp, { recursive: true, force: true }));

const KEY = 'AQC5VglrRa/WHRAATEludz7fZlhA4ZKBxD9SHw==';
let fake: Awaited<ReturnType<typeof createFakeRbdFolder>>;

beforeEach(async () => {
  fake = await createFakeRbdFolder();
});
afterEach(async () => {
  await fake.remove();
  expect(await rbdTempFolders(), 'every rbd call removed its temp folder').toEqual([]);
});

/** The content of `path` once it exists (written atomically by a fake rbd: a file appearing is the event). */
async function whenWritten(path: string): Promise<string> {
  for (;;) {
    const text = await readFile(path, 'utf8').catch(() => undefined);
    if (text !== undefined) return text;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A fake rbd that records its argv, environment, the modes and contents of its conf and keyring. */
async function recordingRbd(): Promise<{ path: string; log: (what: string) => Promise<string> }> {
  const log = join(fake.dir, 'log');
  const path = await fake.script(
    'rbd-recording',
    [
      `log=${log}`,
      'printf "%s\\n" "$@" > "$log.argv"',
      'env > "$log.env"',
      'while [ $# -gt 0 ]; do case "$1" in --keyring) kr=$2 ;; --conf) cf=$2 ;; esac; shift; done',
      'stat -c "%a" "$(dirname "$kr")" "$kr" "$cf" > "$log.modes"',
      'cat "$kr" > "$log.keyring"',
      'cat "$cf" > "$log.conf"',
      'dirname "$kr" > "$log.dir"',
      'echo \'["a", "b"]\'',
    ].join('\n'),
  );
  return { path, log: (what) => readFile(`${log}.${what}`, 'utf8') };
}

// The tests of runRbd and openRbdStream start real processes (sh scripts standing in for rbd), each a few tens of
// milliseconds alone but much more when 2 cores are busy: 30 s each rather than vitest's 5 s. Nothing is timed.
const PROCESS_TEST_TIMEOUT_MS = 30_000;

describe('runRbd', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  it('hands the key over in a 0600 keyring in a private 0700 folder, never in argv or environment', async () => {
    const rbd = await recordingRbd();
    const connection = fakeConnection(rbd.path);
    expect(await runRbdJson(connection, ['ls', 'volumes'])).toEqual(['a', 'b']);
    const argv = await rbd.log('argv');
    expect(argv).not.toContain(KEY);
    expect(await rbd.log('env')).not.toContain(KEY);
    expect((await rbd.log('modes')).split('\n').slice(0, 3)).toEqual(['700', '600', '600']);
    expect(await rbd.log('keyring')).toBe(`[client.backup]\n\tkey = ${KEY}\n`);
    const conf = await rbd.log('conf');
    expect(conf).toContain('mon host = 192.0.2.1:6789');
    expect(conf).toContain('auth client required = cephx');
    expect(conf).toContain('ms bind ipv6 = false');
    expect(conf).not.toContain(KEY);
    const args = argv.trim().split('\n');
    for (const option of ['--client-mount-timeout', '--rados-mon-op-timeout', '--rados-osd-op-timeout']) {
      expect(args[args.indexOf(option) + 1], option).toBe('7');
    }
    expect(args.slice(args.indexOf('--id'), args.indexOf('--id') + 2)).toEqual(['--id', 'backup']);
    expect(args.slice(-4)).toEqual(['ls', 'volumes', '--format', 'json']);
    // The folder is gone after the call.
    const folder = (await rbd.log('dir')).trim();
    await expect(readFile(join(folder, 'keyring'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('without CephX writes an empty keyring and asks for no authentication; IPv6 monitors bind IPv6', async () => {
    const rbd = await recordingRbd();
    await runRbd(fakeConnection(rbd.path, { auth: false, monHost: '[fd00::1]:6789', ipv6: true }), [
      'ls',
      'x',
    ]);
    expect(await rbd.log('keyring')).toBe('');
    const conf = await rbd.log('conf');
    expect(conf).toContain('auth client required = none');
    expect(conf).toContain('ms bind ipv6 = true');
    expect(await rbd.log('argv')).not.toContain('--id');
  });

  it('scrubs the key from rbd messages', async () => {
    const path = await fake.script(
      'rbd-leaky',
      `echo "rbd: bad key ${KEY} and AQBBY9hfBc0+AxAAzyym+6l+MeTpMlgNTbye/A==" >&2\nexit 22`,
    );
    const error = await runRbd(fakeConnection(path), ['info', 'volumes/x']).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(InvalidArgumentError.isInstance(error), String(error)).toBe(true);
    const text = `${(error as Error).message} ${JSON.stringify(error)}`;
    expect(text).not.toContain(KEY);
    expect(text).not.toContain('AQBBY9hf');
    expect(text).toContain('rbd said: rbd: bad key [key] and [key]');
  });

  it('kills a process that hangs past the hard timeout (TimeoutError)', async () => {
    // A real process and a real 300 ms timer. The TimeoutError says the timer killed it (`sleep 30` would have
    // ended by itself 30 s later, successfully); how long that took on this machine is not asserted.
    const path = await fake.script('rbd-hang', 'exec sleep 30');
    const timers = vi.spyOn(globalThis, 'setTimeout');
    try {
      await expect(runRbd(fakeConnection(path), ['ls', 'volumes'], { hardTimeoutMs: 300 })).rejects.toSatisfy(
        (error: unknown) =>
          TimeoutError.isInstance(error) && /made no progress for 0\.3 s and was killed/.test(error.message),
      );
      expect(timers).toHaveBeenCalledWith(expect.any(Function), 300);
    } finally {
      timers.mockRestore();
    }
  });

  it('an abort kills the process and rejects with the reason', async () => {
    // The fake rbd says it runs (its PID, in a file that appears at once) before the test aborts: the abort
    // always meets a running process, whatever the machine's speed.
    const started = join(fake.dir, 'started');
    const path = await fake.script(
      'rbd-hang',
      `echo $$ > '${started}.tmp'; mv '${started}.tmp' '${started}'\nexec sleep 30`,
    );
    const controller = new AbortController();
    const reason = new Error('aborted by the test');
    const outcome = runRbd(fakeConnection(path), ['ls'], { signal: controller.signal }).catch(
      (e: unknown) => e,
    );
    const pid = Number(await whenWritten(started));
    controller.abort(reason);
    expect(await outcome).toBe(reason);
    expect(() => process.kill(pid, 0), 'the rbd process is gone').toThrow(/ESRCH/);
    await expect(runRbd(fakeConnection(path), ['ls'], { signal: AbortSignal.abort(reason) })).rejects.toBe(
      reason,
    );
  });

  it('a missing rbd command is an InvalidSettingsError naming rbdPath', async () => {
    await expect(runRbd(fakeConnection(join(fake.dir, 'nope')), ['ls'])).rejects.toSatisfy(
      (error: unknown) =>
        InvalidSettingsError.isInstance(error) &&
        error.field === 'rbdPath' &&
        /ceph-common/.test(error.message),
    );
  });

  it('output that is not JSON is a SourceProtocolError', async () => {
    const path = await fake.script('rbd-text', 'echo "not json"');
    await expect(runRbdJson(fakeConnection(path), ['ls'])).rejects.toSatisfy(SourceProtocolError.isInstance);
  });
});

describe('openRbdStream', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  it('streams stdout and reports a clean exit', async () => {
    const path = await fake.script('rbd-stream', 'head -c 300000 /dev/zero');
    const stream = await openRbdStream(fakeConnection(path), ['export-diff', 'x', '-']);
    let total = 0;
    for await (const chunk of stream.chunks()) total += chunk.length;
    await stream.wait();
    await stream.close();
    expect(total).toBe(300000);
  });

  it('stopping early kills the process and removes the temp folder', async () => {
    const path = await fake.script('rbd-endless', 'exec cat /dev/zero');
    const stream = await openRbdStream(fakeConnection(path), ['export-diff', 'x', '-']);
    for await (const _chunk of stream.chunks()) break;
    await stream.close();
    await stream.close();
    expect(stream.ended).toBe(true);
  });

  it('a child killed by a signal is a retryable SourceProtocolError', async () => {
    const path = await fake.script('rbd-killed', 'head -c 1000 /dev/zero\nkill -9 $$');
    const stream = await openRbdStream(fakeConnection(path), ['export-diff', 'x', '-']);
    for await (const _chunk of stream.chunks());
    await expect(stream.wait()).rejects.toSatisfy(
      (error: unknown) =>
        SourceProtocolError.isInstance(error) && error.retryable && /killed by SIGKILL/.test(error.message),
    );
    await stream.close();
  });

  it('a stream that stays silent past the hard timeout is killed (TimeoutError)', async () => {
    const path = await fake.script('rbd-silent', 'exec sleep 30');
    const stream = await openRbdStream(fakeConnection(path), ['export-diff', 'x', '-'], {
      hardTimeoutMs: 300,
    });
    try {
      await expect(
        (async () => {
          for await (const _chunk of stream.chunks());
        })(),
      ).rejects.toSatisfy(TimeoutError.isInstance);
    } finally {
      await stream.close();
    }
  });

  it('an abort while waiting for data rejects with the reason', async () => {
    const path = await fake.script('rbd-silent', 'exec sleep 30');
    const controller = new AbortController();
    const stream = await openRbdStream(fakeConnection(path), ['export-diff', 'x', '-']);
    setTimeout(() => controller.abort('stop'), 100);
    try {
      await expect(
        (async () => {
          for await (const _chunk of stream.chunks({ signal: controller.signal }));
        })(),
      ).rejects.toBe('stop');
    } finally {
      await stream.close();
    }
  });
});

describe('rbdError', () => {
  const connection = fakeConnection('rbd');
  const exit = (code: number, stderr: string) => ({ code, signal: null, stderr, timedOut: false });
  const connect = "rbd: couldn't connect to the cluster!\n";
  it.each([
    [
      13,
      `2026-11-27T10:09:43.345+0000 7fe6374ed6c0 -1 monclient(hunting): handle_auth_bad_method\n${connect}rbd: listing images failed: (13) Permission denied`,
      AuthenticationError,
      /refused client\.backup/,
    ],
    [
      1,
      `${connect}rbd: listing images failed: (1) Operation not permitted`,
      AuthenticationError,
      /refused client\.backup/,
    ],
    [
      110,
      `monclient(hunting): authenticate timed out after 7\n${connect}rbd: listing images failed: (110) Connection timed out`,
      UnreachableError,
      /no monitor of Ceph cluster fake \(192\.0\.2\.1:6789\) answered within 7 s/,
    ],
    [110, 'rbd: export-diff error: (110) Connection timed out', UnreachableError, /timed out after 7 s/],
    [
      1,
      'rbd: error opening image a1: (1) Operation not permitted',
      PermissionError,
      /grant it mon 'profile rbd' osd 'profile rbd pool=volumes'/,
    ],
    [
      2,
      'rbd: error opening image nope: (2) No such file or directory',
      NotFoundError,
      /does not exist \(rbd said: rbd: error opening image nope/,
    ],
    [16, "rbd: snapshot 's1' is protected from removal.", PermissionError, /the snapshot is protected/],
    [17, 'rbd: failed to create snapshot: (17) File exists', InvalidArgumentError, /already exists/],
    [
      5,
      'rbd: export-diff error: (5) Input/output error',
      SourceProtocolError,
      /failed with exit status 5 \(rbd said: rbd: export-diff error: \(5\) Input\/output error\)/,
    ],
  ])('exit %i maps to the right error', (code, stderr, type, message) => {
    const error = rbdError(connection, ['ls', 'volumes'], exit(code, stderr));
    expect(type.isInstance(error), `${error.name}: ${error.message}`).toBe(true);
    expect(error.message).toMatch(message);
  });

  it('names the timeout and the signal', () => {
    expect(
      rbdError(connection, ['ls'], { code: null, signal: 'SIGKILL', stderr: '', timedOut: true }),
    ).toSatisfy(TimeoutError.isInstance);
    const killed = rbdError(connection, ['ls'], {
      code: null,
      signal: 'SIGSEGV',
      stderr: '',
      timedOut: false,
    });
    expect(killed.message).toMatch(/killed by SIGSEGV/);
    expect(killed.retryable).toBe(true);
  });

  it('scrubSecrets removes the connection key and anything shaped like a key', () => {
    expect(scrubSecrets(`a ${KEY} b AQBBY9hfBc0+AxAAzyym+6l+MeTpMlgNTbye/A== c`, connection)).toBe(
      'a [key] b [key] c',
    );
  });
});
