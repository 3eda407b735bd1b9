import { type BackupJobResult, type DiskTaskOutcome, DrkitError, type UnreadablePoint } from '@drkit/core';
import { ExitCode, exitCodeFor } from './exit-codes.js';
import { formatBytes, formatRate, formatSeconds } from './format.js';

/** An error as JSON: a drkit error's own fields, or `INTERNAL` for anything else. */
export function errorJson(error: unknown) {
  return DrkitError.isInstance(error)
    ? error.toJSON()
    : {
        name: 'Error',
        code: 'INTERNAL',
        message: String((error as Error)?.message ?? error),
        retryable: false,
      };
}

/** An unreadable point in `--json` output: in `points` beside the readable ones, told apart by `status`. */
export function unreadableJson(p: UnreadablePoint) {
  return { id: p.id, status: 'unreadable' as const, problem: p.problem, detail: p.detail };
}

/** One line per unreadable point, for humans. */
export function unreadableText(list: readonly UnreadablePoint[], indent = '  '): string {
  return list.map((p) => `${indent}point ${p.id}: unreadable (${p.problem}): ${p.detail}\n`).join('');
}

function message(error: unknown): string {
  return DrkitError.isInstance(error) ? error.message : String((error as Error)?.message ?? error);
}

/**
 * The exit code of a backup job: 0 when every disk committed and every snapshot was released. When disks failed:
 * the failed disk's own code when it was the only disk read, else 8 (`partial`). Else 12 (`skipped`) when the
 * platform listed disks it cannot protect; else 11 (`snapshotLeft`) when a source-side snapshot could not be
 * released. Failed disks come first, then disks left unprotected: they matter more, and the snapshots are listed
 * in the output either way.
 */
export function backupExitCode(result: BackupJobResult): number {
  if (result.failed > 0) {
    const read = result.tasks.filter((t) => t.status !== 'skipped');
    if (result.succeeded === 0 && read.length === 1) {
      const first = read[0];
      return first?.status === 'failed' ? exitCodeFor(first.error) : ExitCode.partial;
    }
    return ExitCode.partial;
  }
  if (result.skipped > 0) return ExitCode.skipped;
  return result.releaseFailures.length > 0 ? ExitCode.snapshotLeft : ExitCode.ok;
}

/** The host points a backup job made, as the report names them (see `drkit host-points`). */
export interface ReportedHostPoint {
  /** The host point's id: its first point's. */
  readonly id: string;
  readonly platformId: string;
  readonly hostId: string;
  readonly pointIds: readonly string[];
}

/** What {@link writeBackupReport} prints besides the job. */
export interface BackupReportOptions {
  readonly json: boolean;
  readonly seconds: number;
  /** The host points of the job: listed (text and JSON) when given. */
  readonly hostPoints?: readonly ReportedHostPoint[];
  /** Name each disk `host/disk` in the text lines (jobs of several hosts); default just the disk. */
  readonly hostInLabels?: boolean;
}

function taskJson(t: DiskTaskOutcome) {
  const ids = { status: t.status, taskId: t.taskId, hostId: t.hostId, diskId: t.diskId };
  switch (t.status) {
    case 'succeeded':
      return {
        ...ids,
        proxyId: t.proxyId,
        ...t.result,
        sourceCommitError:
          t.result.sourceCommitError === undefined ? undefined : errorJson(t.result.sourceCommitError),
      };
    case 'failed':
      return { ...ids, proxyId: t.proxyId ?? null, error: errorJson(t.error) };
    case 'skipped':
      return { ...ids, reason: t.reason, detail: t.detail };
  }
}

/**
 * Writes what a backup job did: one JSON document on stdout with `json`, else a line per disk on stdout (a
 * failed or skipped disk and a snapshot left behind on stderr). Returns the exit code ({@link backupExitCode}).
 */
export function writeBackupReport(
  result: BackupJobResult,
  options: BackupReportOptions,
  io: {
    readonly stdout: { write(text: string): unknown };
    readonly stderr: { write(text: string): unknown };
  },
): number {
  if (options.json) {
    io.stdout.write(
      `${JSON.stringify({
        jobId: result.jobId,
        seconds: options.seconds,
        succeeded: result.succeeded,
        failed: result.failed,
        skipped: result.skipped,
        unreadablePoints: result.unreadablePoints.map(unreadableJson),
        tasks: result.tasks.map(taskJson),
        ...(options.hostPoints === undefined ? {} : { hostPoints: options.hostPoints }),
        releaseFailures: result.releaseFailures.map((f) => ({
          platformId: f.platformId,
          hostId: f.hostId,
          snapshot: f.snapshot,
          entryId: f.entryId,
          error: errorJson(f.error),
        })),
      })}\n`,
    );
    return backupExitCode(result);
  }
  const label = (t: DiskTaskOutcome) => (options.hostInLabels ? `${t.hostId}/${t.diskId}` : t.diskId);
  for (const t of result.tasks) {
    if (t.status === 'succeeded') {
      const r = t.result;
      const v =
        r.validity.kind === 'full'
          ? `full read (${r.validity.reason}${r.validity.detail ? `: ${r.validity.detail}` : ''})`
          : `${r.validity.kind} incremental`;
      io.stdout.write(
        `${label(t)}: point ${r.pointId}, ${v}; ${formatBytes(r.capacityBytes)} disk, read ${formatBytes(r.bytesRead)}, ` +
          `wrote ${formatBytes(r.bytesWritten)}, unchanged ${formatBytes(r.bytesSkippedUnchanged)}, ` +
          `deduplicated ${formatBytes(r.bytesDeduplicated)}, zero ${formatBytes(r.bytesZero)}; ` +
          `${formatSeconds(r.seconds)}, ${formatRate(r.bytesDone / Math.max(r.seconds, 1e-9))}\n`,
      );
      if (r.sourceCommitError !== undefined) {
        io.stderr.write(
          `${label(t)}: warning: the source was not told the point committed (${message(r.sourceCommitError)}); the next backup reads more\n`,
        );
      }
    } else if (t.status === 'skipped') {
      io.stderr.write(`${label(t)}: SKIPPED (${t.reason}): ${t.detail}\n`);
    } else {
      io.stderr.write(`${label(t)}: FAILED: ${message(t.error)}\n`);
    }
  }
  for (const hp of options.hostPoints ?? []) {
    io.stdout.write(
      `host ${hp.hostId}: host point ${hp.id} (${hp.pointIds.length} disk(s)); restore it with "drkit restore --host-point ${hp.id} --to <dir>"\n`,
    );
  }
  if (result.unreadablePoints.length > 0) {
    io.stderr.write(
      `warning: ${result.unreadablePoints.length} point(s) cannot be read; a disk whose newest point may be one ` +
        `of them was read in full. Run "drkit verify".\n${unreadableText(result.unreadablePoints)}`,
    );
  }
  if (result.skipped > 0) {
    io.stderr.write(
      `${result.skipped} disk(s) skipped: the platform cannot protect them (see "drkit hosts"); they have no point\n`,
    );
  }
  for (const f of result.releaseFailures) {
    io.stderr.write(
      `host ${f.hostId}: snapshot ${f.snapshot} NOT RELEASED: ${message(f.error)}; ` +
        `it stays in the ledger ("drkit ledger") until a reconcile releases it\n`,
    );
  }
  return backupExitCode(result);
}
