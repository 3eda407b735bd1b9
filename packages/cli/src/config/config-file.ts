import { readFile } from 'node:fs/promises';
import { dirname, extname, resolve } from 'node:path';
import {
  type ImmutabilityOptions,
  InvalidSettingsError,
  LOCAL_FOLDER_SYNC_LEVELS,
  type LocalFolderSyncLevel,
  NotFoundError,
  PermissionError,
  resolveSyncProxySettings,
  type SyncProxySettings,
} from '@drkit/core';
import { parseDocument } from 'yaml';
import { PROVIDER_ALIASES, type ProviderReference } from './providers.js';
import { checkNoLiteralSecrets, childField } from './secrets.js';

/** Where points go: a local folder, or an S3-compatible bucket. */
export type RepositoryConfig = LocalRepositoryConfig | S3RepositoryConfig;

/** A repository in a local folder. */
export interface LocalRepositoryConfig {
  readonly type: 'local';
  /** Absolute path (a relative one in the file is relative to the file's folder). */
  readonly path: string;
  /** How the folder is synced (`syncLevel` in the file); absent: the store's default. */
  readonly syncLevel?: LocalFolderSyncLevel;
}

/**
 * A repository in an S3-compatible bucket (`@drkit/store-s3`): `{ type: s3, bucket, prefix?, endpoint?, region?,
 * forcePathStyle?, credentials? }` in the file, or `--repo s3://bucket/prefix`.
 */
export interface S3RepositoryConfig {
  readonly type: 's3';
  readonly bucket: string;
  /** Keys are stored under `prefix/`; empty: at the bucket's root. */
  readonly prefix: string;
  /** URL of an S3-compatible service (RGW, MinIO); absent: AWS. */
  readonly endpoint?: string;
  /** Absent: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1` with an endpoint. */
  readonly region?: string;
  readonly forcePathStyle?: boolean;
  /**
   * `{ accessKeyId, secretAccessKey: { env | file }, sessionToken?: { env | file } }` as written (references not
   * resolved yet); absent: the AWS SDK's default chain (`AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, the
   * shared credentials file, instance roles).
   */
  readonly credentials?: Readonly<Record<string, unknown>>;
  /**
   * Immutable points (the bucket must have S3 Object Lock): the policy a new repository records; an existing one
   * must record the same. Absent: whatever the repository records.
   */
  readonly immutability?: ImmutabilityOptions;
  /** Where it was given, for messages: `repository` (the file) or `--repo`. */
  readonly field: string;
}

const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/**
 * The S3 repository of `s3://bucket/prefix` (`--repo`, `DRKIT_REPO`), or undefined when `location` is not an
 * `s3://` URL. The endpoint comes from `DRKIT_S3_ENDPOINT`, the credentials from the AWS SDK's default chain.
 *
 * @throws {@link InvalidSettingsError} naming `field` when the URL has no valid bucket name.
 */
export function s3RepositoryOf(
  location: string,
  field: string,
  env: NodeJS.ProcessEnv,
): S3RepositoryConfig | undefined {
  if (!location.startsWith('s3://')) return undefined;
  const rest = location.slice('s3://'.length);
  const slash = rest.indexOf('/');
  const bucket = slash < 0 ? rest : rest.slice(0, slash);
  const prefix = slash < 0 ? '' : rest.slice(slash + 1).replace(/\/+$/, '');
  if (!BUCKET_NAME.test(bucket)) {
    throw new InvalidSettingsError(field, `s3://${bucket}/… does not name a bucket (s3://bucket/prefix)`);
  }
  const endpoint = env.DRKIT_S3_ENDPOINT || undefined;
  return { type: 's3', bucket, prefix, field, ...(endpoint === undefined ? {} : { endpoint }) };
}

/** One platform of the configuration, not created yet. */
export interface PlatformConfig {
  /** The user's id of the platform: points are filed under it. */
  readonly id: string;
  readonly provider: ProviderReference;
  /** The alias the file named the provider by, if it did. */
  readonly alias: string | undefined;
  /** The factory's options as written: secret references not resolved yet. */
  readonly options: Readonly<Record<string, unknown>>;
  /** `platforms[i]`, for messages. */
  readonly field: string;
}

/** One Sync Proxy of the configuration (an in-process proxy). */
export interface ProxyConfig {
  readonly id: string;
  readonly name: string | undefined;
  readonly settings: SyncProxySettings;
  /** The platform ids it is bound to. */
  readonly platformIds: readonly string[];
}

/** A configuration file, validated. */
export interface DrkitConfig {
  /** Absolute path of the file. */
  readonly file: string;
  /** Its folder: relative paths in it are relative to this. */
  readonly dir: string;
  readonly repository: RepositoryConfig | undefined;
  readonly platforms: readonly PlatformConfig[];
  /** Absent: one in-process proxy bound to every platform. */
  readonly proxies: readonly ProxyConfig[] | undefined;
  /** Disk tasks at once (the engine's `concurrency`); absent: the engine's default. */
  readonly concurrency: number | undefined;
}

const TOP_LEVEL_KEYS = ['version', 'repository', 'platforms', 'proxies', 'concurrency'];
const PLATFORM_KEYS = ['id', 'provider', 'options'];
const PROXY_KEYS = ['id', 'name', 'maxMountedDisks', 'httpTimeoutSeconds', 'platforms'];
/** The engine's rule for platform ids. */
const PLATFORM_ID = /^[\x21-\x7e]{1,128}$/;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkKeys(value: Record<string, unknown>, allowed: readonly string[], field: string): void {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      throw new InvalidSettingsError(
        childField(field, key),
        `is not a setting drkit knows (known: ${allowed.join(', ')})`,
      );
    }
  }
}

function requiredText(value: unknown, field: string, example: string): string {
  if (typeof value !== 'string' || value.trim() === '') {
    throw new InvalidSettingsError(field, `must be a non-empty string, e.g. ${JSON.stringify(example)}`);
  }
  return value;
}

/** The configuration file to use: `--config`, else `DRKIT_CONFIG`, else none. */
export function configPath(flag: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  if (flag !== undefined) return flag;
  const fromEnv = env.DRKIT_CONFIG;
  return fromEnv === undefined || fromEnv === '' ? undefined : fromEnv;
}

/** A parser's complaint without the quoted text of the file (which could be a mistyped secret). */
function withoutQuotes(message: string): string {
  return (message.split(':\n')[0] ?? message).replace(/"[^"\n]*"/g, '"…"');
}

/** Parses JSON (a `.json` file) or YAML (any other name); errors give the line and column, never the text. */
function parseConfigText(text: string, file: string): unknown {
  const json = extname(file).toLowerCase() === '.json';
  if (json) {
    try {
      return JSON.parse(text);
    } catch {
      // V8's message quotes the text around the error: locate it with the YAML parser instead.
      const document = parseDocument(text, { schema: 'json', prettyErrors: true });
      const position = document.errors[0]?.linePos?.[0];
      throw new InvalidSettingsError(
        file,
        `is not valid JSON${position ? ` (line ${position.line}, column ${position.col})` : ''}`,
      );
    }
  }
  const document = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  const error = document.errors[0];
  if (error) throw new InvalidSettingsError(file, `is not valid YAML: ${withoutQuotes(error.message)}`);
  return document.toJS({ maxAliasCount: 100 });
}

function parseRepository(value: unknown, dir: string): RepositoryConfig | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'string')
    return { type: 'local', path: resolve(dir, requiredText(value, 'repository', '/backup/repo')) };
  if (!isPlainObject(value)) {
    throw new InvalidSettingsError('repository', 'must be the path of a folder, or { path: /backup/repo }');
  }
  const type = value.type ?? 'local';
  if (type === 's3') return parseS3Repository(value);
  if (type !== 'local') {
    throw new InvalidSettingsError(
      'repository.type',
      `must be local (a folder: { path: /backup/repo }) or s3 ({ type: s3, bucket, prefix, endpoint }), got ${JSON.stringify(type)}`,
    );
  }
  checkKeys(value, ['type', 'path', 'syncLevel'], 'repository');
  const path = resolve(dir, requiredText(value.path, 'repository.path', '/backup/repo'));
  if (value.syncLevel === undefined) return { type: 'local', path };
  if (!(LOCAL_FOLDER_SYNC_LEVELS as readonly unknown[]).includes(value.syncLevel)) {
    throw new InvalidSettingsError(
      'repository.syncLevel',
      `must be one of ${LOCAL_FOLDER_SYNC_LEVELS.join(', ')}, got ${JSON.stringify(value.syncLevel)}`,
    );
  }
  return { type: 'local', path, syncLevel: value.syncLevel as LocalFolderSyncLevel };
}

function parseS3Repository(value: Record<string, unknown>): S3RepositoryConfig {
  checkKeys(
    value,
    ['type', 'bucket', 'prefix', 'endpoint', 'region', 'forcePathStyle', 'credentials', 'immutability'],
    'repository',
  );
  const bucket = requiredText(value.bucket, 'repository.bucket', 'backups');
  if (!BUCKET_NAME.test(bucket)) {
    throw new InvalidSettingsError('repository.bucket', `${JSON.stringify(bucket)} is not a bucket name`);
  }
  const text = (key: string): string | undefined => {
    const item = value[key];
    if (item === undefined) return undefined;
    if (typeof item !== 'string') throw new InvalidSettingsError(`repository.${key}`, 'must be a string');
    return item;
  };
  const prefix = (text('prefix') ?? '').replace(/\/+$/, '');
  const endpoint = text('endpoint');
  const region = text('region');
  if (value.forcePathStyle !== undefined && typeof value.forcePathStyle !== 'boolean') {
    throw new InvalidSettingsError('repository.forcePathStyle', 'must be true or false');
  }
  let credentials: Record<string, unknown> | undefined;
  if (value.credentials !== undefined) {
    if (!isPlainObject(value.credentials)) {
      throw new InvalidSettingsError(
        'repository.credentials',
        'must be { accessKeyId, secretAccessKey: { env: NAME } | { file: path }, sessionToken? }',
      );
    }
    checkKeys(
      value.credentials,
      ['accessKeyId', 'secretAccessKey', 'sessionToken'],
      'repository.credentials',
    );
    if (value.credentials.accessKeyId === undefined || value.credentials.secretAccessKey === undefined) {
      throw new InvalidSettingsError('repository.credentials', 'needs accessKeyId and secretAccessKey');
    }
    // secretAccessKey and sessionToken are secrets by their names: references ({ env } or { file }), never text.
    checkNoLiteralSecrets(value.credentials, 'repository.credentials');
    credentials = value.credentials;
  }
  const immutability = parseImmutability(value.immutability);
  return {
    type: 's3',
    bucket,
    prefix,
    field: 'repository',
    ...(immutability === undefined ? {} : { immutability }),
    ...(endpoint === undefined ? {} : { endpoint }),
    ...(region === undefined ? {} : { region }),
    ...(value.forcePathStyle === undefined ? {} : { forcePathStyle: value.forcePathStyle }),
    ...(credentials === undefined ? {} : { credentials }),
  };
}

const DAY_MS = 24 * 3600 * 1000;

/** `immutability: { mode, periodDays, windowDays? }` of an S3 repository; core checks the ranges. */
function parseImmutability(value: unknown): ImmutabilityOptions | undefined {
  if (value === undefined) return undefined;
  const field = 'repository.immutability';
  if (!isPlainObject(value)) {
    throw new InvalidSettingsError(
      field,
      'must be { mode: governance | compliance, periodDays, windowDays? }',
    );
  }
  checkKeys(value, ['mode', 'periodDays', 'windowDays'], field);
  if (value.mode !== 'governance' && value.mode !== 'compliance') {
    throw new InvalidSettingsError(`${field}.mode`, 'must be governance or compliance');
  }
  for (const key of ['periodDays', 'windowDays']) {
    const days = value[key];
    if (days === undefined && key === 'windowDays') continue;
    if (typeof days !== 'number' || !(days > 0)) {
      throw new InvalidSettingsError(`${field}.${key}`, 'must be a number of days above 0');
    }
  }
  return {
    mode: value.mode,
    periodDays: value.periodDays as number,
    ...(value.windowDays === undefined
      ? {}
      : { windowMs: Math.round((value.windowDays as number) * DAY_MS) }),
  };
}

function parseProvider(
  value: unknown,
  field: string,
): { provider: ProviderReference; alias: string | undefined } {
  if (typeof value === 'string') {
    const provider = PROVIDER_ALIASES[value];
    if (!provider) {
      throw new InvalidSettingsError(
        field,
        `${JSON.stringify(value)} is not a provider drkit knows (${Object.keys(PROVIDER_ALIASES).join(', ')}); for another provider give { package, factory }`,
      );
    }
    return { provider, alias: value };
  }
  if (!isPlainObject(value)) {
    throw new InvalidSettingsError(
      field,
      `is required: a name (${Object.keys(PROVIDER_ALIASES).join(', ')}) or { package, factory }`,
    );
  }
  checkKeys(value, ['package', 'factory'], field);
  return {
    provider: {
      package: requiredText(value.package, `${field}.package`, '@acme/drkit-provider'),
      factory: requiredText(value.factory, `${field}.factory`, 'createAcmePlatform'),
    },
    alias: undefined,
  };
}

function parsePlatforms(value: unknown): PlatformConfig[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) {
    throw new InvalidSettingsError('platforms', 'must be a list of { id, provider, options }');
  }
  const seen = new Map<string, string>();
  return value.map((entry: unknown, index) => {
    const field = `platforms[${index}]`;
    if (!isPlainObject(entry))
      throw new InvalidSettingsError(field, 'must be an object { id, provider, options }');
    checkKeys(entry, PLATFORM_KEYS, field);
    const id = entry.id;
    if (typeof id !== 'string' || !PLATFORM_ID.test(id)) {
      throw new InvalidSettingsError(
        `${field}.id`,
        'is required: 1-128 printable ASCII characters without spaces, chosen by you (points are filed under it, so keep it)',
      );
    }
    const other = seen.get(id);
    if (other !== undefined)
      throw new InvalidSettingsError(`${field}.id`, `${id} is already the id of ${other}`);
    seen.set(id, field);
    const { provider, alias } = parseProvider(entry.provider, `${field}.provider`);
    const options = entry.options ?? {};
    if (!isPlainObject(options))
      throw new InvalidSettingsError(`${field}.options`, "must be an object: the factory's options");
    if (options.id !== undefined) {
      throw new InvalidSettingsError(`${field}.options.id`, `leave it out: the platform's id is ${field}.id`);
    }
    checkNoLiteralSecrets(options, `${field}.options`);
    return { id, provider, alias, options, field };
  });
}

function parseProxies(value: unknown, platforms: readonly PlatformConfig[]): ProxyConfig[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.length === 0) {
    throw new InvalidSettingsError(
      'proxies',
      'must be a list of at least one { id, platforms }, or left out',
    );
  }
  const platformIds = new Set(platforms.map((p) => p.id));
  const ids = new Set<string>();
  const bound = new Set<string>();
  const proxies = value.map((entry: unknown, index): ProxyConfig => {
    const field = `proxies[${index}]`;
    if (!isPlainObject(entry)) throw new InvalidSettingsError(field, 'must be an object { id, platforms }');
    checkKeys(entry, PROXY_KEYS, field);
    const id = requiredText(entry.id, `${field}.id`, 'proxy-1');
    if (ids.has(id)) throw new InvalidSettingsError(`${field}.id`, `duplicate Sync Proxy id ${id}`);
    ids.add(id);
    const name =
      entry.name === undefined ? undefined : requiredText(entry.name, `${field}.name`, 'proxy-1.example.com');
    const settings = resolveSyncProxySettings(
      {
        ...(entry.maxMountedDisks === undefined ? {} : { maxMountedDisks: entry.maxMountedDisks as number }),
        ...(entry.httpTimeoutSeconds === undefined
          ? {}
          : { httpTimeoutSeconds: entry.httpTimeoutSeconds as number }),
      },
      field,
    );
    const list = entry.platforms;
    if (!Array.isArray(list) || list.length === 0) {
      throw new InvalidSettingsError(
        `${field}.platforms`,
        'list the ids of the platforms the proxy is bound to',
      );
    }
    list.forEach((platformId: unknown, i) => {
      if (typeof platformId !== 'string' || !platformIds.has(platformId)) {
        throw new InvalidSettingsError(
          `${field}.platforms[${i}]`,
          `${JSON.stringify(platformId)} is not the id of a platform of this file (${[...platformIds].join(', ') || 'none'})`,
        );
      }
      bound.add(platformId);
    });
    return { id, name, settings, platformIds: [...new Set(list as string[])] };
  });
  for (const platform of platforms) {
    if (!bound.has(platform.id)) {
      throw new InvalidSettingsError(
        'proxies',
        `no Sync Proxy is bound to platform ${platform.id}: add it to the platforms of a proxy`,
      );
    }
  }
  return proxies;
}

/**
 * Validates a parsed configuration. Secret references are checked for shape, not resolved.
 *
 * @throws {@link InvalidSettingsError} naming the field; {@link SecretInConfigError} for a literal secret.
 */
export function parseConfig(raw: unknown, file: string): DrkitConfig {
  const dir = dirname(file);
  if (!isPlainObject(raw)) {
    throw new InvalidSettingsError(file, 'must hold an object with repository, platforms and proxies');
  }
  checkKeys(raw, TOP_LEVEL_KEYS, '(top level)');
  if (raw.version !== undefined && raw.version !== 1) {
    throw new InvalidSettingsError(
      'version',
      `this drkit reads configuration version 1, the file says ${JSON.stringify(raw.version)}`,
    );
  }
  const repository = parseRepository(raw.repository, dir);
  const platforms = parsePlatforms(raw.platforms);
  const proxies = parseProxies(raw.proxies, platforms);
  const concurrency = raw.concurrency;
  if (concurrency !== undefined && (!Number.isInteger(concurrency) || (concurrency as number) < 1)) {
    throw new InvalidSettingsError(
      'concurrency',
      `must be a whole number above 0, got ${JSON.stringify(concurrency)}`,
    );
  }
  return { file, dir, repository, platforms, proxies, concurrency: concurrency as number | undefined };
}

/**
 * Reads and validates a configuration file (JSON when its name ends in `.json`, else YAML).
 *
 * @throws {@link NotFoundError} when it does not exist; {@link PermissionError}; {@link InvalidSettingsError}.
 */
export async function readConfig(path: string): Promise<DrkitConfig> {
  const file = resolve(path);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new NotFoundError(`no configuration file ${file}`);
    if (code === 'EACCES' || code === 'EPERM')
      throw new PermissionError(`cannot read the configuration file ${file}`);
    throw new InvalidSettingsError(file, `cannot be read (${code ?? String(error)})`);
  }
  return parseConfig(parseConfigText(text, file), file);
}
