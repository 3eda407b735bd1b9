import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import {
  createBackupEngine,
  DrkitError,
  InvalidArgumentError,
  type LedgerEntry,
  type PruneResult,
  type RecoveryPoint,
  type Repository,
  type UnreadablePoint,
  UnreadablePointsError,
} from '@drkit/core';
import { createLocalDiskPlatform } from '@drkit/provider-agent';
import { errorJson, unreadableJson, unreadableText, writeBackupReport } from './backup-report.js';
import {
  type CliIo,
  type CommandContext,
  parseSyncLevel,
  readSecretFile,
  resolvePassphrase,
  UsageError,
  withRepository,
} from './command-context.js';
import { configPath, type DrkitConfig, readConfig } from './config/config-file.js';
import { ExitCode, exitCodeFor } from './exit-codes.js';
import { formatBytes, formatRate, formatSeconds, table } from './format.js';
import { hostPointId, listHostPoints, restoreHostPoint } from './host-points.js';
import { hostsCommand, platformBackupCommand, platformsCommand } from './platform-commands.js';
import { ProgressBar } from './progress-bar.js';
import { repositoryOf } from './repository-location.js';
import { redactingStream, SecretRedactor } from './secret-redactor.js';

export type { CliIo } from './command-context.js';

const HELP = `drkit — block-level backup and restore of disks, incremental, verified

Usage: drkit <command> [options]

Commands:
  backup <disk-path>...      back up disk images or block devices of this machine (one host, one disk per path)
  backup --platform P --host H [--host H2...]
                             back up hosts of a platform of the configuration file
  platforms                  each configured platform's status (Normal / Abnormal and why) and host count
  hosts                      the hosts of the configured platforms, their disks, and the disks they skip
  points                     list recovery points
  host-points                list host points: the points of one host from one backup job
  restore <point-id> <dest>  restore a point to a file, a block device, or "-" for standard output
  restore --host-point <id> --to <dir>
                             restore every disk of a host point into <dir>, one file per disk
  verify [point-id...]       re-hash every chunk of every point (or of the given points)
  prune                      apply retention, then mark the chunks no point references; a later prune
                             (after a grace period, twice the lock stale time: 20 min) deletes those still
                             unreferenced
  ledger                     list source-side snapshots drkit created and has not released yet
  change-passphrase          wrap the key of an encrypted repository under a new passphrase (nothing else
                             is rewritten): --new-passphrase-file <file>, or DRKIT_NEW_PASSPHRASE

Options for every command:
  --config <file>            configuration file, JSON or YAML (or DRKIT_CONFIG): repository, platforms,
                             Sync Proxies; secrets only as { env: VAR } or { file: PATH }
  --repo <dir | s3://bucket/prefix>
                             repository folder, or S3 bucket (endpoint: DRKIT_S3_ENDPOINT; region and
                             credentials: AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or the AWS
                             SDK's other sources); else the configuration's repository, else DRKIT_REPO
  --sync-level <level>       how the repository folder is synced: filesystem (one syncfs per commit; the
                             default on Linux), file (fsync per chunk; the default elsewhere), none (unsafe on
                             a machine crash); else the configuration's
                             repository.syncLevel, else DRKIT_SYNC_LEVEL
  --passphrase-file <file>   the repository's passphrase: the file's first line (or DRKIT_PASSPHRASE_FILE,
                             or DRKIT_PASSPHRASE); a new repository is then encrypted (AES-256-GCM), an
                             existing one must be encrypted with it. Never pass it on the command line
  --json                     machine-readable output on stdout
  -h, --help                 this help
  --version                  the version

backup:      --full (read every disk in full)  --chunk-size <bytes> (new disks; default 1048576)
             --host-name <name> (disk paths: default this machine's host name)
             --platform <id> (default: the only platform)  --host <id or name> (repeatable)
             --quiesce required|preferred|none (default preferred)
platforms, hosts:  --platform <id> (only that one)
host-points: --platform <id>  --host <id>
prune:       --keep-last N  --keep-daily N  --keep-weekly N  --dry-run
             --wait (wait out the grace period and delete in this run)

Exit codes: 0 ok, 2 usage, 3 not found, 4 access denied, 5 unreachable, 6 corrupt data,
            7 repository locked, 8 some disks failed, 9 invalid value, 10 source error,
            11 every disk committed but a source snapshot was not released,
            12 the backup skipped disks the platform cannot protect, 130 interrupted.
            platforms exits with the code of the first Abnormal platform's error (10 if it has none).
`;

/**
 * Runs the `drkit` command line and returns its exit code. Never calls `process.exit`.
 *
 * @example
 * ```ts
 * const code = await main(['points', '--repo', './repo', '--json'], { stdout: process.stdout, stderr: process.stderr, env: process.env });
 * ```
 */
export async function main(argv: readonly string[], rawIo: CliIo): Promise<number> {
  // Every text written from here on goes through the redactor: a secret the configuration resolves never
  // reaches the terminal, even when a provider's error quotes it.
  const redactor = new SecretRedactor();
  const io: CliIo = {
    ...rawIo,
    stdout: redactingStream(rawIo.stdout, redactor),
    stderr: redactingStream(rawIo.stderr, redactor),
  };
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (error) {
    io.stderr.write(`drkit: ${(error as Error).message}\nRun "drkit --help" for usage.\n`);
    return ExitCode.usage;
  }
  const { values, positionals } = parsed;
  if (values.version) {
    io.stdout.write(`${VERSION}\n`);
    return ExitCode.ok;
  }
  const [command, ...args] = positionals;
  if (values.help || command === undefined || command === 'help') {
    io.stdout.write(HELP);
    return command === undefined && !values.help ? ExitCode.usage : ExitCode.ok;
  }
  const json = values.json ?? false;
  try {
    const commands: Record<string, (context: CommandContext) => Promise<number>> = {
      backup: (c) => backup(c, args, values),
      platforms: (c) => {
        noArguments('platforms', args);
        return platformsCommand(c, values.platform);
      },
      hosts: (c) => {
        noArguments('hosts', args);
        return hostsCommand(c, values.platform);
      },
      points: (c) => onRepository(c, (r) => points(r, json, io)),
      'host-points': (c) => {
        noArguments('host-points', args);
        const hosts = values.host ?? [];
        if (hosts.length > 1) throw new UsageError('host-points takes one --host');
        return onRepository(c, (r) =>
          listHostPoints(r, { platformId: values.platform, hostId: hosts[0] }, json, io),
        );
      },
      restore: (c) => restore(c, args, values),
      verify: (c) => onRepository(c, (r) => verify(r, args, json, io)),
      prune: (c) => onRepository(c, (r) => prune(r, values, json, io)),
      ledger: (c) => onRepository(c, (r) => ledger(r, json, io)),
      'change-passphrase': (c) => {
        noArguments('change-passphrase', args);
        return changePassphrase(c, values['new-passphrase-file']);
      },
    };
    const run = commands[command];
    if (!run) throw new UsageError(`unknown command "${command}"`);
    const file = configPath(values.config, io.env);
    const config: DrkitConfig | undefined = file === undefined ? undefined : await readConfig(file);
    return await run({
      io,
      rawIo,
      json,
      config,
      redactor,
      repository: repositoryOf(values.repo, config, io.env),
      syncLevel:
        parseSyncLevel(values['sync-level'], '--sync-level') ??
        (config?.repository?.type === 'local' ? config.repository.syncLevel : undefined) ??
        parseSyncLevel(io.env.DRKIT_SYNC_LEVEL, 'DRKIT_SYNC_LEVEL'),
      passphrase: await resolvePassphrase(values['passphrase-file'], io.env, redactor),
    });
  } catch (error) {
    if (error instanceof UsageError) {
      io.stderr.write(`drkit: ${error.message}\nRun "drkit --help" for usage.\n`);
      return ExitCode.usage;
    }
    if (io.signal?.aborted && error === io.signal.reason) {
      io.stderr.write(
        'drkit: interrupted; nothing half-written is listed, run the command again to resume\n',
      );
      return ExitCode.interrupted;
    }
    const code = exitCodeFor(error);
    if (json) io.stdout.write(`${JSON.stringify({ error: errorJson(error) })}\n`);
    io.stderr.write(
      `drkit: ${DrkitError.isInstance(error) ? error.message : ((error as Error)?.stack ?? String(error))}\n`,
    );
    return code;
  }
}

function noArguments(command: string, args: readonly string[]): void {
  if (args.length > 0) throw new UsageError(`${command} takes no arguments, got "${args.join(' ')}"`);
}

/** `drkit change-passphrase`: the data key re-wrapped under the new passphrase. */
async function changePassphrase(context: CommandContext, file: string | undefined): Promise<number> {
  const next =
    file !== undefined
      ? await readSecretFile(file, '--new-passphrase-file')
      : context.io.env.DRKIT_NEW_PASSPHRASE || undefined;
  if (next === undefined) {
    throw new UsageError(
      'change-passphrase needs the new passphrase: --new-passphrase-file <file> or DRKIT_NEW_PASSPHRASE',
    );
  }
  if (context.passphrase === undefined) {
    throw new UsageError(
      'change-passphrase needs the current passphrase: --passphrase-file <file>, DRKIT_PASSPHRASE_FILE or DRKIT_PASSPHRASE',
    );
  }
  context.redactor.add(next);
  await onRepository(context, (repository) => repository.changePassphrase({ passphrase: next }));
  if (context.json) context.io.stdout.write(`${JSON.stringify({ changed: true })}\n`);
  else context.io.stdout.write('passphrase changed: the old one no longer opens the repository\n');
  return ExitCode.ok;
}

function onRepository<T>(context: CommandContext, body: (r: Repository) => Promise<T>): Promise<T> {
  return withRepository(context, false, body);
}

declare const __DRKIT_VERSION__: string | undefined;
const VERSION = typeof __DRKIT_VERSION__ === 'string' ? __DRKIT_VERSION__ : '0.0.0';

function parse(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: 'string' },
      repo: { type: 'string' },
      'sync-level': { type: 'string' },
      'passphrase-file': { type: 'string' },
      'new-passphrase-file': { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean' },
      full: { type: 'boolean' },
      'chunk-size': { type: 'string' },
      'host-name': { type: 'string' },
      'keep-last': { type: 'string' },
      'keep-daily': { type: 'string' },
      'keep-weekly': { type: 'string' },
      'dry-run': { type: 'boolean' },
      wait: { type: 'boolean' },
      platform: { type: 'string' },
      host: { type: 'string', multiple: true },
      quiesce: { type: 'string' },
      'host-point': { type: 'string' },
      to: { type: 'string' },
    },
  });
}

type Values = ReturnType<typeof parse>['values'];

function wholeNumber(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value)) throw new UsageError(`${flag} takes a whole number, got "${value}"`);
  return Number(value);
}

function pointJson(p: RecoveryPoint, hostPointOf: ReadonlyMap<string, string>) {
  return {
    id: p.id,
    status: 'ok' as const,
    hostPointId: hostPointOf.get(p.id) ?? null,
    host: { id: p.hostId, name: p.hostName },
    disk: { id: p.diskId, name: p.diskName },
    platformId: p.platformId,
    /** The commit time, as before `createdAt` was given its own field. */
    time: p.createdAt,
    createdAt: p.createdAt,
    snapshotAt: p.snapshotAt,
    jobId: p.jobId ?? null,
    taskId: p.taskId ?? null,
    snapshotName: p.snapshotName ?? null,
    sizeBytes: p.capacityBytes,
    chunkSize: p.chunkSize,
    parentId: p.parentId ?? null,
    validity: p.validity,
    stats: p.stats,
  };
}

function validityText(p: RecoveryPoint): string {
  return p.validity.kind === 'full' ? `full (${p.validity.reason})` : p.validity.kind;
}

async function backup(context: CommandContext, paths: string[], values: Values): Promise<number> {
  const { io, json } = context;
  const chunkSize = wholeNumber(values['chunk-size'], '--chunk-size');
  if (values.platform !== undefined || values.host !== undefined || values.quiesce !== undefined) {
    if (paths.length > 0) {
      throw new UsageError('backup takes disk paths, or --platform and --host, not both');
    }
    if (values['host-name'] !== undefined) throw new UsageError('--host-name is for disk paths; use --host');
    return platformBackupCommand(context, {
      platformId: values.platform,
      hosts: values.host ?? [],
      full: values.full ?? false,
      quiesce: values.quiesce,
      chunkSize,
    });
  }
  if (paths.length === 0)
    throw new UsageError('backup needs at least one disk path, or --platform and --host');
  // The platform of this machine's disks. Its id and host id are the ones drkit always gave it (the defaults
  // of the local-disk provider before ids became required): points are filed under them, so every earlier
  // point stays the parent of the next backup.
  const localHost = hostname();
  const platform = createLocalDiskPlatform({
    id: `local-${localHost}`,
    hostId: localHost,
    hostName: values['host-name'] ?? localHost,
    disks: paths.map((path) => ({ path: resolve(path), id: resolve(path), name: resolve(path) })),
  });
  return withRepository(context, true, async (repository) => {
    const engine = createBackupEngine({ repository, platforms: [platform], chunkSize });
    const bar = new ProgressBar(io.stderr);
    const started = performance.now();
    try {
      const result = await engine.backup({
        full: values.full ?? false,
        signal: io.signal,
        onProgress: json ? undefined : (p) => bar.update(p),
      });
      bar.finish();
      const seconds = (performance.now() - started) / 1000;
      return writeBackupReport(result, { json, seconds }, io);
    } finally {
      bar.finish();
      await engine.close();
    }
  });
}

async function points(repository: Repository, json: boolean, io: CliIo): Promise<number> {
  const list = await repository.points({}, { signal: io.signal });
  const unreadable = await repository.unreadablePoints({ signal: io.signal });
  if (json) {
    const hostPointOf = new Map<string, string>();
    for (const hp of await repository.hostPoints({}, { signal: io.signal })) {
      for (const p of hp.points) hostPointOf.set(p.id, hostPointId(hp));
    }
    io.stdout.write(
      `${JSON.stringify([...list.map((p) => pointJson(p, hostPointOf)), ...unreadable.map(unreadableJson)])}\n`,
    );
    return ExitCode.ok;
  }
  if (list.length === 0 && unreadable.length === 0) {
    io.stdout.write('no recovery points\n');
    return ExitCode.ok;
  }
  const rows = [['ID', 'SNAPSHOT TIME', 'COMMITTED', 'HOST', 'DISK', 'SIZE', 'CHANGE SET', 'WRITTEN']];
  for (const p of list) {
    rows.push([
      p.id,
      p.snapshotAt,
      p.createdAt,
      p.hostName,
      p.diskName,
      formatBytes(p.capacityBytes),
      validityText(p),
      formatBytes(p.stats.bytesWritten),
    ]);
  }
  for (const p of unreadable) rows.push([p.id, `unreadable (${p.problem})`, '', '', '', '', '', '']);
  io.stdout.write(`${table(rows)}\n`);
  if (unreadable.length > 0) {
    io.stderr.write(
      `${unreadable.length} point(s) cannot be read (restore, and prune, need them repaired or removed):\n${unreadableText(unreadable)}`,
    );
  }
  return ExitCode.ok;
}

async function restore(context: CommandContext, args: string[], values: Values): Promise<number> {
  const json = context.json;
  const hostPoint = values['host-point'];
  if (hostPoint !== undefined) {
    if (args.length > 0)
      throw new UsageError('restore --host-point takes no point id or destination; use --to <dir>');
    const to = values.to;
    if (to === undefined || to === '') throw new UsageError('restore --host-point <id> needs --to <dir>');
    return onRepository(context, (r) => restoreHostPoint(r, hostPoint, to, json, context.io));
  }
  if (values.to !== undefined)
    throw new UsageError('--to is for --host-point; restore <point-id> <dest> otherwise');
  return onRepository(context, (r) => restorePoint(r, args, json, context));
}

async function restorePoint(
  repository: Repository,
  args: string[],
  json: boolean,
  context: CommandContext,
): Promise<number> {
  const { io, rawIo } = context;
  const [pointId, dest] = args;
  if (!pointId || !dest || args.length > 2) throw new UsageError('restore takes <point-id> <dest>');
  const point = await repository.point(pointId, { signal: io.signal });
  const bar = new ProgressBar(io.stderr);
  const started = performance.now();
  const toStdout = dest === '-';
  if (toStdout && rawIo.stdout.isTTY)
    throw new InvalidArgumentError('refusing to write disk data to a terminal');
  try {
    const { bytes } = await repository.restore(
      point.id,
      toStdout ? { stream: rawIo.stdout } : { path: resolve(dest) },
      {
        signal: io.signal,
        onProgress: json ? undefined : (p) => bar.updateBytes('restore', p.bytesDone, p.totalBytes, started),
      },
    );
    bar.finish();
    const seconds = (performance.now() - started) / 1000;
    const summary = { pointId: point.id, destination: toStdout ? '-' : resolve(dest), bytes, seconds };
    if (json && !toStdout) io.stdout.write(`${JSON.stringify(summary)}\n`);
    else
      (toStdout ? io.stderr : io.stdout).write(
        `restored ${point.id} (${formatBytes(bytes)}) to ${summary.destination} in ${formatSeconds(seconds)}, ${formatRate(bytes / Math.max(seconds, 1e-9))}\n`,
      );
    return ExitCode.ok;
  } finally {
    bar.finish();
  }
}

async function verify(repository: Repository, pointIds: string[], json: boolean, io: CliIo): Promise<number> {
  const report = await repository.verify({
    pointIds: pointIds.length ? pointIds : undefined,
    signal: io.signal,
  });
  if (json) io.stdout.write(`${JSON.stringify(report)}\n`);
  else {
    io.stdout.write(
      `checked ${report.pointsChecked} point(s), ${report.chunksChecked} chunk(s), ${formatBytes(report.bytesChecked)}: ` +
        `${report.ok ? 'all good' : `${report.damaged.length} damaged chunk(s), ${report.damagedIndexes.length} damaged index(es), ${report.unreadablePoints.length} unreadable point(s)`}\n`,
    );
    for (const d of report.damaged) {
      io.stdout.write(`  chunk ${d.chunkId}: ${d.problem}; affects points ${d.pointIds.join(', ')}\n`);
    }
    for (const d of report.damagedIndexes) {
      io.stdout.write(`  point ${d.pointId}: index ${d.problem}: ${d.detail}\n`);
    }
    io.stdout.write(unreadableText(report.unreadablePoints));
    if (report.damaged.length > 0)
      io.stdout.write('The next backup of the affected disks reads them in full to repair the chunks.\n');
    if (report.unreadablePoints.length > 0)
      io.stdout.write(
        'Unreadable points cannot be restored by this drkit; repair or remove their metadata (points/<id>.json), or use the newer drkit that wrote them. Prune refuses to run until then.\n',
      );
  }
  return report.ok ? ExitCode.ok : ExitCode.corrupt;
}

async function prune(repository: Repository, values: Values, json: boolean, io: CliIo): Promise<number> {
  const policy = {
    keepLast: wholeNumber(values['keep-last'], '--keep-last'),
    keepDaily: wholeNumber(values['keep-daily'], '--keep-daily'),
    keepWeekly: wholeNumber(values['keep-weekly'], '--keep-weekly'),
  };
  if (policy.keepLast === undefined && policy.keepDaily === undefined && policy.keepWeekly === undefined) {
    throw new UsageError('prune needs at least one of --keep-last, --keep-daily, --keep-weekly');
  }
  const dryRun = values['dry-run'] ?? false;
  const retention = await repository.applyRetention(policy, { dryRun, signal: io.signal });
  const { unreadable } = retention;
  let gc: Partial<PruneResult> & { chunksRemoved: number; bytesFreed: number } = {
    chunksRemoved: 0,
    bytesFreed: 0,
  };
  let refusal: unknown;
  if (dryRun) {
    // What the real run would do: prune refuses while a point is unreadable.
    if (unreadable.length > 0) refusal = new UnreadablePointsError(pruneRefusal(unreadable), unreadable);
  } else {
    try {
      gc = await repository.prune({ wait: values.wait ?? false, signal: io.signal });
    } catch (error) {
      if (!UnreadablePointsError.isInstance(error)) throw error;
      refusal = error;
    }
  }
  const kept = retention.kept.map((p) => p.id);
  const removed = retention.removed.map((p) => p.id);
  const locked = retention.locked.map((entry) => ({ id: entry.point.id, lockedUntil: entry.lockedUntil }));
  if (json) {
    io.stdout.write(
      `${JSON.stringify({ dryRun, kept, removed, ...(locked.length > 0 ? { locked } : {}), unreadable: unreadable.map(unreadableJson), ...gc, ...(refusal === undefined ? {} : { error: errorJson(refusal) }) })}\n`,
    );
  } else {
    const firstUnlock = locked.map((entry) => entry.lockedUntil).sort()[0];
    io.stdout.write(
      `${dryRun ? 'would remove' : 'removed'} ${removed.length} point(s), kept ${kept.length}` +
        (locked.length > 0
          ? `, kept ${locked.length} locked point(s) (Object Lock; the first unlocks at ${firstUnlock})`
          : '') +
        (unreadable.length > 0 ? `, left ${unreadable.length} unreadable point(s) alone` : '') +
        (dryRun || refusal !== undefined ? '\n' : `; ${pruneText(gc as PruneResult)}\n`),
    );
  }
  if (refusal !== undefined) {
    io.stderr.write(
      `drkit: ${dryRun ? 'prune would refuse: ' : ''}${(refusal as Error).message}\n${unreadableText(unreadable)}`,
    );
    return exitCodeFor(refusal);
  }
  return ExitCode.ok;
}

/** What the prune phase did, in words. */
function pruneText(gc: PruneResult): string {
  const deleted =
    gc.phase === 'swept'
      ? `deleted ${gc.chunksRemoved} unreferenced chunk(s), ${gc.indexSegmentsRemoved} index segment(s) and ${gc.indexesRemoved} orphan index(es), freed ${formatBytes(gc.bytesFreed)}; ` +
        (gc.lockedSkipped > 0
          ? `left ${gc.lockedSkipped} blob(s) still locked by Object Lock${gc.lockedSkippedUntil === undefined ? '' : ` (the first until ${gc.lockedSkippedUntil})`} for a later prune; `
          : '')
      : '';
  if (gc.sweepAfter === undefined) return `${deleted}nothing is left to delete`;
  const marked = `${gc.candidateChunks} unreferenced chunk(s) and ${gc.candidateIndexSegments} index segment(s) (${formatBytes(gc.candidateBytes)}) and ${gc.candidateIndexes} orphan index(es)`;
  const next = `run prune again from ${gc.sweepAfter} to delete those still unreferenced (or prune --wait)`;
  if (gc.phase === 'pending') return `${marked} marked at ${gc.markedAt} wait out the grace period: ${next}`;
  return `${deleted}marked ${marked}: ${next}`;
}

function pruneRefusal(unreadable: readonly UnreadablePoint[]): string {
  return `cannot prune: the metadata of ${unreadable.length} point(s) cannot be read, so the chunks they need are unknown (${unreadable.map((p) => p.id).join(', ')})`;
}

/** One ledger entry in words: what, where, which job, and who holds it until when. */
function ledgerLine(e: LedgerEntry, nowMs: number): string {
  let holder: string;
  if (e.owner === undefined || e.leaseExpiresAt === undefined) {
    holder = 'no owner (written by an older drkit; treated as expired)';
  } else {
    const expired = Date.parse(e.leaseExpiresAt) < nowMs;
    holder = `owner ${e.owner.engineId} on ${e.owner.hostname} (pid ${e.owner.pid}), lease ${expired ? 'expired' : 'until'} ${e.leaseExpiresAt}`;
  }
  const lease = e.state === 'pending' ? `, ${holder}` : '';
  return `${e.state} ${e.kind} ${e.name} on ${e.platformId}/${e.hostId} (job ${e.jobId}, created ${e.createdAt}${lease})`;
}

async function ledger(repository: Repository, json: boolean, io: CliIo): Promise<number> {
  const entries = await repository.ledger.list({ signal: io.signal });
  if (json) io.stdout.write(`${JSON.stringify(entries)}\n`);
  else if (entries.length === 0) io.stdout.write('the ledger is empty: no snapshot left behind\n');
  else {
    const nowMs = Date.now();
    for (const e of entries) io.stdout.write(`${ledgerLine(e, nowMs)}\n`);
    io.stdout.write(
      "A pending entry is released by an engine's reconcile() once its own job ended or its lease expired; " +
        'a retained one is the base of the next incremental.\n',
    );
  }
  return ExitCode.ok;
}
