import { InvalidSettingsError, type Store } from '@drkit/core';
import type { CommandContext } from './command-context.js';
import {
  type DrkitConfig,
  type RepositoryConfig,
  type S3RepositoryConfig,
  s3RepositoryOf,
} from './config/config-file.js';
import { importProvider } from './config/providers.js';
import { resolveSecretReferences } from './config/secrets.js';

/** An S3 store as `@drkit/store-s3` makes it: a core store with a socket pool to close. */
type S3Store = Store & { destroy(): Promise<void> };

/** `--repo`, `DRKIT_REPO` or the configuration's value: a folder, or `s3://bucket/prefix`. */
function fromText(value: string, field: string, env: NodeJS.ProcessEnv): RepositoryConfig {
  return s3RepositoryOf(value, field, env) ?? { type: 'local', path: value };
}

/**
 * The repository of a command: `--repo`, else the configuration's `repository`, else `DRKIT_REPO`; undefined
 * when none is given.
 *
 * @throws {@link InvalidSettingsError} for an `s3://` URL that names no bucket.
 */
export function repositoryOf(
  flag: string | undefined,
  config: DrkitConfig | undefined,
  env: NodeJS.ProcessEnv,
): RepositoryConfig | undefined {
  if (flag !== undefined && flag !== '') return fromText(flag, '--repo', env);
  if (config?.repository !== undefined) return config.repository;
  const fromEnv = env.DRKIT_REPO;
  return fromEnv === undefined || fromEnv === '' ? undefined : fromText(fromEnv, 'DRKIT_REPO', env);
}

/**
 * Creates the S3 store of an S3 repository with `@drkit/store-s3` (installed beside the CLI). The credentials
 * are the configuration's (secret references resolved, the secrets handed to the redactor), else the AWS SDK's
 * default chain, whose secret environment variables are redacted too.
 *
 * @throws {@link InvalidSettingsError} when no region is known or `@drkit/store-s3` cannot be loaded.
 */
export async function openS3Store(location: S3RepositoryConfig, context: CommandContext): Promise<S3Store> {
  const { env } = context.io;
  for (const name of ['AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN']) {
    const value = env[name];
    if (value !== undefined && value !== '') context.redactor.add(value);
  }
  const region =
    location.region ??
    (env.AWS_REGION || env.AWS_DEFAULT_REGION || (location.endpoint !== undefined ? 'us-east-1' : undefined));
  if (region === undefined) {
    throw new InvalidSettingsError(
      location.field,
      `the S3 repository s3://${location.bucket} needs a region: set repository.region, AWS_REGION or AWS_DEFAULT_REGION`,
    );
  }
  const credentials =
    location.credentials === undefined
      ? undefined
      : await resolveSecretReferences(location.credentials, `${location.field}.credentials`, {
          env,
          baseDir: context.config?.dir ?? process.cwd(),
          onSecret: (secret) => context.redactor.add(secret),
        });
  const module = await importProvider(
    { package: '@drkit/store-s3', factory: 'createS3Store' },
    location.field,
    context.config?.dir ?? process.cwd(),
  );
  const create = module.createS3Store;
  if (typeof create !== 'function') {
    throw new InvalidSettingsError(location.field, '@drkit/store-s3 does not export createS3Store');
  }
  return (create as (options: Record<string, unknown>) => S3Store)({
    bucket: location.bucket,
    prefix: location.prefix,
    region,
    ...(location.endpoint === undefined ? {} : { endpoint: location.endpoint }),
    ...(location.forcePathStyle === undefined ? {} : { forcePathStyle: location.forcePathStyle }),
    ...(credentials === undefined ? {} : { credentials }),
  });
}
