import { lstat, mkdir } from 'node:fs/promises';
import { extname, join, resolve } from 'node:path';
import {
  type HostPoint,
  InvalidArgumentError,
  NotFoundError,
  type RecoveryPoint,
  type Repository,
} from '@drkit/core';
import { ExitCode } from './exit-codes.js';
import { formatBytes, formatRate, formatSeconds, table } from './format.js';
import { ProgressBar } from './progress-bar.js';

/**
 * The id of a host point: the id of its first point (the oldest). Unique, and what `drkit host-points` lists
 * and `drkit restore --host-point` takes (which also takes the job id of a job that backed up one host).
 */
export function hostPointId(hostPoint: HostPoint): string {
  return hostPoint.points[0]!.id;
}

/**
 * The host point with that id, or the one host point of the job with that id.
 *
 * @throws {@link NotFoundError} when there is none; {@link InvalidArgumentError} when a job id names several.
 */
export function findHostPoint(list: readonly HostPoint[], id: string): HostPoint {
  const byId = list.find((hp) => hostPointId(hp) === id);
  if (byId) return byId;
  const byJob = list.filter((hp) => hp.jobId === id);
  if (byJob.length === 1) return byJob[0]!;
  if (byJob.length > 1) {
    throw new InvalidArgumentError(
      `job ${id} backed up ${byJob.length} hosts; name one of its host points: ${byJob.map((hp) => `${hostPointId(hp)} (host ${hp.hostId})`).join(', ')}`,
    );
  }
  throw new NotFoundError(`no host point ${id} in the repository; "drkit host-points" lists them`);
}

/** A host point in `--json` output. */
export function hostPointJson(hp: HostPoint) {
  const first = hp.points[0]!;
  return {
    id: hostPointId(hp),
    platformId: hp.platformId,
    hostId: hp.hostId,
    hostName: first.hostName,
    jobId: hp.jobId ?? null,
    snapshotAt: hp.snapshotAt,
    consistency: hp.consistency,
    points: hp.points.map((p) => ({
      id: p.id,
      diskId: p.diskId,
      diskName: p.diskName,
      sizeBytes: p.capacityBytes,
    })),
  };
}

/** `drkit host-points`: the points grouped per host and job. */
export async function listHostPoints(
  repository: Repository,
  filter: { platformId?: string; hostId?: string },
  json: boolean,
  io: { stdout: { write(text: string): unknown }; signal?: AbortSignal },
): Promise<number> {
  const list = await repository.hostPoints(filter, { signal: io.signal });
  if (json) {
    io.stdout.write(`${JSON.stringify(list.map(hostPointJson))}\n`);
    return ExitCode.ok;
  }
  if (list.length === 0) {
    io.stdout.write('no host points\n');
    return ExitCode.ok;
  }
  const rows = [['ID', 'SNAPSHOT TIME', 'PLATFORM', 'HOST', 'DISKS', 'SIZE', 'CONSISTENCY']];
  for (const hp of list) {
    rows.push([
      hostPointId(hp),
      hp.snapshotAt,
      hp.platformId,
      hp.points[0]!.hostName,
      String(hp.points.length),
      formatBytes(hp.points.reduce((sum, p) => sum + p.capacityBytes, 0)),
      hp.consistency,
    ]);
  }
  io.stdout.write(`${table(rows)}\n`);
  return ExitCode.ok;
}

/** A file name from a disk name: `/var/lib/images/vm1.img` → `var_lib_images_vm1.img`, `Hard disk 1` → `Hard_disk_1`. */
function safeName(name: string): string {
  return name
    .replace(/[^A-Za-z0-9._-]+/g, '_')
    .replace(/^[._-]+/, '')
    .replace(/_+$/, '')
    .slice(0, 200);
}

/**
 * One file name per point, named after its disk (its name, else its id), unique among them: a second disk of
 * the same name gets `-2` before the extension.
 */
export function diskFileNames(points: readonly RecoveryPoint[]): string[] {
  const used = new Set<string>();
  return points.map((p, i) => {
    const base = safeName(p.diskName) || safeName(p.diskId) || `disk-${i + 1}`;
    let name = base;
    for (let n = 2; used.has(name); n++) {
      const ext = extname(base);
      name = `${base.slice(0, base.length - ext.length)}-${n}${ext}`;
    }
    used.add(name);
    return name;
  });
}

/**
 * `drkit restore --host-point <id> --to <dir>`: restores every disk of a host point into a file of `dir` named
 * after the disk. Refuses, before writing anything, when one of the files exists.
 */
export async function restoreHostPoint(
  repository: Repository,
  id: string,
  to: string,
  json: boolean,
  io: {
    stdout: { write(text: string): unknown };
    stderr: NodeJS.WriteStream;
    signal?: AbortSignal;
  },
): Promise<number> {
  const hostPoint = findHostPoint(await repository.hostPoints({}, { signal: io.signal }), id);
  const dir = resolve(to);
  const names = diskFileNames(hostPoint.points);
  const targets = names.map((name) => join(dir, name));
  await mkdir(dir, { recursive: true });
  const existing: string[] = [];
  for (const target of targets) {
    try {
      await lstat(target);
      existing.push(target);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }
  if (existing.length > 0) {
    throw new InvalidArgumentError(
      `refusing to overwrite ${existing.join(', ')}: restore a host point into an empty folder (or remove them)`,
    );
  }
  if (
    hostPoint.points.length > 1 &&
    hostPoint.consistency !== 'host' &&
    hostPoint.consistency !== 'application'
  ) {
    io.stderr.write(
      `warning: the disks of host point ${hostPointId(hostPoint)} were not snapshotted together (consistency ${hostPoint.consistency}): they may not be consistent with each other\n`,
    );
  }
  const total = hostPoint.points.reduce((sum, p) => sum + p.capacityBytes, 0);
  const bar = new ProgressBar(io.stderr);
  const started = performance.now();
  const disks: { pointId: string; diskId: string; diskName: string; path: string; bytes: number }[] = [];
  let before = 0;
  try {
    for (const [i, point] of hostPoint.points.entries()) {
      const path = targets[i]!;
      const { bytes } = await repository.restore(
        point.id,
        { path },
        {
          signal: io.signal,
          onProgress: json
            ? undefined
            : (p) => bar.updateBytes('restore', before + p.bytesDone, total, started),
        },
      );
      before += bytes;
      disks.push({ pointId: point.id, diskId: point.diskId, diskName: point.diskName, path, bytes });
      if (!json) {
        bar.finish();
        io.stdout.write(`restored ${point.id} (${point.diskName}, ${formatBytes(bytes)}) to ${path}\n`);
      }
    }
  } finally {
    bar.finish();
  }
  const seconds = (performance.now() - started) / 1000;
  if (json) {
    const {
      id: hostPointIdValue,
      platformId,
      hostId,
      hostName,
      jobId,
      snapshotAt,
      consistency,
    } = hostPointJson(hostPoint);
    io.stdout.write(
      `${JSON.stringify({ hostPointId: hostPointIdValue, platformId, hostId, hostName, jobId, snapshotAt, consistency, destination: dir, bytes: before, seconds, disks })}\n`,
    );
  } else {
    io.stdout.write(
      `restored host point ${hostPointId(hostPoint)} of host ${hostPoint.points[0]!.hostName} (${disks.length} disk(s), ${formatBytes(before)}) to ${dir} in ${formatSeconds(seconds)}, ${formatRate(before / Math.max(seconds, 1e-9))}\n`,
    );
  }
  return ExitCode.ok;
}
