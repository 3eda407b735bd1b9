import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, scrypt } from 'node:crypto';
import { RepositoryCorruptError } from '../errors/drkit-error.js';
import { freeNow } from '../util/free-now.js';

/** Bytes of an AES-256-GCM nonce in a sealed blob. */
export const SEAL_NONCE_BYTES = 12;
/** Bytes of an AES-256-GCM tag in a sealed blob. */
export const SEAL_TAG_BYTES = 16;
/** The four bytes that start a sealed blob: ASCII `DRKE`. */
export const SEALED_MAGIC: Uint8Array = new Uint8Array([0x44, 0x52, 0x4b, 0x45]);
/** Version byte of a sealed blob. */
export const SEALED_VERSION = 1;
/** HKDF-SHA-256 info string of the key that seals blobs. */
export const SEAL_KEY_INFO = 'drkit seal v1';
/** HKDF-SHA-256 info string of the key that ids are keyed with (HMAC-SHA-256). */
export const ID_KEY_INFO = 'drkit chunk-id v1';

/** scrypt parameters of a passphrase's master key. */
export interface ScryptParameters {
  /** CPU/memory cost, a power of two. */
  readonly N: number;
  /** Block size. */
  readonly r: number;
  /** Parallelism. */
  readonly p: number;
}

/** Derives a 32-byte master key from a passphrase with scrypt. */
export function deriveMasterKey(
  passphrase: string,
  salt: Uint8Array,
  parameters: ScryptParameters,
): Promise<Uint8Array> {
  const { N, r, p } = parameters;
  return new Promise((resolve, reject) => {
    scrypt(passphrase.normalize('NFC'), salt, 32, { N, r, p, maxmem: 256 * N * r }, (error, key) =>
      error === null ? resolve(new Uint8Array(key)) : reject(error),
    );
  });
}

/** Derives a 32-byte subkey of the data key with HKDF-SHA-256 (empty salt) and an info string. */
export function deriveSubkey(dataKey: Uint8Array, info: string): Uint8Array {
  return new Uint8Array(hkdfSync('sha256', dataKey, new Uint8Array(0), info, 32));
}

/** Bytes {@link seal} writes for `plainLength` plain bytes after `headroom`: headroom, nonce, ciphertext, tag. */
export function sealedLength(plainLength: number, headroom = 0): number {
  return headroom + SEAL_NONCE_BYTES + plainLength + SEAL_TAG_BYTES;
}

/**
 * Seals `plain` with AES-256-GCM: a random 12-byte nonce, the ciphertext and the 16-byte tag, after `headroom`
 * bytes left for the caller (a blob header), in one buffer of its own, or at the start of `into` when it is large
 * enough ({@link sealedLength}; the result is then a view of it). The cipher's own output is copied and freed at
 * once, not left to the garbage collector.
 */
export function seal(
  key: Uint8Array,
  plain: Uint8Array,
  aad: Uint8Array,
  headroom = 0,
  into?: Uint8Array,
): Uint8Array {
  const nonce = randomBytes(SEAL_NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(aad);
  const length = sealedLength(plain.byteLength, headroom);
  const out =
    into !== undefined && into.byteLength >= length ? into.subarray(0, length) : new Uint8Array(length);
  out.set(nonce, headroom);
  let at = headroom + SEAL_NONCE_BYTES;
  const body = cipher.update(plain);
  out.set(body, at);
  at += body.byteLength;
  freeNow(body);
  const last = cipher.final();
  out.set(last, at);
  at += last.byteLength;
  out.set(cipher.getAuthTag(), at);
  return out;
}

/**
 * Opens what {@link seal} produced.
 *
 * @param what - Names the blob in the error.
 * @throws {@link RepositoryCorruptError} naming `what` when it is too short or does not authenticate.
 */
export function unseal(key: Uint8Array, sealed: Uint8Array, aad: Uint8Array, what: string): Uint8Array {
  if (sealed.byteLength < SEAL_NONCE_BYTES + SEAL_TAG_BYTES) {
    throw new RepositoryCorruptError(`${what} is damaged: its sealed payload is too short`);
  }
  const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, SEAL_NONCE_BYTES));
  decipher.setAAD(aad);
  decipher.setAuthTag(sealed.subarray(sealed.byteLength - SEAL_TAG_BYTES));
  try {
    const length = sealed.byteLength - SEAL_NONCE_BYTES - SEAL_TAG_BYTES;
    const body = decipher.update(sealed.subarray(SEAL_NONCE_BYTES, sealed.byteLength - SEAL_TAG_BYTES));
    const last = decipher.final();
    // The result must be a buffer of its own (never Node's shared pool): a reader may transfer it to a worker
    // thread. GCM's update returns all the plain bytes in a buffer of their own except for small blobs.
    if (last.byteLength === 0 && body.byteOffset === 0 && body.buffer.byteLength === length) {
      return new Uint8Array(body.buffer, 0, length);
    }
    const out = new Uint8Array(length);
    out.set(body, 0);
    out.set(last, body.byteLength);
    return out;
  } catch (error) {
    throw new RepositoryCorruptError(`${what} is damaged: it does not authenticate`, { cause: error });
  }
}
