import { createRequire } from 'node:module';
import { isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { InvalidSettingsError, type Platform } from '@drkit/core';
import { ProviderNotFoundError } from './config-errors.js';

/** Which export of which package (or module file) creates a platform. */
export interface ProviderReference {
  /** An npm package name, or the path (relative to the configuration file) or `file:` URL of an ES module. */
  readonly package: string;
  /** The name of the factory the module exports: `createLocalDiskPlatform`. */
  readonly factory: string;
}

/** Short names of drkit's own providers. */
export const PROVIDER_ALIASES: Readonly<Record<string, ProviderReference>> = Object.freeze({
  'local-disk': { package: '@drkit/provider-agent', factory: 'createLocalDiskPlatform' },
  'openstack-ceph': { package: '@drkit/provider-openstack-ceph', factory: 'createOpenStackCephPlatform' },
  'ceph-rbd': { package: '@drkit/provider-openstack-ceph', factory: 'createCephRbdPlatform' },
  // The region may be omitted: openAwsPlatform discovers it (DescribeRegions, then where the instances are).
  aws: { package: '@drkit/provider-aws', factory: 'openAwsPlatform' },
});

/** Whether a `package` value names a module file rather than a package. */
function isModulePath(name: string): boolean {
  return name.startsWith('file:') || name.startsWith('./') || name.startsWith('../') || isAbsolute(name);
}

/** `@scope/name` or `name` of a bare specifier that may name a subpath. */
function packageNameOf(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

/** Whether a module-loading error says that `name` itself (not one of its dependencies) is missing. */
function isMissing(error: unknown, name: string): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  return (
    (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') &&
    typeof message === 'string' &&
    message.includes(`'${name}'`)
  );
}

function loadFailed(field: string, name: string, error: unknown): InvalidSettingsError {
  const message = error instanceof Error ? error.message : String(error);
  return new InvalidSettingsError(field, `cannot load ${name}: ${message}`, { cause: error });
}

/**
 * Imports a provider module: a module file by its path or URL; a package first as drkit itself resolves it
 * (drkit's own providers, anything installed beside drkit), then from the configuration file's folder (its
 * `node_modules`).
 *
 * @throws {@link ProviderNotFoundError} when the package or file does not exist; {@link InvalidSettingsError}
 * when it exists but fails to load.
 */
export async function importProvider(
  reference: ProviderReference,
  field: string,
  baseDir: string,
): Promise<Record<string, unknown>> {
  const name = reference.package;
  if (isModulePath(name)) {
    const url = name.startsWith('file:') ? name : pathToFileURL(resolve(baseDir, name)).href;
    try {
      return (await import(url)) as Record<string, unknown>;
    } catch (error) {
      const code = (error as { code?: unknown } | null)?.code;
      if (
        code === 'ERR_MODULE_NOT_FOUND' &&
        String((error as Error).message).includes(new URL(url).pathname)
      ) {
        throw new ProviderNotFoundError(field, name, `there is no module at ${new URL(url).pathname}`);
      }
      throw loadFailed(field, name, error);
    }
  }
  const packageName = packageNameOf(name);
  try {
    return (await import(name)) as Record<string, unknown>;
  } catch (error) {
    if (!isMissing(error, packageName)) throw loadFailed(field, name, error);
  }
  let resolved: string | undefined;
  try {
    resolved = createRequire(join(baseDir, 'drkit-config.js')).resolve(name);
  } catch (error) {
    if (!isMissing(error, name) && !isMissing(error, packageName)) throw loadFailed(field, name, error);
  }
  if (resolved === undefined) {
    throw new ProviderNotFoundError(
      field,
      name,
      `cannot find the provider package ${name}: install it beside drkit or in the configuration file's folder (npm install ${packageName})`,
    );
  }
  try {
    return (await import(pathToFileURL(resolved).href)) as Record<string, unknown>;
  } catch (error) {
    throw loadFailed(field, name, error);
  }
}

/** Names the functions a module exports, for a message. */
function exportedFunctions(module: Record<string, unknown>): string {
  const names = Object.keys(module).filter((key) => typeof module[key] === 'function');
  return names.length === 0 ? 'no function' : names.join(', ');
}

/** Re-labels a factory's settings error with the configuration's path to the field. */
function inConfig(error: unknown, optionsField: string): unknown {
  if (!InvalidSettingsError.isInstance(error)) return error;
  const own = error.message.startsWith(`${error.field}: `)
    ? error.message.slice(error.field.length + 2)
    : error.message;
  const field = error.field === 'options' ? optionsField : `${optionsField}.${error.field}`;
  return new InvalidSettingsError(field, own, { cause: error });
}

/**
 * Creates a platform: imports the provider, calls its factory with the options and the configured `id`, and
 * checks that what it returns is a platform of the provider specification v2 with that id.
 *
 * @throws {@link ProviderNotFoundError}; {@link InvalidSettingsError} naming the field (`platforms[0].options.disks`)
 * when the factory refuses its options, or `platforms[0].provider` when the module is not a v2 provider.
 */
export async function createConfiguredPlatform(spec: {
  readonly id: string;
  readonly provider: ProviderReference;
  readonly options: Readonly<Record<string, unknown>>;
  /** `platforms[i]`. */
  readonly field: string;
  readonly baseDir: string;
}): Promise<Platform> {
  const { provider, field } = spec;
  const module = await importProvider(provider, `${field}.provider.package`, spec.baseDir);
  const factory = module[provider.factory];
  const where = `${provider.package} ${provider.factory}`;
  if (typeof factory !== 'function') {
    throw new InvalidSettingsError(
      `${field}.provider.factory`,
      `${provider.package} exports no function ${provider.factory} (it exports ${exportedFunctions(module)})`,
    );
  }
  let platform: unknown;
  try {
    platform = await (factory as (options: unknown) => unknown)({ ...spec.options, id: spec.id });
  } catch (error) {
    throw inConfig(error, `${field}.options`);
  }
  const p = platform as Partial<Platform> | null;
  if (
    typeof p !== 'object' ||
    p === null ||
    typeof p.id !== 'string' ||
    typeof p.kind !== 'string' ||
    typeof p.verify !== 'function' ||
    typeof p.hosts !== 'function' ||
    typeof p.changedBlockReader !== 'object' ||
    typeof p.capabilities !== 'object'
  ) {
    throw new InvalidSettingsError(`${field}.provider`, `${where} did not return a platform`);
  }
  if (p.specificationVersion !== 'v2') {
    throw new InvalidSettingsError(
      `${field}.provider`,
      `${where} implements the provider specification ${String(p.specificationVersion)}; this drkit implements v2: install a version of ${provider.package} that implements v2`,
    );
  }
  if (p.id !== spec.id) {
    throw new InvalidSettingsError(
      `${field}.provider`,
      `${where} ignored the id it was given (${spec.id}) and returned a platform with id ${p.id}`,
    );
  }
  return p as Platform;
}
