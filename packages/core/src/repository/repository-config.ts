import { randomBytes } from 'node:crypto';
import {
  NotFoundError,
  RepositoryCorruptError,
  RepositoryKeyError,
  RepositoryVersionError,
} from '../errors/drkit-error.js';
import { decodeCheckedJson, encodeCheckedJson } from './checked-json.js';
import {
  createFirstKey,
  type RepositoryEncryption,
  type RepositoryKeys,
  unlockRepository,
} from './keyring.js';
import type { Store } from './store.js';

export { decodeCheckedJson, encodeCheckedJson } from './checked-json.js';

/** Store key of the repository configuration. */
export const CONFIG_KEY = 'config';
/** The `format` field of every drkit repository configuration. */
export const REPOSITORY_FORMAT = 'drkit-repository';
/** The repository format version this code writes and reads. */
export const REPOSITORY_FORMAT_VERSION = 2;

/**
 * The feature of an encrypted repository: every blob but `config` and `keys/…` is sealed with AES-256-GCM, and
 * chunk and segment ids are HMAC-SHA-256 under a key of the data key.
 */
export const ENCRYPTION_FEATURE = 'sealed-aes256gcm';
/**
 * The feature of a repository of immutable points: every blob a committed point references is locked in the store
 * (S3 Object Lock) at least until the point's own lock date, by the policy in the configuration's `immutability`.
 */
export const IMMUTABILITY_FEATURE = 'object-lock';
/** The features this drkit reads. */
const KNOWN_FEATURES: readonly string[] = [ENCRYPTION_FEATURE, IMMUTABILITY_FEATURE];

/** The lock policy of a repository of immutable points, as its configuration records it. */
export interface ImmutabilityPolicy {
  /** S3 Object Lock mode of every lock drkit sets: `governance` or `compliance`. */
  readonly mode: 'governance' | 'compliance';
  /** How long a point stays locked after its commit, in milliseconds (its lock date is commit + period). */
  readonly periodMs: number;
  /**
   * How far past the period new chunks are locked, in milliseconds: a chunk reused by later points needs its lock
   * extended only once per window (see the format's "Immutable points").
   */
  readonly windowMs: number;
}

/** The repository configuration stored at the key `config`. */
export interface RepositoryConfig {
  /** Always `drkit-repository`. */
  readonly format: string;
  /** Repository format version (2). */
  readonly version: number;
  /** Random id of the repository (32 lowercase hex digits). */
  readonly id: string;
  /** When the repository was created (ISO 8601). */
  readonly createdAt: string;
  /**
   * Features a reader must know to read the repository: empty, or `sealed-aes256gcm` for an encrypted one. A
   * reader refuses a repository naming a feature it does not know.
   */
  readonly features: readonly string[];
  /** The lock policy, present exactly when `features` has `object-lock`. */
  readonly immutability?: ImmutabilityPolicy;
}

/** Longest period or window accepted: 100 years. */
const MAX_LOCK_MS = 100 * 365 * 24 * 3600 * 1000;

/** The policy of a configuration, or a description of what is wrong with it. */
export function parseImmutabilityPolicy(value: unknown): ImmutabilityPolicy | string {
  if (!isObject(value)) return 'must be an object';
  if (value.mode !== 'governance' && value.mode !== 'compliance')
    return 'mode must be governance or compliance';
  for (const field of ['periodMs', 'windowMs'] as const) {
    const ms = value[field];
    if (typeof ms !== 'number' || !Number.isSafeInteger(ms) || ms < 1000 || ms > MAX_LOCK_MS) {
      return `${field} must be an integer number of milliseconds from 1000 to 100 years`;
    }
  }
  return { mode: value.mode, periodMs: value.periodMs as number, windowMs: value.windowMs as number };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The error for a repository of another format version, saying what to do. */
function versionError(location: string, version: number): RepositoryVersionError {
  const advice =
    version < REPOSITORY_FORMAT_VERSION
      ? 'its indexes are one blob per point, which this drkit no longer reads. Restore or keep its points with the drkit that wrote it (one that reads format 1, `drkit restore`), and back up into a new repository (`drkit backup … --repo <an empty folder>` creates one); there is no in-place upgrade'
      : 'it was written by a newer drkit; use that version';
  return new RepositoryVersionError(
    `the repository at ${location} has format version ${version}; this drkit reads version ${REPOSITORY_FORMAT_VERSION}: ${advice}`,
    version,
    REPOSITORY_FORMAT_VERSION,
  );
}

function parseConfig(bytes: Uint8Array, location: string): RepositoryConfig {
  const what = `the repository configuration "config" at ${location}`;
  const checked = decodeCheckedJson(bytes, what);
  if (checked === undefined) {
    // No checksum line: a version 1 configuration (plain JSON), or not a drkit repository at all.
    let value: unknown;
    try {
      value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
    } catch (error) {
      throw new RepositoryCorruptError(`${what} is not valid JSON and has no checksum line`, {
        cause: error,
      });
    }
    if (isObject(value) && value.format === REPOSITORY_FORMAT && Number.isSafeInteger(value.version)) {
      if (value.version !== REPOSITORY_FORMAT_VERSION) throw versionError(location, value.version as number);
    }
    throw new RepositoryCorruptError(`${what} has no checksum line: it is damaged or not a drkit repository`);
  }
  const config = checked.value;
  if (!isObject(config) || config.format !== REPOSITORY_FORMAT) {
    throw new RepositoryCorruptError(
      `${location} has a "config" blob that is not a drkit repository configuration`,
    );
  }
  if (!Number.isSafeInteger(config.version)) {
    throw new RepositoryCorruptError(`${what} has no integer version`);
  }
  if (config.version !== REPOSITORY_FORMAT_VERSION) throw versionError(location, config.version as number);
  if (typeof config.id !== 'string' || !/^[0-9a-f]{32}$/.test(config.id)) {
    throw new RepositoryCorruptError(`${what} has no valid id`);
  }
  if (typeof config.createdAt !== 'string' || Number.isNaN(Date.parse(config.createdAt))) {
    throw new RepositoryCorruptError(`${what} has no valid createdAt`);
  }
  if (!Array.isArray(config.features) || !config.features.every((f) => typeof f === 'string')) {
    throw new RepositoryCorruptError(`${what} has no valid features list`);
  }
  const unknown = config.features.filter((feature) => !KNOWN_FEATURES.includes(feature));
  if (unknown.length > 0) {
    throw new RepositoryVersionError(
      `the repository at ${location} needs features this drkit does not know (${unknown.join(', ')}); use a newer drkit`,
      config.version as number,
      REPOSITORY_FORMAT_VERSION,
    );
  }
  const features = [...new Set(config.features as string[])];
  let immutability: ImmutabilityPolicy | undefined;
  if (features.includes(IMMUTABILITY_FEATURE)) {
    const policy = parseImmutabilityPolicy(config.immutability);
    if (typeof policy === 'string') {
      throw new RepositoryCorruptError(`${what} has the object-lock feature but its immutability ${policy}`);
    }
    immutability = policy;
  }
  return {
    format: config.format,
    version: config.version as number,
    id: config.id,
    createdAt: config.createdAt,
    features,
    ...(immutability === undefined ? {} : { immutability }),
  };
}

/** Whether a configuration names the repository encrypted. */
export function isEncrypted(config: RepositoryConfig): boolean {
  return config.features.includes(ENCRYPTION_FEATURE);
}

/** What {@link loadRepositoryConfig} returns: the configuration, and the keys of an encrypted repository. */
export interface LoadedRepository {
  readonly config: RepositoryConfig;
  readonly keys: RepositoryKeys | undefined;
}

/** Reads the configuration, or undefined when there is none. */
async function readConfig(
  store: Store,
  where: string,
  signal: AbortSignal | undefined,
): Promise<RepositoryConfig | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await store.get(CONFIG_KEY, { signal });
  } catch (error) {
    if (NotFoundError.isInstance(error)) return undefined;
    throw error;
  }
  return parseConfig(bytes, where);
}

/** Unlocks a repository read from the store, or refuses an `encryption` it has no use for. */
async function unlock(
  store: Store,
  config: RepositoryConfig,
  encryption: RepositoryEncryption | undefined,
  where: string,
  signal: AbortSignal | undefined,
): Promise<LoadedRepository> {
  if (!isEncrypted(config)) {
    if (encryption !== undefined) {
      throw new RepositoryKeyError(
        `the repository in the ${where} is not encrypted; open it without a passphrase or key (a new encrypted repository needs an empty store)`,
      );
    }
    return { config, keys: undefined };
  }
  if (encryption === undefined) {
    throw new RepositoryKeyError(
      `the repository in the ${where} is encrypted; give its passphrase or key (the CLI: DRKIT_PASSPHRASE or --passphrase-file)`,
    );
  }
  return { config, keys: await unlockRepository(store, config.id, encryption, where, signal) };
}

/**
 * Reads the configuration and, for an encrypted repository, unlocks its data key; with `create` and no
 * configuration, initialises the repository first (with `encryption`, an encrypted one: its first key blob is
 * written, durable, before the configuration, which is written create-only, so two processes initialising the
 * same store at once end up with one configuration). Nothing is written when the configuration exists.
 *
 * @throws {@link NotFoundError} when there is no configuration and `create` is false;
 * {@link RepositoryKeyError} when `encryption` does not unlock the repository, is given for one that is not
 * encrypted, or is missing for one that is; {@link RepositoryVersionError} when it is of another format version
 * (version 1: see its message); {@link RepositoryCorruptError} naming the blob when it is damaged.
 */
export async function loadRepositoryConfig(
  store: Store,
  create: boolean,
  signal: AbortSignal | undefined,
  encryption?: RepositoryEncryption,
  immutability?: ImmutabilityPolicy,
): Promise<LoadedRepository> {
  const where = `${store.kind} store ${store.location}`;
  const found = await readConfig(store, where, signal);
  if (found !== undefined) return unlock(store, found, encryption, where, signal);
  if (!create) {
    throw new NotFoundError(
      `there is no drkit repository in the ${where}; initialise one with openRepository({ store, create: true }) (the CLI: drkit init)`,
    );
  }
  const config: RepositoryConfig = {
    format: REPOSITORY_FORMAT,
    version: REPOSITORY_FORMAT_VERSION,
    id: randomBytes(16).toString('hex'),
    createdAt: new Date().toISOString(),
    features: [
      ...(encryption === undefined ? [] : [ENCRYPTION_FEATURE]),
      ...(immutability === undefined ? [] : [IMMUTABILITY_FEATURE]),
    ],
    ...(immutability === undefined ? {} : { immutability }),
  };
  const keys =
    encryption === undefined ? undefined : await createFirstKey(store, config.id, encryption, signal);
  if (await store.put(CONFIG_KEY, encodeCheckedJson(config), { ifAbsent: true, signal }))
    return { config, keys };
  // Another process initialised the store first: its repository is the one, and this key blob belongs to none.
  if (keys !== undefined) await store.delete(keys.keyBlob, { signal });
  const theirs = await readConfig(store, where, signal);
  if (theirs === undefined) throw new RepositoryCorruptError(`the configuration in the ${where} vanished`);
  return unlock(store, theirs, encryption, where, signal);
}
