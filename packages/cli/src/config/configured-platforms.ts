import {
  createInProcessSyncProxy,
  type InProcessSyncProxy,
  NotFoundError,
  type Platform,
  type Repository,
  SyncProxyRegistry,
} from '@drkit/core';
import type { DrkitConfig, PlatformConfig } from './config-file.js';
import { createConfiguredPlatform } from './providers.js';
import { resolveSecretReferences } from './secrets.js';

/** The platforms of a configuration, by id. */
export function selectPlatforms(config: DrkitConfig, id: string | undefined): PlatformConfig[] {
  if (id === undefined) return [...config.platforms];
  const found = config.platforms.find((p) => p.id === id);
  if (!found) {
    throw new NotFoundError(
      `no platform ${id} in ${config.file} (its platforms: ${config.platforms.map((p) => p.id).join(', ') || 'none'})`,
    );
  }
  return [found];
}

/**
 * Creates the platforms: resolves each one's secret references (handing every secret to `onSecret` first), then
 * imports its provider and calls (and awaits) the factory. The factories of drkit's providers contact nothing,
 * except the `aws` alias's without a `region`, which discovers it (EC2 DescribeRegions and DescribeInstances).
 */
export async function openPlatforms(
  config: DrkitConfig,
  selected: readonly PlatformConfig[],
  context: { readonly env: NodeJS.ProcessEnv; readonly onSecret: (secret: string) => void },
): Promise<Platform[]> {
  const platforms: Platform[] = [];
  for (const spec of selected) {
    const options = (await resolveSecretReferences(spec.options, `${spec.field}.options`, {
      env: context.env,
      baseDir: config.dir,
      onSecret: context.onSecret,
    })) as Record<string, unknown>;
    platforms.push(
      await createConfiguredPlatform({
        id: spec.id,
        provider: spec.provider,
        options,
        field: spec.field,
        baseDir: config.dir,
      }),
    );
  }
  return platforms;
}

/** The Sync Proxies of the configuration, registered and bound; `close()` stops their worker threads. */
export interface ConfiguredProxies {
  readonly registry: SyncProxyRegistry;
  close(): Promise<void>;
}

/**
 * Creates the configured in-process Sync Proxies, each bound to those of `platforms` it lists. Undefined when
 * the file configures none: the engine then runs one in-process proxy bound to every platform.
 */
export function createProxies(
  config: DrkitConfig,
  platforms: readonly Platform[],
  repository: Repository,
): ConfiguredProxies | undefined {
  if (config.proxies === undefined) return undefined;
  const registry = new SyncProxyRegistry();
  const created: InProcessSyncProxy[] = [];
  for (const proxy of config.proxies) {
    const bound = platforms.filter((p) => proxy.platformIds.includes(p.id));
    if (bound.length === 0) continue;
    const instance = createInProcessSyncProxy({
      id: proxy.id,
      ...(proxy.name === undefined ? {} : { name: proxy.name }),
      settings: proxy.settings,
      platforms: bound,
      repository,
    });
    created.push(instance);
    registry.register(instance);
    for (const platform of bound) registry.bind(instance.id, platform.id);
  }
  return {
    registry,
    async close() {
      await Promise.all(created.map((proxy) => proxy.close()));
    },
  };
}
