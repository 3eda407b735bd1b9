import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import {
  createLocalFolderStore,
  InvalidSettingsError,
  LOCAL_FOLDER_SYNC_LEVELS,
  type LocalFolderSyncLevel,
  openRepository,
  type Repository,
  type Store,
} from '@drkit/core';
import type { DrkitConfig, RepositoryConfig } from './config/config-file.js';
import { openS3Store } from './repository-location.js';
import type { SecretRedactor } from './secret-redactor.js';

/** Where the command writes and what it reads from its environment. */
export interface CliIo {
  readonly stdout: NodeJS.WriteStream;
  readonly stderr: NodeJS.WriteStream;
  readonly env: NodeJS.ProcessEnv;
  /** Aborted on SIGINT/SIGTERM. */
  readonly signal?: AbortSignal;
}

/** A mistake on the command line: exit 2, with a pointer to `--help`. */
export class UsageError extends Error {}

/** What every command gets. */
export interface CommandContext {
  /** Text output: its streams redact every secret the configuration resolved. */
  readonly io: CliIo;
  /** The streams as given, for bytes (a restore to standard output). */
  readonly rawIo: CliIo;
  readonly json: boolean;
  /** The configuration file, when one was named (`--config`, `DRKIT_CONFIG`). */
  readonly config: DrkitConfig | undefined;
  readonly redactor: SecretRedactor;
  /**
   * The repository: `--repo` (a folder, or `s3://bucket/prefix`), else the configuration's `repository`, else
   * `DRKIT_REPO`.
   */
  readonly repository: RepositoryConfig | undefined;
  /**
   * How the repository folder is synced: `--sync-level`, else the configuration's `repository.syncLevel`, else
   * `DRKIT_SYNC_LEVEL`, else the local folder store's default (`filesystem` on Linux, `file` elsewhere).
   */
  readonly syncLevel: LocalFolderSyncLevel | undefined;
  /**
   * The repository's passphrase: the first line of `--passphrase-file` (or of `DRKIT_PASSPHRASE_FILE`), else
   * `DRKIT_PASSPHRASE`. With one, a new repository is created encrypted and an existing one must be encrypted
   * with it. Never on the command line itself (other users see it in the process list).
   */
  readonly passphrase: string | undefined;
}

/**
 * Reads a secret from a file: its first line, without the line break (a file written by `echo` works).
 *
 * @throws {@link InvalidSettingsError} naming the option and the file, never the content, when it cannot be read
 * or its first line is empty.
 */
export async function readSecretFile(path: string, from: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new InvalidSettingsError(
      from,
      `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`,
    );
  }
  const line = text.split(/\r?\n/, 1)[0] ?? '';
  if (line === '') throw new InvalidSettingsError(from, `${path} starts with an empty line`);
  return line;
}

/**
 * The passphrase of the command (see {@link CommandContext.passphrase}), added to the redactor.
 *
 * @throws {@link InvalidSettingsError} when a passphrase file cannot be read.
 */
export async function resolvePassphrase(
  file: string | undefined,
  env: NodeJS.ProcessEnv,
  redactor: SecretRedactor,
): Promise<string | undefined> {
  const path = file ?? (env.DRKIT_PASSPHRASE_FILE || undefined);
  const passphrase =
    path !== undefined
      ? await readSecretFile(path, file !== undefined ? '--passphrase-file' : 'DRKIT_PASSPHRASE_FILE')
      : env.DRKIT_PASSPHRASE || undefined;
  if (passphrase !== undefined) redactor.add(passphrase);
  return passphrase;
}

/** A sync level given on the command line or in the environment. @throws {@link UsageError} when it is none. */
export function parseSyncLevel(value: string | undefined, from: string): LocalFolderSyncLevel | undefined {
  if (value === undefined || value === '') return undefined;
  if (!(LOCAL_FOLDER_SYNC_LEVELS as readonly string[]).includes(value)) {
    throw new UsageError(`${from} takes ${LOCAL_FOLDER_SYNC_LEVELS.join(', ')}, got "${value}"`);
  }
  return value as LocalFolderSyncLevel;
}

/** The repository of the command. @throws {@link UsageError} when none is given. */
export function requireRepository(context: CommandContext): RepositoryConfig {
  if (context.repository === undefined) {
    throw new UsageError(
      'no repository: pass --repo <dir | s3://bucket/prefix>, set DRKIT_REPO, or name one in the configuration file (repository: { path })',
    );
  }
  return context.repository;
}

/** The configuration file of a command that needs one. @throws {@link UsageError} when none is named. */
export function requireConfig(context: CommandContext, command: string): DrkitConfig {
  if (!context.config) {
    throw new UsageError(`${command} needs a configuration file: pass --config <file> or set DRKIT_CONFIG`);
  }
  if (context.config.platforms.length === 0) {
    throw new UsageError(`${command}: the configuration file ${context.config.file} lists no platforms`);
  }
  return context.config;
}

/**
 * Opens the command's repository (a local folder at its sync level, or an S3 bucket; with its passphrase), runs
 * `body`, closes it. With `create`, a store without a repository gets one: encrypted when a passphrase is given.
 *
 * @throws {@link UsageError} when no repository is given, or a sync level is given for an S3 repository.
 */
export async function withRepository<T>(
  context: CommandContext,
  create: boolean,
  body: (repository: Repository) => Promise<T>,
): Promise<T> {
  const location = requireRepository(context);
  let store: Store;
  let release = async () => {};
  if (location.type === 'local') {
    const path = resolve(location.path);
    store = createLocalFolderStore(
      context.syncLevel === undefined ? { path } : { path, syncLevel: context.syncLevel },
    );
  } else {
    if (context.syncLevel !== undefined) {
      throw new UsageError('--sync-level and DRKIT_SYNC_LEVEL are for a repository folder, not an S3 bucket');
    }
    const s3 = await openS3Store(location, context);
    store = s3;
    release = () => s3.destroy();
  }
  try {
    const immutability = location.type === 's3' ? location.immutability : undefined;
    const repository = await openRepository({
      store,
      create,
      ...(context.passphrase === undefined ? {} : { encryption: { passphrase: context.passphrase } }),
      ...(immutability === undefined ? {} : { immutability }),
    });
    try {
      return await body(repository);
    } finally {
      await repository.close();
    }
  } finally {
    await release();
  }
}
