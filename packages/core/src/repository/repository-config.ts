import { createHash, randomBytes } from 'node:crypto';
import { NotFoundError, RepositoryCorruptError, RepositoryVersionError } from '../errors/drkit-error.js';
import type { Store } from './store.js';

/** Store key of the repository configuration. */
export const CONFIG_KEY = 'config';
/** The `format` field of every drkit repository configuration. */
export const REPOSITORY_FORMAT = 'drkit-repository';
/** The repository format version this code writes and reads. */
export const REPOSITORY_FORMAT_VERSION = 2;

/** What starts the checksum line that ends every checked JSON blob (config, point metadata). */
const CHECKSUM_PREFIX = 'drkit-sha256:';
/** Bytes of the checksum line: the prefix, 64 hex digits and a line feed. */
const CHECKSUM_LINE_BYTES = CHECKSUM_PREFIX.length + 64 + 1;

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
   * Features a reader must know to read the repository (none in this version; encryption will add one). A
   * reader refuses a repository naming a feature it does not know.
   */
  readonly features: readonly string[];
}

/**
 * Serialises a JSON document as a checked blob: the pretty-printed document and a line feed, then the line
 * `drkit-sha256:<64 hex>` and a line feed, the hex being the SHA-256 of every byte before that line.
 */
export function encodeCheckedJson(value: unknown): Uint8Array {
  const document = Buffer.from(`${JSON.stringify(value, null, 2)}\n`, 'utf8');
  const digest = createHash('sha256').update(document).digest('hex');
  return Buffer.concat([document, Buffer.from(`${CHECKSUM_PREFIX}${digest}\n`, 'ascii')]);
}

/**
 * Checks and parses a checked JSON blob (see {@link encodeCheckedJson}).
 *
 * @returns the parsed document, or `undefined` when the blob does not end with a checksum line at all (a
 * version 1 blob, or not a drkit blob).
 * @throws {@link RepositoryCorruptError} naming `what` when the checksum does not match or the document is not
 * UTF-8 JSON.
 */
export function decodeCheckedJson(bytes: Uint8Array, what: string): { value: unknown } | undefined {
  const tail = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (tail.byteLength < CHECKSUM_LINE_BYTES) return undefined;
  const lineStart = tail.byteLength - CHECKSUM_LINE_BYTES;
  const line = tail.subarray(lineStart).toString('latin1');
  if (!line.startsWith(CHECKSUM_PREFIX) || !line.endsWith('\n')) return undefined;
  if (lineStart > 0 && tail[lineStart - 1] !== 0x0a) return undefined;
  const recorded = line.slice(CHECKSUM_PREFIX.length, -1);
  if (!/^[0-9a-f]{64}$/.test(recorded)) {
    throw new RepositoryCorruptError(`${what} is damaged: its checksum line is not 64 lowercase hex digits`);
  }
  const document = tail.subarray(0, lineStart);
  const digest = createHash('sha256').update(document).digest('hex');
  if (digest !== recorded) {
    throw new RepositoryCorruptError(
      `${what} is damaged: its content hashes to ${digest}, its checksum line records ${recorded}`,
    );
  }
  try {
    return { value: JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(document)) };
  } catch (error) {
    throw new RepositoryCorruptError(`${what} is damaged: it is not valid UTF-8 JSON`, { cause: error });
  }
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
  if (config.features.length > 0) {
    throw new RepositoryVersionError(
      `the repository at ${location} needs features this drkit does not know (${config.features.join(', ')}); use a newer drkit`,
      config.version as number,
      REPOSITORY_FORMAT_VERSION,
    );
  }
  return {
    format: config.format,
    version: config.version as number,
    id: config.id,
    createdAt: config.createdAt,
    features: [],
  };
}

/**
 * Reads the configuration, creating it first when `create` is true and none exists (create-only, so two
 * processes initialising the same store at once end up with one configuration).
 *
 * @throws {@link NotFoundError} when there is no configuration and `create` is false;
 * {@link RepositoryVersionError} when it is of another format version (version 1: see its message);
 * {@link RepositoryCorruptError} naming the blob when it is damaged.
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
      features: [],
    };
    if (await store.put(CONFIG_KEY, encodeCheckedJson(config), { ifAbsent: true, signal })) return config;
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
