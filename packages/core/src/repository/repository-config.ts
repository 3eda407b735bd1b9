import { randomBytes } from 'node:crypto';
import { NotFoundError, RepositoryCorruptError } from '../errors/drkit-error.js';
import type { Store } from './store.js';

/** Store key of the repository configuration. */
export const CONFIG_KEY = 'config';
/** The `format` field of every drkit repository configuration. */
export const REPOSITORY_FORMAT = 'drkit-repository';
/** The repository format version this code writes and reads. */
export const REPOSITORY_FORMAT_VERSION = 1;

/** The repository configuration stored at the key `config`. */
export interface RepositoryConfig {
  /** Always `drkit-repository`. */
  readonly format: string;
  /** Repository format version (1). */
  readonly version: number;
  /** Random id of the repository (32 lowercase hex digits). */
  readonly id: string;
  /** When the repository was created (ISO 8601). */
  readonly createdAt: string;
}

function parseConfig(bytes: Uint8Array, location: string): RepositoryConfig {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (error) {
    throw new RepositoryCorruptError(`the repository configuration at ${location} is not valid JSON`, {
      cause: error,
    });
  }
  const config = value as Partial<RepositoryConfig> | null;
  if (typeof config !== 'object' || config === null || config.format !== REPOSITORY_FORMAT) {
    throw new RepositoryCorruptError(
      `${location} has a "config" blob that is not a drkit repository configuration`,
    );
  }
  if (config.version !== REPOSITORY_FORMAT_VERSION) {
    throw new RepositoryCorruptError(
      `the repository at ${location} has format version ${JSON.stringify(config.version)}; this drkit reads version ${REPOSITORY_FORMAT_VERSION} (use a drkit that supports it)`,
    );
  }
  if (typeof config.id !== 'string' || !/^[0-9a-f]{32}$/.test(config.id)) {
    throw new RepositoryCorruptError(`the repository configuration at ${location} has no valid id`);
  }
  if (typeof config.createdAt !== 'string' || Number.isNaN(Date.parse(config.createdAt))) {
    throw new RepositoryCorruptError(`the repository configuration at ${location} has no valid createdAt`);
  }
  return { format: config.format, version: config.version, id: config.id, createdAt: config.createdAt };
}

/**
 * Reads the configuration, creating it first when `create` is true and none exists (create-only, so two
 * processes initialising the same store at once end up with one configuration).
 *
 * @throws {@link NotFoundError} when there is no configuration and `create` is false;
 * {@link RepositoryCorruptError} when it is unreadable or of an unknown version.
 */
export async function loadRepositoryConfig(
  store: Store,
  create: boolean,
  signal: AbortSignal | undefined,
): Promise<RepositoryConfig> {
  const where = `${store.kind} store ${store.location}`;
  if (create) {
    const config: RepositoryConfig = {
      format: REPOSITORY_FORMAT,
      version: REPOSITORY_FORMAT_VERSION,
      id: randomBytes(16).toString('hex'),
      createdAt: new Date().toISOString(),
    };
    const bytes = new TextEncoder().encode(`${JSON.stringify(config, null, 2)}\n`);
    if (await store.put(CONFIG_KEY, bytes, { ifAbsent: true, signal })) return config;
  }
  try {
    return parseConfig(await store.get(CONFIG_KEY, { signal }), where);
  } catch (error) {
    if (NotFoundError.isInstance(error)) {
      throw new NotFoundError(
        `there is no drkit repository in the ${where}; initialise one with openRepository({ store, create: true }) (the CLI: drkit init)`,
        { cause: error },
      );
    }
    throw error;
  }
}
