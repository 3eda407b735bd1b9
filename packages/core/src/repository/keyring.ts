import { randomBytes } from 'node:crypto';
import {
  InvalidSettingsError,
  NotFoundError,
  RepositoryCorruptError,
  RepositoryKeyError,
} from '../errors/drkit-error.js';
import { decodeCheckedJson, encodeCheckedJson } from './checked-json.js';
import {
  deriveMasterKey,
  deriveSubkey,
  ID_KEY_INFO,
  type ScryptParameters,
  SEAL_KEY_INFO,
  seal,
  unseal,
} from './sealing.js';
import type { Store } from './store.js';

// The key blobs of an encrypted repository (`keys/<32 hex>`): each wraps the one random data key under a master
// key (from a passphrase with scrypt, or given as bytes). The layout is in docs/repository-format.md.

/** Key prefix of the key blobs. */
export const KEYS_PREFIX = 'keys/';
/** The `format` field of a key blob. */
export const KEY_BLOB_FORMAT = 'drkit-key';
/** The key blob version this code writes and reads. */
export const KEY_BLOB_VERSION = 1;
/** Bytes of the data key, of the master key and of every subkey. */
export const KEY_BYTES = 32;
/** Bytes of a scrypt salt. */
const SALT_BYTES = 32;
/** The most memory (128 × N × r bytes) a key blob's scrypt parameters may ask for: 1 GiB. */
const MAX_SCRYPT_MEMORY = 2 ** 30;

/**
 * How an encrypted repository is unlocked (and, when it is created, locked): a passphrase, from which scrypt
 * derives the master key, or the 32-byte master key itself (from a key management system).
 */
export type RepositoryEncryption =
  | {
      /** The passphrase (normalised to Unicode NFC before scrypt). Never logged or stored. */
      readonly passphrase: string;
      /**
       * scrypt parameters of a new key blob (default N = 2^16, r = 8, p = 1: 64 MiB and about 0.3 s on a 2-core
       * proxy). Opening uses the parameters each key blob records.
       */
      readonly scrypt?: ScryptParameters;
    }
  | {
      /** The 32-byte master key. Never logged or stored. */
      readonly key: Uint8Array;
    };

/** The keys an open encrypted repository works with, derived from its data key. */
export interface RepositoryKeys {
  /** Key of the key blob that unlocked the repository (`keys/<id>`). */
  readonly keyBlob: string;
  /** The data key (re-wrapped by a passphrase change). */
  readonly dataKey: Uint8Array;
  /** AES-256-GCM key of every sealed blob. */
  readonly sealKey: Uint8Array;
  /** HMAC-SHA-256 key of chunk and segment ids. */
  readonly idKey: Uint8Array;
}

interface KeyBlob {
  readonly format: string;
  readonly version: number;
  readonly id: string;
  readonly repositoryId: string;
  readonly createdAt: string;
  readonly kdf: 'scrypt' | 'none';
  readonly scrypt?: ScryptParameters & { readonly salt: string };
  /** base64 of nonce (12) | the sealed data key (32) | tag (16). */
  readonly wrappedKey: string;
}

/** The default scrypt parameters of a new key blob: N = 2^16, r = 8, p = 1 (64 MiB). */
export const DEFAULT_KEY_SCRYPT: ScryptParameters = { N: 2 ** 16, r: 8, p: 1 };

function scryptProblem(parameters: ScryptParameters): string | undefined {
  const { N, r, p } = parameters;
  if (!Number.isSafeInteger(N) || N < 2 ** 10 || N > 2 ** 24 || (N & (N - 1)) !== 0) {
    return `N = ${N} is not a power of two from 2^10 to 2^24`;
  }
  if (!Number.isSafeInteger(r) || r < 1 || r > 32) return `r = ${r} is not an integer from 1 to 32`;
  if (!Number.isSafeInteger(p) || p < 1 || p > 16) return `p = ${p} is not an integer from 1 to 16`;
  if (128 * N * r > MAX_SCRYPT_MEMORY) return `128 × N × r = ${128 * N * r} bytes is above 1 GiB`;
  return undefined;
}

/**
 * Checks the shape of an encryption option.
 *
 * @throws {@link InvalidSettingsError} naming the field.
 */
export function checkEncryption(encryption: RepositoryEncryption): void {
  if (typeof encryption !== 'object' || encryption === null) {
    throw new InvalidSettingsError('encryption', 'must be { passphrase } or { key }');
  }
  if ('passphrase' in encryption) {
    if (typeof encryption.passphrase !== 'string' || encryption.passphrase.length === 0) {
      throw new InvalidSettingsError('encryption.passphrase', 'must be a non-empty string');
    }
    if (encryption.scrypt !== undefined) {
      const problem = scryptProblem(encryption.scrypt);
      if (problem !== undefined) throw new InvalidSettingsError('encryption.scrypt', problem);
    }
    return;
  }
  if (!('key' in encryption) || !(encryption.key instanceof Uint8Array) || encryption.key.byteLength !== 32) {
    throw new InvalidSettingsError('encryption.key', `must be ${KEY_BYTES} bytes`);
  }
}

function wrapAad(repositoryId: string, keyId: string): Uint8Array {
  return new TextEncoder().encode(`drkit key v1\n${repositoryId}\n${keyId}`);
}

async function masterKeyOf(encryption: RepositoryEncryption, blob: KeyBlob): Promise<Uint8Array> {
  if (blob.kdf === 'none') {
    if (!('key' in encryption)) {
      throw new RepositoryKeyError(
        `key blob keys/${blob.id} is unlocked by a key, not a passphrase: give encryption.key`,
      );
    }
    return encryption.key;
  }
  if (!('passphrase' in encryption)) {
    throw new RepositoryKeyError(
      `key blob keys/${blob.id} is unlocked by a passphrase, not a key: give encryption.passphrase`,
    );
  }
  const { N, r, p, salt } = blob.scrypt!;
  return deriveMasterKey(encryption.passphrase, Buffer.from(salt, 'base64'), { N, r, p });
}

function keysOf(keyBlob: string, dataKey: Uint8Array): RepositoryKeys {
  return {
    keyBlob,
    dataKey,
    sealKey: deriveSubkey(dataKey, SEAL_KEY_INFO),
    idKey: deriveSubkey(dataKey, ID_KEY_INFO),
  };
}

/** Builds a key blob wrapping `dataKey` under the master key of `encryption`. */
async function buildKeyBlob(
  repositoryId: string,
  dataKey: Uint8Array,
  encryption: RepositoryEncryption,
): Promise<{ key: string; bytes: Uint8Array }> {
  const id = randomBytes(16).toString('hex');
  let master: Uint8Array;
  let kdf: Pick<KeyBlob, 'kdf' | 'scrypt'>;
  if ('passphrase' in encryption) {
    const parameters = encryption.scrypt ?? DEFAULT_KEY_SCRYPT;
    const salt = randomBytes(SALT_BYTES);
    master = await deriveMasterKey(encryption.passphrase, salt, parameters);
    kdf = {
      kdf: 'scrypt',
      scrypt: { N: parameters.N, r: parameters.r, p: parameters.p, salt: salt.toString('base64') },
    };
  } else {
    master = encryption.key;
    kdf = { kdf: 'none' };
  }
  const blob: KeyBlob = {
    format: KEY_BLOB_FORMAT,
    version: KEY_BLOB_VERSION,
    id,
    repositoryId,
    createdAt: new Date().toISOString(),
    ...kdf,
    wrappedKey: Buffer.from(seal(master, dataKey, wrapAad(repositoryId, id))).toString('base64'),
  };
  return { key: `${KEYS_PREFIX}${id}`, bytes: encodeCheckedJson(blob) };
}

function parseKeyBlob(bytes: Uint8Array, key: string, repositoryId: string): KeyBlob {
  const what = `key blob ${key}`;
  const checked = decodeCheckedJson(bytes, what);
  if (checked === undefined) throw new RepositoryCorruptError(`${what} is damaged: it has no checksum line`);
  const value = checked.value as Partial<KeyBlob> | null;
  const fail = (problem: string): never => {
    throw new RepositoryCorruptError(`${what} is damaged: ${problem}`);
  };
  if (typeof value !== 'object' || value === null || value.format !== KEY_BLOB_FORMAT) {
    fail(`its format is not "${KEY_BLOB_FORMAT}"`);
  }
  const blob = value as KeyBlob;
  if (blob.version !== KEY_BLOB_VERSION) fail(`unknown key blob version ${String(blob.version)}`);
  if (typeof blob.id !== 'string' || `${KEYS_PREFIX}${blob.id}` !== key)
    fail('its id does not match its key');
  if (blob.repositoryId !== repositoryId) fail(`it belongs to repository ${String(blob.repositoryId)}`);
  if (typeof blob.createdAt !== 'string' || Number.isNaN(Date.parse(blob.createdAt)))
    fail('no valid createdAt');
  if (blob.kdf === 'scrypt') {
    const s = blob.scrypt;
    if (typeof s !== 'object' || s === null) fail('kdf scrypt without scrypt parameters');
    const problem = scryptProblem(s!);
    if (problem !== undefined) fail(`scrypt ${problem}`);
    if (typeof s!.salt !== 'string' || Buffer.from(s!.salt, 'base64').byteLength !== SALT_BYTES) {
      fail(`the scrypt salt is not ${SALT_BYTES} bytes of base64`);
    }
  } else if (blob.kdf !== 'none') {
    fail(`unknown kdf ${JSON.stringify(blob.kdf)}`);
  }
  if (
    typeof blob.wrappedKey !== 'string' ||
    Buffer.from(blob.wrappedKey, 'base64').byteLength !== 12 + 32 + 16
  ) {
    fail('its wrapped key is not 60 bytes of base64');
  }
  return blob;
}

/**
 * Creates the first key blob of a new encrypted repository: a random data key wrapped by `encryption`.
 * Written create-only and durable before the configuration that names the repository encrypted.
 */
export async function createFirstKey(
  store: Store,
  repositoryId: string,
  encryption: RepositoryEncryption,
  signal: AbortSignal | undefined,
): Promise<RepositoryKeys> {
  const dataKey = new Uint8Array(randomBytes(KEY_BYTES));
  const { key, bytes } = await buildKeyBlob(repositoryId, dataKey, encryption);
  await store.put(key, bytes, { ifAbsent: true, signal });
  return keysOf(key, dataKey);
}

/**
 * Unlocks an encrypted repository: tries `encryption` on each key blob until one opens.
 *
 * @throws {@link RepositoryKeyError} when none opens with it (a wrong passphrase or key);
 * {@link RepositoryCorruptError} when there is no key blob, or a key blob is damaged and no other opens.
 */
export async function unlockRepository(
  store: Store,
  repositoryId: string,
  encryption: RepositoryEncryption,
  where: string,
  signal: AbortSignal | undefined,
): Promise<RepositoryKeys> {
  const keys: string[] = [];
  for await (const entry of store.list(KEYS_PREFIX, { signal })) {
    if (/^keys\/[0-9a-f]{32}$/.test(entry.key)) keys.push(entry.key);
  }
  keys.sort();
  if (keys.length === 0) {
    throw new RepositoryCorruptError(
      `the encrypted repository in the ${where} has no key blob (keys/…): its data cannot be decrypted`,
    );
  }
  let damaged: RepositoryCorruptError | undefined;
  let mismatch: RepositoryKeyError | undefined;
  for (const key of keys) {
    let blob: KeyBlob;
    try {
      blob = parseKeyBlob(await store.get(key, { signal }), key, repositoryId);
    } catch (error) {
      if (NotFoundError.isInstance(error)) continue; // removed by a passphrase change since the listing
      if (!RepositoryCorruptError.isInstance(error)) throw error;
      damaged ??= error;
      continue;
    }
    let master: Uint8Array;
    try {
      master = await masterKeyOf(encryption, blob);
    } catch (error) {
      if (!RepositoryKeyError.isInstance(error)) throw error;
      mismatch ??= error;
      continue;
    }
    const wrapped = Buffer.from(blob.wrappedKey, 'base64');
    let dataKey: Uint8Array;
    try {
      dataKey = unseal(master, wrapped, wrapAad(repositoryId, blob.id), key);
    } catch {
      continue; // not this key blob's passphrase (or key)
    }
    return keysOf(key, dataKey);
  }
  if (damaged !== undefined && keys.length === 1) throw damaged;
  throw new RepositoryKeyError(
    `the ${'passphrase' in encryption ? 'passphrase' : 'key'} does not unlock the encrypted repository in the ${where} (${keys.length} key blob${keys.length === 1 ? '' : 's'} tried${mismatch ? `; ${mismatch.message}` : ''})`,
  );
}

/**
 * Wraps the data key under a new passphrase or key: a new key blob, written create-only and durable, then the old
 * one deleted. No chunk or other blob is rewritten. A crash between leaves both key blobs, each opening the
 * repository.
 *
 * @returns the keys with the new key blob's name.
 */
export async function rewrapKey(
  store: Store,
  repositoryId: string,
  keys: RepositoryKeys,
  encryption: RepositoryEncryption,
  signal: AbortSignal | undefined,
): Promise<RepositoryKeys> {
  checkEncryption(encryption);
  const { key, bytes } = await buildKeyBlob(repositoryId, keys.dataKey, encryption);
  await store.put(key, bytes, { ifAbsent: true, signal });
  if (store.sync !== undefined) await store.sync([key], { signal });
  if (key !== keys.keyBlob) await store.delete(keys.keyBlob, { signal });
  if (store.sync !== undefined) await store.sync([keys.keyBlob], { signal });
  return { ...keys, keyBlob: key };
}
