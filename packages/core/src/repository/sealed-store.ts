import { RepositoryCorruptError } from '../errors/drkit-error.js';
import type { CallOptions } from '../spec/v2/index.js';
import { CHUNK_BLOB_HEADER_BYTES } from './chunk-blob.js';
import { MAX_CHUNK_SIZE } from './chunk-index.js';
import { KEYS_PREFIX } from './keyring.js';
import { CONFIG_KEY } from './repository-config.js';
import {
  SEAL_NONCE_BYTES,
  SEAL_TAG_BYTES,
  SEALED_MAGIC,
  SEALED_VERSION,
  seal,
  sealedLength,
  unseal,
} from './sealing.js';
import type { Store, StoreEntry, StorePutOptions } from './store.js';

/** Bytes a sealed blob adds to the blob it seals: `DRKE`, the version byte, the nonce and the tag. */
export const SEALED_BLOB_OVERHEAD = 5 + SEAL_NONCE_BYTES + SEAL_TAG_BYTES;

/** Recycled sealing buffers are allocated in multiples of 64 KiB, so that one serves blobs of nearby sizes. */
const SPARE_ROUNDING = 64 * 1024;
/**
 * The most sealing buffers kept for reuse: more than the puts one disk task has in flight on a small proxy (2 ×
 * chunk workers + 2: 6 on 2 cores). Beyond them (many workers, several disk tasks at once) puts allocate.
 */
const MAX_SPARES = 16;
/** The largest recycled sealing buffer: room for a sealed chunk blob of the largest chunk. */
const MAX_SPARE_BYTES =
  Math.ceil((MAX_CHUNK_SIZE + CHUNK_BLOB_HEADER_BYTES + SEALED_BLOB_OVERHEAD) / SPARE_ROUNDING) *
  SPARE_ROUNDING;

/** Whether a key is one an encrypted repository keeps in the clear: `config` and the key blobs. */
function isClear(key: string): boolean {
  return key === CONFIG_KEY || key.startsWith(KEYS_PREFIX);
}

/** The associated data of the blob at `key`: `DRKE`, the version byte, and the key in UTF-8. */
function aadOf(key: string): Uint8Array {
  const name = Buffer.from(key, 'utf8');
  const aad = Buffer.allocUnsafe(5 + name.byteLength);
  aad.set(SEALED_MAGIC, 0);
  aad[4] = SEALED_VERSION;
  aad.set(name, 5);
  return aad;
}

/**
 * The store of an encrypted repository: every blob but `config` and `keys/…` is sealed on the way in and opened
 * (authenticated) on the way out, so the repository's code reads and writes the same blobs as in a repository
 * without encryption. A sealed blob is `DRKE`, version 1, a random 12-byte nonce, the AES-256-GCM ciphertext of
 * the blob and its 16-byte tag; the associated data is `DRKE`, the version byte and the blob's key, so a blob
 * moved to another key does not open. Sizes it reports are those of the blobs it seals (the stored size less
 * {@link SEALED_BLOB_OVERHEAD}).
 *
 * @internal
 */
export class SealedStore implements Store {
  readonly kind: string;
  readonly location: string;
  readonly sync?: Store['sync'];
  readonly size?: Store['size'];
  readonly deleteMany?: Store['deleteMany'];
  readonly immutability?: Store['immutability'];
  readonly createOnlyProvesWhole?: true;
  readonly readConcurrency?: number;
  /** Sealing buffers whose puts resolved, for the next puts. */
  private readonly spare: Uint8Array[] = [];
  private putsInFlight = 0;
  private mostInFlight = 0;

  constructor(
    private readonly inner: Store,
    private readonly sealKey: Uint8Array,
  ) {
    this.kind = inner.kind;
    this.location = inner.location;
    // A sealed blob is written and stored whole exactly when the inner blob is.
    if (inner.createOnlyProvesWhole === true) this.createOnlyProvesWhole = true;
    if (inner.readConcurrency !== undefined) this.readConcurrency = inner.readConcurrency;
    if (inner.sync !== undefined) this.sync = (keys, options) => inner.sync!(keys, options);
    // Locks and bulk deletes act on keys, which a sealed store does not change: forwarded as they are.
    if (inner.deleteMany !== undefined) this.deleteMany = (keys, options) => inner.deleteMany!(keys, options);
    if (inner.immutability !== undefined) this.immutability = inner.immutability;
    const innerSize = inner.size;
    if (innerSize !== undefined) {
      this.size = async (key, options) => {
        const size = await innerSize.call(inner, key, options);
        return size === undefined || isClear(key) ? size : Math.max(0, size - SEALED_BLOB_OVERHEAD);
      };
    }
  }

  /**
   * The blob at `key`, opened.
   *
   * @throws {@link RepositoryCorruptError} naming the key when it is not sealed or does not authenticate
   * (damaged, moved from another key, or sealed with another data key).
   */
  async get(key: string, options?: CallOptions): Promise<Uint8Array> {
    const blob = await this.inner.get(key, options);
    if (isClear(key)) return blob;
    const what = `blob ${key} in the ${this.inner.kind} store ${this.inner.location}`;
    for (let i = 0; i < 4; i++) {
      if (blob[i] !== SEALED_MAGIC[i]) {
        throw new RepositoryCorruptError(`${what} is damaged: it is not sealed (no "DRKE")`);
      }
    }
    if (blob[4] !== SEALED_VERSION) {
      throw new RepositoryCorruptError(`${what} is damaged: unknown sealed blob version ${blob[4]}`);
    }
    return unseal(this.sealKey, blob.subarray(5), aadOf(key), what);
  }

  /**
   * Seals `data` and writes it. The sealed copy goes into a buffer this store recycles once the inner store's
   * `put` resolves (a store is done with a put's bytes then, see {@link Store.put}): a backup seals every chunk it
   * writes, and a fresh buffer per blob, left to the garbage collector, raised its peak RSS by about 50 MiB
   * (measured on the 2 GiB bench image). A put that fails drops its buffer: an aborted upload's client may still
   * be reading it.
   */
  async put(key: string, data: Uint8Array, options?: StorePutOptions): Promise<boolean> {
    if (isClear(key)) return this.inner.put(key, data, options);
    const aad = aadOf(key);
    const buffer = this.takeBuffer(sealedLength(data.byteLength, 5));
    const sealed = seal(this.sealKey, data, aad, 5, buffer);
    sealed.set(aad.subarray(0, 5), 0);
    this.putsInFlight++;
    this.mostInFlight = Math.max(this.mostInFlight, this.putsInFlight);
    let written: boolean;
    try {
      written = await this.inner.put(key, sealed, options);
    } finally {
      this.putsInFlight--;
    }
    this.giveBuffer(buffer);
    return written;
  }

  /** A recycled buffer of at least `length` bytes, or a new one (rounded up so it serves later blobs too). */
  private takeBuffer(length: number): Uint8Array {
    const at = this.spare.findIndex((buffer) => buffer.byteLength >= length);
    if (at >= 0) return this.spare.splice(at, 1)[0]!;
    return new Uint8Array(Math.ceil(length / SPARE_ROUNDING) * SPARE_ROUNDING);
  }

  /**
   * Keeps a buffer for the next puts: at most as many as were ever in flight at once (what a backup needs) and
   * at most {@link MAX_SPARES}, and none for blobs larger than a chunk can be (a rare large blob is left to the
   * collector). What it keeps stays allocated while the repository is open: about 17 MiB at most for 1 MiB chunks.
   */
  private giveBuffer(buffer: Uint8Array): void {
    if (buffer.byteLength > MAX_SPARE_BYTES) return;
    if (this.spare.length >= Math.min(this.mostInFlight, MAX_SPARES)) {
      // Replace a smaller spare, so that the ones kept serve the largest blobs.
      const smallest = this.spare.reduce((s, b, i) => (b.byteLength < this.spare[s]!.byteLength ? i : s), 0);
      if (this.spare[smallest]!.byteLength >= buffer.byteLength) return;
      this.spare.splice(smallest, 1);
    }
    this.spare.push(buffer);
  }

  has(key: string, options?: CallOptions): Promise<boolean> {
    return this.inner.has(key, options);
  }

  async *list(prefix: string, options?: CallOptions): AsyncIterable<StoreEntry> {
    for await (const entry of this.inner.list(prefix, options)) {
      yield isClear(entry.key) ? entry : { ...entry, size: Math.max(0, entry.size - SEALED_BLOB_OVERHEAD) };
    }
  }

  delete(key: string, options?: CallOptions): Promise<void> {
    return this.inner.delete(key, options);
  }
}
