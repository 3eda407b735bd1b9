import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import {
  AuthenticationError,
  type DrkitError,
  InvalidArgumentError,
  InvalidSettingsError,
  type Logger,
  NotFoundError,
  PermissionError,
  SourceProtocolError,
  TimeoutError,
  UnreachableError,
} from '@drkit/core';
import { keyringText } from './ceph-key.js';

/**
 * How to reach one Ceph cluster with the `rbd` command: everything a call needs to write its private ceph.conf
 * and keyring. Holds the key: never log it or put it in an error.
 *
 * @internal
 */
export interface RbdConnection {
  /** The name of the cluster in the platform's options, for messages. */
  readonly name: string;
  /** Ceph's cluster name (`ceph`). */
  readonly cluster: string;
  /** The `mon host` value of ceph.conf. */
  readonly monHost: string;
  /** Whether the monitors are IPv6 (`ms bind ipv6`). */
  readonly ipv6: boolean;
  /** CephX user (without `client.`) and key, or `false` when the cluster runs without authentication. */
  readonly auth: { readonly user: string; readonly key: string } | false;
  /** The pool the user's caps should name, for permission messages. */
  readonly pool: string;
  /** Mount, monitor-operation and OSD-operation timeout, in seconds. */
  readonly timeoutSeconds: number;
  /** The rbd executable. */
  readonly rbdPath: string;
}

/** Options of one rbd call. @internal */
export interface RbdCallOptions {
  readonly signal?: AbortSignal | undefined;
  /**
   * How long the call may go unanswered, in seconds (a read session's `requestTimeoutSeconds`, the Sync Proxy's
   * HTTP communication timeout). When given it replaces the connection's `timeoutSeconds`: Ceph's
   * `--client-mount-timeout`, `--rados-mon-op-timeout` and `--rados-osd-op-timeout` are set to it (rounded up to
   * whole seconds), and the process is killed with a `TimeoutError` once it went unanswered that long (see
   * `hardTimeoutMs`).
   */
  readonly requestTimeoutSeconds?: number | undefined;
  /**
   * Kills the process after this many milliseconds (non-streaming calls), or after this long without output
   * while the reader waits for some (streams). Default: `requestTimeoutSeconds` when given, else three times the
   * connection's timeout plus 5 s.
   */
  readonly hardTimeoutMs?: number;
  /**
   * Told at debug level of each command (its operation's argv, never the conf, keyring or key) and of how it
   * ended (exit code, milliseconds).
   */
  readonly logger?: Logger | undefined;
}

/** How an rbd process ended. @internal */
export interface RbdExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stderr: string;
  /** The hard timer killed it. */
  readonly timedOut: boolean;
}

/** Environment variables that would make the rbd command read settings or keys we did not give it. */
const IGNORED_ENVIRONMENT = ['CEPH_ARGS', 'CEPH_CONF', 'CEPH_KEYRING', 'CEPH_CLIENT_ID', 'CEPH_CLUSTER'];
/** How much of stderr is kept (its end), for error messages. */
const STDERR_LIMIT = 64 * 1024;
/** Anything shaped like a CephX secret. */
const KEY_PATTERN = /AQ[A-Za-z0-9+/]{36,}={0,2}/g;

/** Removes the connection's key and anything shaped like a Ceph key from a text. @internal */
export function scrubSecrets(text: string, connection: Pick<RbdConnection, 'auth'>): string {
  let out = text;
  if (connection.auth && connection.auth.key.length > 0) out = out.split(connection.auth.key).join('[key]');
  return out.replace(KEY_PATTERN, '[key]');
}

/** The ceph.conf a call writes for itself: monitors, authentication and nothing that writes outside its dir. */
function confText(connection: RbdConnection, keyringPath: string): string {
  const auth = connection.auth ? 'cephx' : 'none';
  const lines = [
    '[global]',
    `mon host = ${connection.monHost}`,
    `auth client required = ${auth}`,
    `auth cluster required = ${auth}`,
    `auth service required = ${auth}`,
    `ms bind ipv6 = ${connection.ipv6 ? 'true' : 'false'}`,
    'log file = ',
    'log to file = false',
    'admin socket = ',
    `keyring = ${keyringPath}`,
  ];
  return `${lines.join('\n')}\n`;
}

/** A private 0700 folder with the call's ceph.conf and 0600 keyring; `remove()` deletes it. */
async function prepareFiles(
  connection: RbdConnection,
): Promise<{ args: string[]; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'drkit-rbd-'));
  const remove = () => rm(dir, { recursive: true, force: true });
  try {
    const conf = join(dir, 'ceph.conf');
    const keyring = join(dir, 'keyring');
    // Without CephX the keyring is empty: rbd then does not look for one under /etc/ceph.
    const keyringContent = connection.auth ? keyringText(connection.auth.user, connection.auth.key) : '';
    await writeFile(keyring, keyringContent, { mode: 0o600, flag: 'wx' });
    await writeFile(conf, confText(connection, keyring), { mode: 0o600, flag: 'wx' });
    const timeout = String(connection.timeoutSeconds);
    const args = ['--conf', conf, '--cluster', connection.cluster];
    if (connection.auth) args.push('--id', connection.auth.user);
    args.push('--keyring', keyring);
    args.push(
      '--client-mount-timeout',
      timeout,
      '--rados-mon-op-timeout',
      timeout,
      '--rados-osd-op-timeout',
      timeout,
    );
    return { args, remove };
  } catch (error) {
    await remove();
    throw error;
  }
}

function childEnvironment(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of IGNORED_ENVIRONMENT) delete env[name];
  return env;
}

function defaultHardTimeoutMs(connection: RbdConnection): number {
  return (connection.timeoutSeconds * 3 + 5) * 1000;
}

/**
 * The connection and the hard timeout one call uses: `requestTimeoutSeconds`, when given, replaces the
 * connection's own timeout (Ceph's timeouts and the kill timer); else the connection's timeout with the kill timer
 * at three times it plus 5 s. `hardTimeoutMs` wins over both.
 */
function callLimits(
  connection: RbdConnection,
  options: RbdCallOptions,
): { connection: RbdConnection; hardTimeoutMs: number } {
  const request = options.requestTimeoutSeconds;
  if (request === undefined) {
    return { connection, hardTimeoutMs: options.hardTimeoutMs ?? defaultHardTimeoutMs(connection) };
  }
  if (typeof request !== 'number' || !Number.isFinite(request) || request <= 0) {
    throw new InvalidArgumentError(
      `requestTimeoutSeconds must be a number of seconds above 0, got ${String(request)}`,
    );
  }
  return {
    connection: { ...connection, timeoutSeconds: Math.max(1, Math.ceil(request)) },
    hardTimeoutMs: options.hardTimeoutMs ?? Math.round(request * 1000),
  };
}

/** Logs the start of an rbd command: the cluster, the user and the operation's argv (no conf, keyring or key). */
function logStart(logger: Logger | undefined, connection: RbdConnection, args: readonly string[]): number {
  logger?.debug(
    {
      cluster: connection.name,
      user: connection.auth ? `client.${connection.auth.user}` : undefined,
      argv: ['rbd', ...args],
    },
    'rbd command started',
  );
  return performance.now();
}

/** Logs how an rbd command ended: exit code or signal, milliseconds. Never its output. */
function logEnd(
  logger: Logger | undefined,
  connection: RbdConnection,
  args: readonly string[],
  started: number,
  exit: Pick<RbdExit, 'code' | 'signal' | 'timedOut'> | undefined,
): void {
  logger?.debug(
    {
      cluster: connection.name,
      argv: ['rbd', ...args],
      exitCode: exit?.code ?? null,
      signal: exit?.signal ?? null,
      timedOut: exit?.timedOut ?? false,
      ms: Math.round(performance.now() - started),
    },
    'rbd command ended',
  );
}

/** One running rbd process with its stderr collected and its end awaited. */
class RbdProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<RbdExit>;
  #stderr = '';
  #timedOut = false;
  #killed = false;

  constructor(connection: RbdConnection, args: readonly string[]) {
    this.child = spawn(connection.rbdPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: childEnvironment(),
    });
    this.child.stderr?.setEncoding('utf8');
    this.child.stderr?.on('data', (text: string) => {
      this.#stderr = (this.#stderr + text).slice(-STDERR_LIMIT);
    });
    this.exited = new Promise<RbdExit>((resolve, reject) => {
      this.child.once('error', (error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT' || error.code === 'EACCES') {
          reject(
            new InvalidSettingsError(
              'rbdPath',
              `cannot run ${connection.rbdPath} (${error.code}): install the Ceph client (Debian/Ubuntu: ` +
                '`apt-get install ceph-common`) or point rbdPath at the rbd command',
              { cause: error },
            ),
          );
        } else {
          reject(error);
        }
      });
      this.child.once('close', (code, signal) => {
        resolve({ code, signal, stderr: this.#stderr, timedOut: this.#timedOut });
      });
    });
    // Handled by whoever awaits `exited`; this keeps an unobserved spawn failure from crashing the process.
    this.exited.catch(() => undefined);
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  kill(reason: 'timeout' | 'abort' | 'close'): void {
    if (reason === 'timeout') this.#timedOut = true;
    if (this.#killed || !this.running) return;
    this.#killed = true;
    this.child.kill('SIGKILL');
  }

  /** Waits for the process to end (after a kill); never rejects. */
  async settle(): Promise<void> {
    await this.exited.catch(() => undefined);
  }
}

/**
 * Runs `rbd ARGS` against the cluster and returns its stdout. The call gets a private temp folder with a
 * ceph.conf and a 0600 keyring, removed when it ends; the key is in neither argv nor environment.
 *
 * @throws a {@link @drkit/core!DrkitError} from {@link rbdError} when rbd fails; `signal.reason` when aborted
 * (the process is killed).
 * @internal
 */
export async function runRbd(
  connection: RbdConnection,
  args: readonly string[],
  options: RbdCallOptions = {},
): Promise<string> {
  const { signal, logger } = options;
  signal?.throwIfAborted();
  const limits = callLimits(connection, options);
  const effective = limits.connection;
  const files = await prepareFiles(effective);
  let rbd: RbdProcess | undefined;
  let timer: NodeJS.Timeout | undefined;
  let started = 0;
  let exit: RbdExit | undefined;
  const onAbort = () => rbd?.kill('abort');
  try {
    signal?.throwIfAborted();
    started = logStart(logger, effective, args);
    rbd = new RbdProcess(effective, [...files.args, ...args]);
    const running = rbd;
    signal?.addEventListener('abort', onAbort, { once: true });
    timer = setTimeout(() => running.kill('timeout'), limits.hardTimeoutMs);
    const stdout: Buffer[] = [];
    running.child.stdout?.on('data', (chunk: Buffer) => stdout.push(chunk));
    exit = await running.exited;
    if (signal?.aborted) throw signal.reason;
    if (exit.code !== 0 || exit.signal !== null) {
      throw rbdError(effective, args, exit, { hardTimeoutMs: limits.hardTimeoutMs });
    }
    return Buffer.concat(stdout).toString('utf8');
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
    if (rbd?.running) {
      rbd.kill('close');
      await rbd.settle();
    }
    if (rbd) logEnd(logger, effective, args, started, exit);
    await files.remove();
  }
}

/**
 * Runs `rbd ARGS --format json` and parses its output.
 *
 * @throws like {@link runRbd}; {@link @drkit/core!SourceProtocolError} when the output is not JSON.
 * @internal
 */
export async function runRbdJson(
  connection: RbdConnection,
  args: readonly string[],
  options: RbdCallOptions = {},
): Promise<unknown> {
  const text = await runRbd(connection, [...args, '--format', 'json'], options);
  try {
    return JSON.parse(text.trim() === '' ? 'null' : text);
  } catch (error) {
    throw new SourceProtocolError(
      `rbd ${args.join(' ')} on Ceph cluster ${connection.name} printed something that is not JSON: ` +
        scrubSecrets(text.slice(0, 200), connection),
      { cause: error },
    );
  }
}

/**
 * A running rbd command whose stdout is read as a stream (`rbd export-diff ... -`). Reading pulls from the pipe,
 * so rbd waits while the consumer is busy (backpressure); until {@link RbdStream.chunks} is iterated it waits on a
 * full pipe, so a stream can be started ahead of time.
 *
 * @internal
 */
export interface RbdStream extends AsyncDisposable {
  /**
   * The process's stdout, to iterate once. Ending the iteration early kills the process. An abort of `signal`
   * kills the process and rejects with `signal.reason`; rbd writing nothing for the hard timeout while the reader
   * waits kills it with a {@link @drkit/core!TimeoutError}.
   */
  chunks(options?: { signal?: AbortSignal | undefined }): AsyncIterable<Uint8Array>;
  /**
   * Waits for the process to end; resolves when it exited with status 0.
   *
   * @throws the mapped {@link @drkit/core!DrkitError} of a failure.
   */
  wait(): Promise<void>;
  /** Whether the process has ended (its exit status is known). */
  readonly ended: boolean;
  /** Kills the process if it still runs, waits for it and removes the temp files. Idempotent. */
  close(): Promise<void>;
}

/**
 * Starts `rbd ARGS` with stdout as a stream (see {@link RbdStream}). `signal` only guards the start: pass the
 * reader's signal to {@link RbdStream.chunks}.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} when rbd cannot be run; `signal.reason` when aborted.
 * @internal
 */
export async function openRbdStream(
  connection: RbdConnection,
  args: readonly string[],
  options: RbdCallOptions = {},
): Promise<RbdStream> {
  const { signal, logger } = options;
  signal?.throwIfAborted();
  const limits = callLimits(connection, options);
  const effective = limits.connection;
  const files = await prepareFiles(effective);
  let running: RbdProcess;
  let started: number;
  try {
    signal?.throwIfAborted();
    started = logStart(logger, effective, args);
    running = new RbdProcess(effective, [...files.args, ...args]);
  } catch (error) {
    await files.remove();
    throw error;
  }
  void running.exited.then(
    (exit) => logEnd(logger, effective, args, started, exit),
    () => logEnd(logger, effective, args, started, undefined),
  );
  const idleMs = limits.hardTimeoutMs;
  // Listen from the start: Node drains (and loses) a child's stdout that nobody listens to when the child exits,
  // which a stream started ahead of its reader may do. A 'readable' listener that reads nothing keeps the data
  // and still fills only the stream's buffer, so backpressure holds.
  const stdout = running.child.stdout as Readable;
  stdout.on('readable', () => {});
  const iterator = stdout[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let iterated = false;
  let closing: Promise<void> | undefined;
  const failure = (exit: RbdExit) => rbdError(effective, args, exit, { hardTimeoutMs: idleMs });

  async function* read(readSignal: AbortSignal | undefined): AsyncGenerator<Uint8Array> {
    if (iterated) throw new InvalidArgumentError('the stdout of an rbd stream can be read only once');
    iterated = true;
    readSignal?.throwIfAborted();
    const onAbort = () => running.kill('abort');
    readSignal?.addEventListener('abort', onAbort, { once: true });
    let timer: NodeJS.Timeout | undefined;
    try {
      for (;;) {
        timer = setTimeout(() => running.kill('timeout'), idleMs);
        let next: IteratorResult<Buffer>;
        try {
          next = await iterator.next();
        } finally {
          clearTimeout(timer);
        }
        if (readSignal?.aborted) throw readSignal.reason;
        if (next.done) {
          // A killed process closes its stdout: say why instead of letting the parser see a short stream.
          const exit = await running.exited;
          if (readSignal?.aborted) throw readSignal.reason;
          if (exit.timedOut) throw failure(exit);
          return;
        }
        yield next.value;
      }
    } finally {
      clearTimeout(timer);
      readSignal?.removeEventListener('abort', onAbort);
      if (running.running) running.kill('close');
      await iterator.return?.();
    }
  }

  const stream: RbdStream = {
    chunks: (readOptions = {}) => ({ [Symbol.asyncIterator]: () => read(readOptions.signal) }),
    get ended() {
      return !running.running;
    },
    async wait() {
      const exit = await running.exited;
      if (exit.code !== 0 || exit.signal !== null) throw failure(exit);
    },
    close() {
      closing ??= (async () => {
        running.kill('close');
        // Drop what the pipe still holds: the process counts as ended only once its stdout closed.
        stdout.destroy();
        await running.settle();
        await files.remove();
      })();
      return closing;
    },
    [Symbol.asyncDispose]() {
      return stream.close();
    },
  };
  return stream;
}

/** The useful lines of rbd's stderr, without log prefixes, scrubbed of secrets. */
function stderrDetail(stderr: string, connection: RbdConnection): string {
  const lines = stderr
    .split('\n')
    .map((line) => line.replace(/^\d{4}-\d\d-\d\dT\S+\s+[0-9a-f]+\s+-?\d+\s+/, '').trim())
    .filter((line) => line !== '' && !/^Errors while parsing config file|^did not load config/.test(line));
  const rbdLines = lines.filter((line) => line.startsWith('rbd:') || line.includes(': ('));
  const chosen = (rbdLines.length > 0 ? rbdLines : lines).slice(-4).join('; ');
  return scrubSecrets(chosen.slice(0, 1000), connection);
}

const CAPS_HINT = (connection: RbdConnection) =>
  `mon 'profile rbd' osd 'profile rbd pool=${connection.pool}'`;

/**
 * Maps how an rbd call failed to the drkit error that says what to do: a refused key at connect is an
 * {@link @drkit/core!AuthenticationError}; a timeout an {@link @drkit/core!UnreachableError}; EPERM/EACCES on an
 * operation a {@link @drkit/core!PermissionError} naming the caps to grant; ENOENT a {@link @drkit/core!NotFoundError};
 * the hard timer a {@link @drkit/core!TimeoutError}; anything else a {@link @drkit/core!SourceProtocolError} with rbd's
 * message. Secrets are scrubbed from every message.
 *
 * @internal
 */
export function rbdError(
  connection: RbdConnection,
  args: readonly string[],
  exit: RbdExit,
  options: Pick<RbdCallOptions, 'hardTimeoutMs'> = {},
): DrkitError {
  const operation = `rbd ${args.filter((arg) => arg !== '--no-progress').join(' ')}`;
  const where = `Ceph cluster ${connection.name}`;
  const detail = stderrDetail(exit.stderr, connection);
  const said = detail === '' ? '' : ` (rbd said: ${detail})`;
  const user = connection.auth ? `client.${connection.auth.user}` : 'the client (CephX off)';
  const seconds = connection.timeoutSeconds;
  if (exit.timedOut) {
    const ms = options.hardTimeoutMs ?? defaultHardTimeoutMs(connection);
    const limit = ms < 10_000 ? (ms / 1000).toFixed(1) : String(Math.round(ms / 1000));
    return new TimeoutError(
      `${operation} on ${where} made no progress for ${limit} s and was killed: check the cluster's health ` +
        `(\`ceph -s\`) and the network from this proxy to its monitors and OSDs${said}`,
    );
  }
  if (exit.signal !== null) {
    return new SourceProtocolError(`${operation} on ${where} was killed by ${exit.signal}${said}`, {
      retryable: true,
    });
  }
  const code = exit.code ?? -1;
  const text = exit.stderr;
  const atConnect = /couldn't connect to the cluster|authenticate timed out|monclient\(hunting\)/.test(text);
  if (code === 110 || /\(110\) Connection timed out|authenticate timed out/.test(text)) {
    return atConnect
      ? new UnreachableError(
          `no monitor of ${where} (${connection.monHost}) answered within ${seconds} s: check the monitor ` +
            'addresses, that ports 3300 (msgr2) and 6789 (msgr1) are open from this proxy, and that the ' +
            `cluster is up${said}`,
        )
      : new UnreachableError(
          `a Ceph operation of ${operation} on ${where} timed out after ${seconds} s: check the health of the ` +
            `cluster's OSDs (\`ceph -s\`, \`ceph osd tree\`)${said}`,
        );
  }
  if (atConnect && (code === 13 || code === 1)) {
    return new AuthenticationError(
      `${where} refused ${user}: the key is wrong, or the user does not exist or was removed. Check the user ` +
        `and keyring with \`ceph auth get ${user}\` on a monitor node${said}`,
    );
  }
  if (atConnect || code === 107 || code === 108 || code === 111 || code === 113) {
    return new UnreachableError(
      `cannot connect to ${where} (${connection.monHost}): check the monitor addresses, ports 3300/6789 and the ` +
        `cluster name${said}`,
    );
  }
  if (code === 1 || code === 13) {
    return new PermissionError(
      `${user} is not allowed to run ${operation} on ${where}: grant it ${CAPS_HINT(connection)} ` +
        `(\`ceph auth caps ${user} ${CAPS_HINT(connection)}\`)${said}`,
    );
  }
  if (code === 2) {
    return new NotFoundError(`${operation} on ${where}: the pool, image or snapshot does not exist${said}`);
  }
  if (code === 16 && /protected/.test(text)) {
    return new PermissionError(
      `${operation} on ${where}: the snapshot is protected (it has clones, or someone protected it); ` +
        `flatten or remove its clones and run \`rbd snap unprotect\`, or remove it by hand${said}`,
    );
  }
  if (code === 17) {
    return new InvalidArgumentError(`${operation} on ${where}: it already exists${said}`);
  }
  if (code === 22) {
    return new InvalidArgumentError(`${operation} on ${where}: rbd rejected an argument as invalid${said}`);
  }
  return new SourceProtocolError(`${operation} on ${where} failed with exit status ${code}${said}`, {
    retryable: code === 16 || code === 11,
  });
}
