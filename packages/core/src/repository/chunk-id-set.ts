import { CHUNK_ID_BYTES, sameId } from './chunk-id.js';

/**
 * A set of 32-byte chunk ids in one typed array (open addressing, linear probing, at most half full): about
 * 64–128 bytes per id and nothing per id on the JS heap, so a set of millions of chunks stays cheap. Ids are
 * SHA-256 digests, so their first bytes are already uniformly distributed and serve as the hash. The all-zero
 * id is never stored (it marks a zero chunk, which is not a stored chunk).
 *
 * Its memory grows with its ids (one array, doubled when half full: 8 GiB past ~67 M ids), so it holds sets bounded
 * by something else (one session's chunks, the damaged chunks). Enumerations over the whole repository (prune,
 * verify) use the external sort of `sorted-chunk-ids.ts` instead, whose memory is a constant.
 *
 * @internal
 */
export class ChunkIdSet {
  private slots: Uint8Array;
  private used: Uint8Array;
  private mask: number;
  private count = 0;

  constructor(expected = 1024) {
    let capacity = 16;
    while (capacity < expected * 2) capacity *= 2;
    this.slots = new Uint8Array(capacity * CHUNK_ID_BYTES);
    this.used = new Uint8Array(capacity);
    this.mask = capacity - 1;
  }

  /** Number of ids in the set. */
  get size(): number {
    return this.count;
  }

  private start(id: Uint8Array, offset: number): number {
    return (
      ((id[offset]! | (id[offset + 1]! << 8) | (id[offset + 2]! << 16) | (id[offset + 3]! << 24)) >>> 0) &
      this.mask
    );
  }

  private find(id: Uint8Array, offset: number): number {
    let slot = this.start(id, offset);
    while (this.used[slot] === 1) {
      if (sameId(this.slots, slot * CHUNK_ID_BYTES, id, offset)) return slot;
      slot = (slot + 1) & this.mask;
    }
    return -1 - slot;
  }

  /** Whether the 32 bytes of `id` at `offset` are in the set. */
  has(id: Uint8Array, offset = 0): boolean {
    return this.find(id, offset) >= 0;
  }

  /** Adds the 32 bytes of `id` at `offset`; returns whether they were new. */
  add(id: Uint8Array, offset = 0): boolean {
    const found = this.find(id, offset);
    if (found >= 0) return false;
    const slot = -1 - found;
    this.slots.set(id.subarray(offset, offset + CHUNK_ID_BYTES), slot * CHUNK_ID_BYTES);
    this.used[slot] = 1;
    this.count++;
    if (this.count * 2 > this.used.length) this.grow();
    return true;
  }

  /** Removes an id; returns whether it was there. */
  delete(id: Uint8Array, offset = 0): boolean {
    let slot = this.find(id, offset);
    if (slot < 0) return false;
    this.used[slot] = 0;
    this.count--;
    // Re-insert the rest of the probe run so that lookups past the hole still find their ids.
    slot = (slot + 1) & this.mask;
    while (this.used[slot] === 1) {
      this.used[slot] = 0;
      this.count--;
      const moved = this.slots.slice(slot * CHUNK_ID_BYTES, (slot + 1) * CHUNK_ID_BYTES);
      this.add(moved);
      slot = (slot + 1) & this.mask;
    }
    return true;
  }

  /** Calls `callback` with a view of each id (valid only during the call). */
  forEach(callback: (id: Uint8Array) => void): void {
    for (let slot = 0; slot < this.used.length; slot++) {
      if (this.used[slot] === 1)
        callback(this.slots.subarray(slot * CHUNK_ID_BYTES, (slot + 1) * CHUNK_ID_BYTES));
    }
  }

  /** Yields a view of each id (valid until the next step); the set must not change while this runs. */
  *values(): Generator<Uint8Array> {
    for (let slot = 0; slot < this.used.length; slot++) {
      if (this.used[slot] === 1)
        yield this.slots.subarray(slot * CHUNK_ID_BYTES, (slot + 1) * CHUNK_ID_BYTES);
    }
  }

  private grow(): void {
    const oldSlots = this.slots;
    const oldUsed = this.used;
    const capacity = oldUsed.length * 2;
    this.slots = new Uint8Array(capacity * CHUNK_ID_BYTES);
    this.used = new Uint8Array(capacity);
    this.mask = capacity - 1;
    this.count = 0;
    for (let slot = 0; slot < oldUsed.length; slot++) {
      if (oldUsed[slot] === 1) this.add(oldSlots, slot * CHUNK_ID_BYTES);
    }
  }
}
