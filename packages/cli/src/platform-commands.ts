import {
  abnormalStatus,
  createBackupEngine,
  type Host,
  type Platform,
  type PlatformStatus,
  type QuiesceMode,
} from '@drkit/core';
import { type ReportedHostPoint, writeBackupReport } from './backup-report.js';
import { type CommandContext, requireConfig, UsageError, withRepository } from './command-context.js';
import type { DrkitConfig } from './config/config-file.js';
import { createProxies, openPlatforms, selectPlatforms } from './config/configured-platforms.js';
import { ExitCode, exitCodeForStatusCode } from './exit-codes.js';
import { formatBytes } from './format.js';
import { hostPointId } from './host-points.js';
import { ProgressBar } from './progress-bar.js';

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

async function loadPlatforms(
  context: CommandContext,
  config: DrkitConfig,
  platformId: string | undefined,
): Promise<Platform[]> {
  return openPlatforms(config, selectPlatforms(config, platformId), {
    env: context.io.env,
    onSecret: (secret) => context.redactor.add(secret),
  });
}

/** The region of a platform that has one (an AWS platform's, discovered or configured). */
function regionOf(platform: Platform): string | undefined {
  const region = (platform as { readonly region?: unknown }).region;
  return typeof region === 'string' && region !== '' ? region : undefined;
}

/** `drkit platforms`: each platform's status, as a console shows it ("status Normal, 12 hosts"). */
export async function platformsCommand(
  context: CommandContext,
  platformId: string | undefined,
): Promise<number> {
  const config = requireConfig(context, 'platforms');
  const { io, json } = context;
  const platforms = await loadPlatforms(context, config, platformId);
  const statuses = await Promise.all(
    platforms.map(async (platform): Promise<PlatformStatus> => {
      try {
        return await platform.verify({ signal: io.signal });
      } catch (error) {
        // verify() reports source problems as `abnormal`; a provider that throws gets the same treatment.
        return abnormalStatus(error, { signal: io.signal });
      }
    }),
  );
  if (json) {
    io.stdout.write(
      `${JSON.stringify(
        platforms.map((p, i) => {
          const region = regionOf(p);
          return { id: p.id, kind: p.kind, ...(region === undefined ? {} : { region }), ...statuses[i]! };
        }),
      )}\n`,
    );
  } else {
    for (const [i, p] of platforms.entries()) {
      const s = statuses[i]!;
      const region = regionOf(p);
      const label = `${p.id} (${p.kind}${region === undefined ? '' : `, ${region}`})`;
      io.stdout.write(
        s.status === 'normal'
          ? `${label}: status Normal, ${plural(s.hostCount, 'host')}\n`
          : `${label}: status Abnormal: ${s.reason}${s.code ? ` (${s.code})` : ''}\n`,
      );
    }
  }
  const abnormal = statuses.find((s) => s.status === 'abnormal');
  return abnormal ? exitCodeForStatusCode(abnormal.code) : ExitCode.ok;
}

function hostJson(host: Host) {
  return {
    platformId: host.platformId,
    id: host.id,
    name: host.name,
    attributes: host.attributes ?? {},
    disks: host.disks.map((d) => ({
      id: d.id,
      name: d.name,
      capacityBytes: d.capacityBytes,
      attributes: d.attributes ?? {},
    })),
    skippedDisks: (host.skippedDisks ?? []).map((d) => ({
      id: d.id,
      name: d.name,
      reason: d.reason,
      detail: d.detail,
    })),
  };
}

function named(name: string, id: string): string {
  return name === id ? name : `${name} (id ${id})`;
}

/** `drkit hosts`: the hosts of the platforms with their disks, and the disks they cannot protect. */
export async function hostsCommand(context: CommandContext, platformId: string | undefined): Promise<number> {
  const config = requireConfig(context, 'hosts');
  const { io, json } = context;
  const platforms = await loadPlatforms(context, config, platformId);
  const listed: ReturnType<typeof hostJson>[] = [];
  for (const platform of platforms) {
    for await (const host of platform.hosts({ signal: io.signal })) {
      if (json) {
        listed.push(hostJson(host));
        continue;
      }
      const skipped = host.skippedDisks ?? [];
      io.stdout.write(
        `${platform.id}: host ${named(host.name, host.id)}, ${plural(host.disks.length, 'disk')}` +
          `${skipped.length > 0 ? `, ${skipped.length} skipped` : ''}\n`,
      );
      for (const d of host.disks)
        io.stdout.write(`  disk ${named(d.name, d.id)}: ${formatBytes(d.capacityBytes)}\n`);
      for (const d of skipped)
        io.stdout.write(`  skipped ${named(d.name, d.id)}: ${d.reason}: ${d.detail}\n`);
    }
  }
  if (json) io.stdout.write(`${JSON.stringify(listed)}\n`);
  return ExitCode.ok;
}

const QUIESCE_MODES: readonly QuiesceMode[] = ['required', 'preferred', 'none'];

/** The options of `drkit backup --platform` the command line gives. */
export interface PlatformBackupOptions {
  readonly platformId: string | undefined;
  readonly hosts: readonly string[];
  readonly full: boolean;
  readonly quiesce: string | undefined;
  readonly chunkSize: number | undefined;
}

/** `drkit backup --platform P --host H…`: backs up hosts of a configured platform. */
export async function platformBackupCommand(
  context: CommandContext,
  options: PlatformBackupOptions,
): Promise<number> {
  const config = requireConfig(context, 'backup --platform');
  const { io, json } = context;
  if (options.hosts.length === 0) {
    throw new UsageError(
      'backup --platform needs at least one --host <host id or name> ("drkit hosts" lists them)',
    );
  }
  let platformId = options.platformId;
  if (platformId === undefined) {
    if (config.platforms.length !== 1) {
      throw new UsageError(
        `name the platform: --platform <id> (one of ${config.platforms.map((p) => p.id).join(', ')})`,
      );
    }
    platformId = config.platforms[0]!.id;
  }
  const quiesce = options.quiesce;
  if (quiesce !== undefined && !(QUIESCE_MODES as readonly string[]).includes(quiesce)) {
    throw new UsageError(`--quiesce takes ${QUIESCE_MODES.join(', ')}, got "${quiesce}"`);
  }
  const platforms = await loadPlatforms(context, config, platformId);
  return withRepository(context, true, async (repository) => {
    const proxies = createProxies(config, platforms, repository);
    const engine = createBackupEngine({
      repository,
      platforms,
      ...(proxies ? { proxies: proxies.registry } : {}),
      ...(config.concurrency === undefined ? {} : { concurrency: config.concurrency }),
      ...(options.chunkSize === undefined ? {} : { chunkSize: options.chunkSize }),
    });
    const bar = new ProgressBar(io.stderr);
    const started = performance.now();
    try {
      const result = await engine.backup({
        platformId,
        hosts: options.hosts,
        full: options.full,
        ...(quiesce === undefined ? {} : { quiesce: quiesce as QuiesceMode }),
        signal: io.signal,
        onProgress: json ? undefined : (p) => bar.update(p),
      });
      bar.finish();
      const seconds = (performance.now() - started) / 1000;
      const hostPoints: ReportedHostPoint[] = (
        await repository.hostPoints({ platformId }, { signal: io.signal })
      )
        .filter((hp) => hp.jobId === result.jobId)
        .map((hp) => ({
          id: hostPointId(hp),
          platformId: hp.platformId,
          hostId: hp.hostId,
          pointIds: hp.points.map((p) => p.id),
        }));
      return writeBackupReport(result, { json, seconds, hostPoints, hostInLabels: true }, io);
    } finally {
      bar.finish();
      await engine.close();
      await proxies?.close();
    }
  });
}
