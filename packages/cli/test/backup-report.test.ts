import { type BackupJobResult, UnreachableError } from '@drkit/core';
import { describe, expect, it } from 'vitest';
import { backupExitCode, writeBackupReport } from '../src/backup-report.js';
import { ExitCode } from '../src/exit-codes.js';

function sink() {
  const chunks: string[] = [];
  return { write: (text: string) => chunks.push(text), text: () => chunks.join('') };
}

const committed = {
  status: 'succeeded' as const,
  taskId: 'job-1/vm-1/d1',
  hostId: 'vm-1',
  diskId: 'd1',
  proxyId: 'in-process',
  result: {
    taskId: 'job-1/vm-1/d1',
    pointId: '20261201T101500123-1a2b3c4d',
    validity: { kind: 'exact' as const },
    consistency: 'host',
    capacityBytes: 1024,
    chunkCount: 1,
    seconds: 1,
    bytesRead: 1024,
    bytesWritten: 100,
    bytesSkippedUnchanged: 0,
    bytesDeduplicated: 0,
    bytesZero: 0,
    bytesDone: 1024,
  },
};

const leftBehind = {
  platformId: 'vcenter-1',
  hostId: 'vm-1',
  snapshot: 'drkit-20261201T101500Z-abcdef',
  entryId: 'entry-1',
  error: new UnreachableError('vCenter did not answer'),
};

function job(overrides: Partial<BackupJobResult>): BackupJobResult {
  return {
    jobId: 'job-1',
    tasks: [committed],
    succeeded: 1,
    failed: 0,
    skipped: 0,
    unreadablePoints: [],
    releaseFailures: [],
    ...overrides,
  };
}

describe('the backup report', () => {
  it('shows a snapshot that was not released and exits 11 although every disk committed', () => {
    const stdout = sink();
    const stderr = sink();
    const code = writeBackupReport(
      job({ releaseFailures: [leftBehind] }),
      { json: false, seconds: 1 },
      { stdout, stderr },
    );
    expect(code).toBe(ExitCode.snapshotLeft);
    expect(code).toBe(11);
    expect(stdout.text()).toContain('d1: point 20261201T101500123-1a2b3c4d');
    expect(stderr.text()).toContain(
      'host vm-1: snapshot drkit-20261201T101500Z-abcdef NOT RELEASED: vCenter did not answer',
    );
    expect(stderr.text()).toContain('drkit ledger');
  });

  it('lists release failures in the JSON document', () => {
    const stdout = sink();
    const code = writeBackupReport(
      job({ releaseFailures: [leftBehind] }),
      { json: true, seconds: 1 },
      { stdout, stderr: sink() },
    );
    expect(code).toBe(ExitCode.snapshotLeft);
    const document = JSON.parse(stdout.text());
    expect(document.releaseFailures).toEqual([
      {
        platformId: 'vcenter-1',
        hostId: 'vm-1',
        snapshot: 'drkit-20261201T101500Z-abcdef',
        entryId: 'entry-1',
        error: expect.objectContaining({ code: 'UNREACHABLE', message: 'vCenter did not answer' }),
      },
    ]);
  });

  it('exits 0 when all went well, and a failed disk outranks a snapshot left behind', () => {
    expect(backupExitCode(job({}))).toBe(ExitCode.ok);
    const failed = {
      status: 'failed' as const,
      taskId: 'job-1/vm-1/d2',
      hostId: 'vm-1',
      diskId: 'd2',
      proxyId: undefined,
      error: new Error('boom'),
    };
    expect(
      backupExitCode(
        job({ tasks: [committed, failed], succeeded: 1, failed: 1, releaseFailures: [leftBehind] }),
      ),
    ).toBe(ExitCode.partial);
  });

  it('exits 12 for skipped disks, after failed disks and before a snapshot left behind, and lists them', () => {
    const skipped = {
      status: 'skipped' as const,
      taskId: 'job-1/vm-1/cdrom',
      hostId: 'vm-1',
      diskId: 'cdrom',
      proxyId: undefined,
      reason: 'unsupported-disk',
      detail: 'an ISO image is not a disk',
    };
    const failed = {
      status: 'failed' as const,
      taskId: 'job-1/vm-1/d2',
      hostId: 'vm-1',
      diskId: 'd2',
      proxyId: undefined,
      error: new UnreachableError('gone'),
    };
    const withSkipped = job({ tasks: [committed, skipped], skipped: 1, releaseFailures: [leftBehind] });
    expect(backupExitCode(withSkipped)).toBe(ExitCode.skipped);
    expect(ExitCode.skipped).toBe(12);
    expect(backupExitCode(job({ tasks: [skipped], succeeded: 0, skipped: 1 }))).toBe(12);
    // The one disk read failed: its own code, whatever was skipped.
    expect(backupExitCode(job({ tasks: [failed, skipped], succeeded: 0, failed: 1, skipped: 1 }))).toBe(
      ExitCode.unreachable,
    );
    expect(
      backupExitCode(job({ tasks: [committed, failed, skipped], succeeded: 1, failed: 1, skipped: 1 })),
    ).toBe(ExitCode.partial);

    const stdout = sink();
    const stderr = sink();
    writeBackupReport(withSkipped, { json: false, seconds: 1, hostInLabels: true }, { stdout, stderr });
    expect(stdout.text()).toContain('vm-1/d1: point 20261201T101500123-1a2b3c4d');
    expect(stderr.text()).toContain('vm-1/cdrom: SKIPPED (unsupported-disk): an ISO image is not a disk');
    const json = sink();
    writeBackupReport(withSkipped, { json: true, seconds: 1 }, { stdout: json, stderr: sink() });
    const document = JSON.parse(json.text());
    expect(document.skipped).toBe(1);
    expect(document.tasks[1]).toEqual({
      status: 'skipped',
      taskId: 'job-1/vm-1/cdrom',
      hostId: 'vm-1',
      diskId: 'cdrom',
      reason: 'unsupported-disk',
      detail: 'an ISO image is not a disk',
    });
  });
});
