import { describe, expect, it } from 'vitest';
import { RepositoryCorruptError } from '../errors/drkit-error.js';
import {
  deriveMasterKey,
  deriveSubkey,
  ID_KEY_INFO,
  SEAL_KEY_INFO,
  sealJson,
  unsealJson,
} from './sealing.js';

describe('sealing primitives', () => {
  const key = new Uint8Array(32).fill(7);
  it('derives distinct subkeys and a deterministic master key', async () => {
    expect(Buffer.from(deriveSubkey(key, SEAL_KEY_INFO))).not.toEqual(
      Buffer.from(deriveSubkey(key, ID_KEY_INFO)),
    );
    const salt = new Uint8Array(16);
    const a = await deriveMasterKey('pass', salt, { N: 1024, r: 8, p: 1 });
    const b = await deriveMasterKey('pass', salt, { N: 1024, r: 8, p: 1 });
    expect(Buffer.from(a)).toEqual(Buffer.from(b));
  });
  it('round-trips a DRKE envelope and names the blob on every flipped bit', () => {
    const plain = Buffer.from('{"a":1}\n');
    const sealed = sealJson(key, plain);
    expect(Buffer.from(unsealJson(key, sealed, 'points/x.json'))).toEqual(plain);
    expect(Buffer.from(sealed).includes(plain)).toBe(false);
    for (let bit = 0; bit < sealed.byteLength * 8; bit += 7) {
      const flipped = new Uint8Array(sealed);
      flipped[bit >> 3]! ^= 1 << (bit & 7);
      expect(() => unsealJson(key, flipped, 'points/x.json')).toThrow(/points\/x\.json/);
      try {
        unsealJson(key, flipped, 'points/x.json');
      } catch (error) {
        expect(RepositoryCorruptError.isInstance(error)).toBe(true);
      }
    }
  });
});
