import { describe, expect, it } from 'vitest';
import { freeNow } from './free-now.js';

describe('freeNow', () => {
  it('frees a buffer that spans its own ArrayBuffer', () => {
    const bytes = new Uint8Array(1 << 20).fill(7);
    freeNow(bytes);
    expect(bytes.buffer.detached).toBe(true);
    expect(bytes.byteLength).toBe(0);
  });

  it('leaves alone a view into a larger buffer, and every other view of it', () => {
    const whole = new Uint8Array(4096).fill(3);
    const part = whole.subarray(0, 1024);
    freeNow(part);
    expect(whole.buffer.detached).toBe(false);
    expect(part.byteLength).toBe(1024);
    expect(whole[4095]).toBe(3);
    const tail = whole.subarray(1024);
    freeNow(tail);
    expect(whole.byteLength).toBe(4096);
  });

  it("leaves alone a Buffer from Node's shared pool", () => {
    const pooled = Buffer.from('a small string lives in the pool');
    const neighbour = Buffer.from('and so does its neighbour');
    freeNow(pooled);
    expect(pooled.toString()).toBe('a small string lives in the pool');
    expect(neighbour.toString()).toBe('and so does its neighbour');
  });

  it('leaves alone shared, resizable and already detached buffers', () => {
    const shared = new Uint8Array(new SharedArrayBuffer(64));
    freeNow(shared);
    expect(shared.byteLength).toBe(64);
    const resizable = new Uint8Array(new ArrayBuffer(64, { maxByteLength: 128 }));
    freeNow(resizable);
    expect(resizable.buffer.detached).toBe(false);
    const gone = new Uint8Array(64);
    freeNow(gone);
    expect(() => freeNow(gone)).not.toThrow();
  });
});
