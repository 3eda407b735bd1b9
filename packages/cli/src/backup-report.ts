import { type BackupJobResult, DrkitError, type UnreadablePoint } from '@drkit/core';
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
 * The exit code of a backup job: 0 when every disk committed and every snapshot was released; the failed disk's
 * own code when the job's only disk failed; 8 (`partial`) when some disks failed; else 11 (`snapshotLeft`) when
 * every disk committed but a source-side snapshot could not be released. Failed disks come first: they matter
 * more, and the snapshots are listed in the output either way.
 */
export function backupExitCode(result: BackupJobResult): number {
  if (result.failed > 0) {
    if (result.succeeded === 0 && result.tasks.length === 1) {
      const first = result.tasks[0];
      return first?.status === 'failed' ? exitCodeFor(first.error) : ExitCode.partial;
    }
    return ExitCode.partial;
  }
  return result.releaseFailures.length > 0 ? ExitCode.snapshotLeft : ExitCode.ok;
}

/**
 * Writes what a backup job did: one JSON document on stdout with `json`, else a line per disk on stdout (a
 * failed disk and a snapshot left behind on stderr). Returns the exit code ({@link backupExitCode}).
 */
export function writeBackupReport(
  result: BackupJobResult,
  options: { readonly json: boolean; readonly seconds: number },
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
        unreadablePoints: result.unreadablePoints.map(unreadableJson),
        tasks: result.tasks.map((t) =>
          t.status === 'succeeded'
            ? { status: t.status, diskId: t.diskId, ...t.result }
            : { status: t.status, diskId: t.diskId, error: errorJson(t.error) },
        ),
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
  for (const t of result.tasks) {
    if (t.status === 'succeeded') {
      const r = t.result;
      const v =
        r.validity.kind === 'full'
          ? `full read (${r.validity.reason}${r.validity.detail ? `: ${r.validity.detail}` : ''})`
          : `${r.validity.kind} incremental`;
      io.stdout.write(
        `${t.diskId}: point ${r.pointId}, ${v}; ${formatBytes(r.capacityBytes)} disk, read ${formatBytes(r.bytesRead)}, ` +
          `wrote ${formatBytes(r.bytesWritten)}, unchanged ${formatBytes(r.bytesSkippedUnchanged)}, ` +
          `deduplicated ${formatBytes(r.bytesDeduplicated)}, zero ${formatBytes(r.bytesZero)}; ` +
          `${formatSeconds(r.seconds)}, ${formatRate(r.bytesDone / Math.max(r.seconds, 1e-9))}\n`,
      );
    } else {
      io.stderr.write(`${t.diskId}: FAILED: ${message(t.error)}\n`);
    }
  }
  if (result.unreadablePoints.length > 0) {
    io.stderr.write(
      `warning: ${result.unreadablePoints.length} point(s) cannot be read; a disk whose newest point may be one ` +
        `of them was read in full. Run "drkit verify".\n${unreadableText(result.unreadablePoints)}`,
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
