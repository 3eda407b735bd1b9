import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { SecretInConfigError, SecretUnavailableError } from './config-errors.js';

/** Where a secret comes from: an environment variable, or a file (its content, one trailing newline cut). */
export type SecretReference = { readonly env: string } | { readonly file: string };

/**
 * Words that make a field a secret when they end its name (`password`, `openstack.password`, `keyring`,
 * `secretAccessKey`, `apiToken`, `clientSecret`, `privateKey`); `accessKeyId`, `keyringPath`, `tokenUrl` are not.
 */
const SECRET_WORDS = new Set([
  'password',
  'passwords',
  'passwd',
  'passphrase',
  'passphrases',
  'secret',
  'secrets',
  'keyring',
  'keyrings',
  'key',
  'keys',
  'token',
  'tokens',
  'credential',
  'credentials',
]);

/** Whether a field of that name holds a secret: its last word (camelCase, `_`, `-` or `.` separated) says so. */
export function isSecretField(name: string): boolean {
  const words = name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .split(/[\s_.-]+/)
    .filter((w) => w !== '');
  const last = words[words.length - 1];
  return last !== undefined && SECRET_WORDS.has(last.toLowerCase());
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Whether a value is a secret reference: an object with exactly one key, `env` or `file`, holding a string. */
export function isSecretReference(value: unknown): value is SecretReference {
  if (!isPlainObject(value)) return false;
  const keys = Object.keys(value);
  return keys.length === 1 && (keys[0] === 'env' || keys[0] === 'file') && typeof value[keys[0]] === 'string';
}

/** `field` then `key`, as `a.b`, `a[0]`, or `a["odd key"]`. */
export function childField(field: string, key: string | number): string {
  if (typeof key === 'number') return `${field}[${key}]`;
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `${field}.${key}` : `${field}[${JSON.stringify(key)}]`;
}

/**
 * Walks a value of the configuration. In a field whose name says secret ({@link isSecretField}), and in the
 * elements of such a list, a string or number is refused: it must be a reference.
 *
 * @throws {@link SecretInConfigError} naming the first such field.
 */
export function checkNoLiteralSecrets(value: unknown, field: string, secret = false): void {
  if (isSecretReference(value)) return;
  if (Array.isArray(value)) {
    value.forEach((item, i) => {
      checkNoLiteralSecrets(item, childField(field, i), secret);
    });
    return;
  }
  if (isPlainObject(value)) {
    for (const [key, item] of Object.entries(value)) {
      checkNoLiteralSecrets(item, childField(field, key), isSecretField(key));
    }
    return;
  }
  if (secret && (typeof value === 'string' || typeof value === 'number'))
    throw new SecretInConfigError(field);
}

/** What {@link resolveSecretReferences} needs. */
export interface SecretContext {
  readonly env: NodeJS.ProcessEnv;
  /** Folder that relative `file` references are relative to (the configuration file's). */
  readonly baseDir: string;
  /** Called with every value resolved into a secret field, so output can be redacted. */
  readonly onSecret: (value: string) => void;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MAX_SECRET_FILE_BYTES = 1024 * 1024;

async function resolveReference(
  reference: SecretReference,
  field: string,
  context: SecretContext,
): Promise<string> {
  if ('env' in reference) {
    const name = reference.env;
    if (!ENV_NAME.test(name)) {
      throw new SecretUnavailableError(
        field,
        `{ env: ${JSON.stringify(name)} } is not an environment variable name`,
      );
    }
    const value = context.env[name];
    if (value === undefined || value === '') {
      throw new SecretUnavailableError(field, `environment variable ${name} is not set (or empty)`);
    }
    return value;
  }
  if (reference.file.trim() === '') {
    throw new SecretUnavailableError(field, '{ file } needs the path of a file');
  }
  const path = resolve(context.baseDir, reference.file);
  let text: string;
  try {
    const info = await stat(path);
    if (!info.isFile()) throw new SecretUnavailableError(field, `${path} is not a regular file`);
    if (info.size > MAX_SECRET_FILE_BYTES) {
      throw new SecretUnavailableError(field, `${path} is larger than ${MAX_SECRET_FILE_BYTES} bytes`);
    }
    text = await readFile(path, 'utf8');
  } catch (error) {
    if (SecretUnavailableError.isInstance(error)) throw error;
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    throw new SecretUnavailableError(field, `cannot read ${path} (${code})`);
  }
  const value = text.replace(/\r?\n$/, '');
  if (value === '') throw new SecretUnavailableError(field, `${path} is empty`);
  return value;
}

/**
 * Returns a copy of `value` with every secret reference replaced by the secret. Values resolved into a secret
 * field are also handed to `context.onSecret`.
 *
 * @throws {@link SecretUnavailableError} naming the field when a variable is not set or a file cannot be read;
 * the message never holds a secret.
 */
export async function resolveSecretReferences(
  value: unknown,
  field: string,
  context: SecretContext,
  secret = false,
): Promise<unknown> {
  if (isSecretReference(value)) {
    const resolved = await resolveReference(value, field, context);
    if (secret) context.onSecret(resolved);
    return resolved;
  }
  if (Array.isArray(value)) {
    const out: unknown[] = [];
    for (const [i, item] of value.entries()) {
      out.push(await resolveSecretReferences(item, childField(field, i), context, secret));
    }
    return out;
  }
  if (isPlainObject(value)) {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      out[key] = await resolveSecretReferences(item, childField(field, key), context, isSecretField(key));
    }
    return out;
  }
  return value;
}
