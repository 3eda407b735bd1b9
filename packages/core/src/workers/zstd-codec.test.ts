import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { constants, zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import { describe, expect, it, vi } from 'vitest';
import * as codec from '../../worker/zstd-codec.mjs';
import { ChunkWorkerPool, zstdCompressBound } from './chunk-worker-pool.js';

/** The addon of native/zstd.c, as node-gyp-build loads it. */
interface ZstdAddon {
  compressInto(out: Uint8Array, input: Uint8Array, level: number): number;
  decompressInto(out: Uint8Array, input: Uint8Array): number;
  compressBound(size: number): number;
  readonly version: string;
}

const packageRoot = fileURLToPath(new URL('../..', import.meta.url));
const requireHere = createRequire(import.meta.url);
const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest();

function loadAddon(): ZstdAddon | string {
  try {
    return requireHere('node-gyp-build')(packageRoot) as ZstdAddon;
  } catch (cause) {
    return (cause as Error).message;
  }
}

/** Where the package ships the addon prebuilt, the build must have produced it: there its tests never skip. */
const shipsPrebuilt =
  process.platform === 'linux' &&
  process.arch === 'x64' &&
  Boolean(
    (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime,
  );
const loaded = loadAddon();
const addon = typeof loaded === 'string' ? undefined : loaded;
const forcedZlib = process.env.DRKIT_ZSTD_CODEC === 'zlib';

/** Deterministic pseudo-random bytes (xorshift32). */
function randomBytes(length: number, seed: number): Buffer {
  const bytes = Buffer.alloc(length);
  let state = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    bytes[i] = state & 0xff;
  }
  return bytes;
}

/** Text-like bytes that compress well but not to nothing. */
function compressibleBytes(length: number): Buffer {
  const bytes = Buffer.alloc(length);
  const words = ['block ', 'chunk ', 'extent ', 'snapshot ', 'point ', 'lineage\n'];
  let at = 0;
  for (let i = 0; at < length; i = (i * 7 + 3) % 1009) {
    at += bytes.write(`${words[i % words.length]}${i} `, at);
  }
  return bytes;
}

const inputs: ReadonlyArray<readonly [string, Buffer]> = [
  ['random (1 MiB)', randomBytes(1024 * 1024, 42)],
  ['random, odd size (300 001 bytes)', randomBytes(300_001, 7)],
  ['compressible (1 MiB)', compressibleBytes(1024 * 1024)],
  ['all zero (256 KiB)', Buffer.alloc(256 * 1024)],
  ['one byte', Buffer.from([0x5a])],
];

const ZLIB_PARAMS = { [constants.ZSTD_c_compressionLevel]: 1, [constants.ZSTD_c_contentSizeFlag]: 1 };

function compressWith(target: ZstdAddon, input: Uint8Array): Buffer {
  const out = Buffer.alloc(target.compressBound(input.byteLength));
  return out.subarray(0, target.compressInto(out, input, 1));
}

function decompressWith(target: ZstdAddon, frame: Uint8Array, plainLength: number): Buffer {
  const plain = Buffer.alloc(plainLength);
  expect(target.decompressInto(plain, frame)).toBe(plainLength);
  return plain;
}

/** Size of a zstd frame header (RFC 8878, 3.1.1.1), so a test can reach the first block header after it. */
function frameHeaderSize(frame: Uint8Array): number {
  const descriptor = frame[4]!;
  const singleSegment = (descriptor >> 5) & 1;
  const contentSizeBytes = [singleSegment ? 1 : 0, 2, 4, 8][descriptor >> 6]!;
  const dictionaryIdBytes = [0, 1, 2, 4][descriptor & 3]!;
  return 4 + 1 + (singleSegment ? 0 : 1) + dictionaryIdBytes + contentSizeBytes;
}

/** Runs `run` with the variables set in process.env (a worker copies the environment when it starts). */
function withEnvironment<T>(variables: Record<string, string>, run: () => T): T {
  const previous = Object.fromEntries(Object.keys(variables).map((name) => [name, process.env[name]]));
  Object.assign(process.env, variables);
  try {
    return run();
  } finally {
    for (const [name, value] of Object.entries(previous)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
}

function thrown(run: () => unknown): Error & { code?: string; zstdError?: string } {
  try {
    run();
  } catch (error) {
    return error as Error & { code?: string };
  }
  throw new Error('expected a throw');
}

describe.skipIf(!addon && !shipsPrebuilt)('the zstd addon', () => {
  const zstd = addon as ZstdAddon;

  it('loads (the prebuilt binary of this platform) and is zstd 1.5.7', () => {
    expect(loaded).not.toBeTypeOf('string');
    expect(zstd.version).toBe('1.5.7');
  });

  it.each(inputs)('round-trips %s, through itself and through node:zlib both ways', (_name, input) => {
    const frame = compressWith(zstd, input);
    expect(frame.byteLength).toBeLessThanOrEqual(zstd.compressBound(input.byteLength));
    expect(decompressWith(zstd, frame, input.byteLength).equals(input)).toBe(true);
    expect(zstdDecompressSync(frame).equals(input)).toBe(true);
    const zlibFrame = zstdCompressSync(input, { pledgedSrcSize: input.byteLength, params: ZLIB_PARAMS });
    expect(decompressWith(zstd, zlibFrame, input.byteLength).equals(input)).toBe(true);
  });

  it('compresses all-zero and compressible chunks to a small fraction', () => {
    expect(compressWith(zstd, Buffer.alloc(256 * 1024)).byteLength).toBeLessThan(100);
    expect(compressWith(zstd, compressibleBytes(1024 * 1024)).byteLength).toBeLessThan(512 * 1024);
  });

  it('writes at the start of the view it is given and nothing outside it', () => {
    const input = compressibleBytes(64 * 1024);
    const buffer = Buffer.alloc(12 + zstd.compressBound(input.byteLength) + 4, 0xaa);
    const view = buffer.subarray(12, buffer.byteLength - 4);
    const written = zstd.compressInto(view, input, 1);
    expect(buffer.subarray(0, 12).equals(Buffer.alloc(12, 0xaa))).toBe(true);
    // (zstd may use the rest of the view as scratch space.)
    expect(buffer.subarray(buffer.byteLength - 4).equals(Buffer.alloc(4, 0xaa))).toBe(true);
    expect(zstdDecompressSync(view.subarray(0, written)).equals(input)).toBe(true);
  });

  it('has the bound of zstdCompressBound and of the codec module', () => {
    for (const size of [0, 1, 4095, 128 * 1024 - 1, 128 * 1024, 128 * 1024 + 1, 300_001, 1 << 20, 4 << 20]) {
      expect([size, zstd.compressBound(size)]).toEqual([size, zstdCompressBound(size)]);
      expect(codec.compressBound(size)).toBe(zstdCompressBound(size));
    }
  });

  it('throws a RangeError with a code when the output buffer is too small', () => {
    const input = randomBytes(4096, 1);
    const error = thrown(() => zstd.compressInto(Buffer.alloc(100), input, 1));
    expect(error).toBeInstanceOf(RangeError);
    expect(error.code).toBe('ERR_ZSTD_DST_SIZE_TOO_SMALL');
    expect(error.message).toBe(
      'compressInto: the output buffer of 100 bytes is too small for the frame of 4096 input bytes ' +
        `(compressBound: ${zstdCompressBound(4096)})`,
    );
  });

  it('rejects a corrupt frame with zstd error name', () => {
    const input = compressibleBytes(64 * 1024);
    const frame = Buffer.from(compressWith(zstd, input));
    const corrupt = Buffer.from(frame);
    const blockHeader = frameHeaderSize(frame);
    corrupt[blockHeader] = corrupt[blockHeader]! | 0b110; // the first block's type: 3, reserved
    const error = thrown(() => zstd.decompressInto(Buffer.alloc(input.byteLength), corrupt));
    expect([error.code, error.message, error.zstdError]).toEqual([
      'ERR_ZSTD',
      'decompressInto: zstd failed: Data corruption detected',
      'Data corruption detected',
    ]);
    const truncated = thrown(() =>
      zstd.decompressInto(Buffer.alloc(input.byteLength), frame.subarray(0, -1)),
    );
    expect(truncated.message).toBe('decompressInto: zstd failed: Src size is incorrect');
    const trailing = thrown(() =>
      zstd.decompressInto(Buffer.alloc(input.byteLength), Buffer.concat([frame, Buffer.from('junk')])),
    );
    expect(trailing.message).toBe('decompressInto: zstd failed: Src size is incorrect');
    const notZstd = thrown(() =>
      zstd.decompressInto(Buffer.alloc(16), Buffer.from('not a zstd frame at all')),
    );
    expect(notZstd.message).toBe('decompressInto: zstd failed: Unknown frame descriptor');
  });

  it('rejects a frame that declares another size than the output buffer, or none', () => {
    const input = compressibleBytes(1 << 20);
    const frame = compressWith(zstd, input);
    const shorter = thrown(() => zstd.decompressInto(Buffer.alloc(input.byteLength - 1), frame));
    expect([shorter.code, shorter.message]).toEqual([
      'ERR_ZSTD_CONTENT_SIZE_MISMATCH',
      `decompressInto: the frame declares ${input.byteLength} bytes, the output buffer has ${input.byteLength - 1}`,
    ]);
    const undeclared = zstdCompressSync(input, {
      params: { ...ZLIB_PARAMS, [constants.ZSTD_c_contentSizeFlag]: 0 },
    });
    expect(thrown(() => zstd.decompressInto(Buffer.alloc(input.byteLength), undeclared)).message).toBe(
      `decompressInto: the frame does not declare its content size (expected ${input.byteLength} bytes)`,
    );
    // A header that lies: one byte, declared as two.
    const one = Buffer.from(compressWith(zstd, Buffer.from([7])));
    expect(frameHeaderSize(one)).toBe(6); // single segment, 1-byte content size at offset 5
    one[5] = 2;
    const lying = thrown(() => zstd.decompressInto(Buffer.alloc(2), one));
    expect([lying.code, lying.zstdError]).toEqual(['ERR_ZSTD', 'Data corruption detected']);
  });

  it('checks its arguments', () => {
    const out = Buffer.alloc(1024);
    expect(thrown(() => zstd.compressInto(out, 'text' as never, 1)).code).toBe('ERR_INVALID_ARG_TYPE');
    expect(thrown(() => zstd.compressInto(new Uint16Array(8) as never, out, 1)).message).toBe(
      'compressInto: out must be a Uint8Array',
    );
    expect(thrown(() => zstd.compressInto(out.subarray(0, 512), out.subarray(256), 1)).message).toBe(
      'compressInto: out and input must not overlap',
    );
    expect(thrown(() => zstd.compressInto(out, Buffer.alloc(8), 23)).code).toBe('ERR_OUT_OF_RANGE');
    expect(thrown(() => zstd.compressInto(out, Buffer.alloc(8), 1.5)).code).toBe('ERR_INVALID_ARG_TYPE');
    expect(thrown(() => zstd.compressBound(-1)).code).toBe('ERR_OUT_OF_RANGE');
    expect(thrown(() => (zstd.decompressInto as (out: Uint8Array) => number)(out)).code).toBe(
      'ERR_MISSING_ARGS',
    );
  });

  it('is the codec of the chunk worker module unless DRKIT_ZSTD_CODEC=zlib', () => {
    expect(codec.codecName).toBe(forcedZlib ? 'zlib' : 'addon');
    expect(codec.codecWarning === undefined).toBe(!forcedZlib);
    const input = compressibleBytes(300_001);
    const out = new Uint8Array(12 + codec.compressBound(input.byteLength));
    const written = codec.compressInto(out.subarray(12), input);
    const plain = codec.decompress(out.subarray(12, 12 + written), input.byteLength);
    expect(plain.equals(input)).toBe(true);
    // A buffer of its own, so the worker can transfer it.
    expect([plain.byteOffset, plain.buffer.byteLength]).toEqual([0, input.byteLength]);
  });
});

describe('the chunk worker pool and its codec', () => {
  it('round-trips chunks through pools started and closed one after the other', async () => {
    for (let round = 0; round < 2; round++) {
      const pool = new ChunkWorkerPool(2);
      try {
        const chunks = [compressibleBytes(1 << 20), randomBytes(256 * 1024, round + 1)];
        const encoded = await Promise.all(chunks.map((chunk) => pool.encode(Buffer.from(chunk))));
        const decoded = await Promise.all(
          encoded.map((result, i) => {
            if (result.kind !== 'data') throw new Error(`chunk ${i} was ${result.kind}`);
            return pool.decode(result.payload, result.codec, chunks[i]!.byteLength);
          }),
        );
        expect(encoded.map((result) => result.kind === 'data' && result.codec)).toEqual([1, 0]);
        expect(decoded.map((result, i) => Buffer.from(result.plain).equals(chunks[i]!))).toEqual([
          true,
          true,
        ]);
      } finally {
        await pool.close();
      }
    }
  });

  it.each([
    ['the codec in use', {}],
    ['the built-in codec', { DRKIT_ZSTD_CODEC: 'zlib' }],
  ])(
    'decodes into the output it is given with %s, and hands an unused output back as spare',
    async (_name, env) => {
      const pool = withEnvironment(env, () => new ChunkWorkerPool(1));
      try {
        const packed = compressibleBytes(300_001);
        const raw = randomBytes(4096, 7);
        const [zstd, stored] = await Promise.all([
          pool.encode(Buffer.from(packed)),
          pool.encode(Buffer.from(raw)),
        ]);
        if (zstd?.kind !== 'data' || stored?.kind !== 'data') throw new Error('expected data chunks');
        expect([zstd.codec, stored.codec]).toEqual([1, 0]);

        // Payloads of their own (a small Buffer.from copy would sit in Node's shared pool, which cannot move).
        const output = new Uint8Array(1 << 20);
        const decoded = await pool.decode(
          new Uint8Array(zstd.payload),
          1,
          packed.byteLength,
          true,
          undefined,
          output,
        );
        expect(output.byteLength).toBe(0); // moved to the worker
        expect(decoded.plain.buffer.byteLength).toBe(1 << 20); // it came back holding the plain bytes
        expect(Buffer.from(decoded.plain).equals(packed)).toBe(true);
        expect(Buffer.from(decoded.hash).equals(sha256(packed))).toBe(true);
        expect(decoded.spare).toBeUndefined();

        const again = new Uint8Array(decoded.plain.buffer); // recycled for the next chunk
        const rawDecoded = await pool.decode(
          new Uint8Array(stored.payload),
          0,
          raw.byteLength,
          true,
          undefined,
          again,
        );
        expect(Buffer.from(rawDecoded.plain).equals(raw)).toBe(true);
        expect(rawDecoded.spare?.byteLength).toBe(1 << 20); // unused, back whole

        // An output too small is handed back unused; a view into a larger buffer is refused.
        const small = new Uint8Array(16);
        const fallback = await pool.decode(
          new Uint8Array(zstd.payload),
          1,
          packed.byteLength,
          true,
          undefined,
          small,
        );
        expect(Buffer.from(fallback.plain).equals(packed)).toBe(true);
        expect(fallback.spare?.byteLength).toBe(16);
        await expect(
          pool.decode(
            new Uint8Array(zstd.payload),
            1,
            packed.byteLength,
            true,
            undefined,
            new Uint8Array(8).subarray(1),
          ),
        ).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      } finally {
        await pool.close();
      }
    },
  );

  it('with DRKIT_ZSTD_CODEC=zlib, its workers use the built-in codec and the pool warns once', async () => {
    const warnings: Array<{ name: string; code?: string; message: string }> = [];
    const listener = (warning: Error & { code?: string }) => {
      if (warning.code === codec.ADDON_UNAVAILABLE_WARNING) warnings.push(warning);
    };
    process.on('warning', listener);
    // A fresh copy of the pool's module: its once-per-process memory starts empty, whatever ran before.
    vi.resetModules();
    const { ChunkWorkerPool: FreshPool } = await import('./chunk-worker-pool.js');
    const pool = withEnvironment({ DRKIT_ZSTD_CODEC: 'zlib' }, () => new FreshPool(2));
    try {
      const chunks = [compressibleBytes(1 << 20), compressibleBytes(300_001)];
      // Two at once: one to each worker, whose warning comes before its answer.
      const encoded = await Promise.all(chunks.map((chunk) => pool.encode(Buffer.from(chunk))));
      const frames = encoded.map((result) => {
        if (result.kind !== 'data' || result.codec !== 1) throw new Error('expected a zstd chunk');
        return Buffer.from(result.payload);
      });
      for (const [i, frame] of frames.entries()) {
        expect(zstdDecompressSync(frame).equals(chunks[i]!)).toBe(true);
        if (addon) expect(decompressWith(addon, frame, chunks[i]!.byteLength).equals(chunks[i]!)).toBe(true);
      }
      // And the built-in codec reads the addon's frames (or its own, without the addon).
      const frame = addon ? compressWith(addon, chunks[0]!) : frames[0]!;
      const decoded = await pool.decode(frame, 1, chunks[0]!.byteLength);
      expect(Buffer.from(decoded.plain).equals(chunks[0]!)).toBe(true);
      await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on the next tick
      expect(warnings.map((warning) => [warning.name, warning.code])).toEqual([
        ['DrkitWarning', 'DRKIT_ZSTD_ADDON_UNAVAILABLE'],
      ]);
      expect(warnings[0]!.message).toMatch(
        /^@drkit\/core: the zstd addon is not used \(DRKIT_ZSTD_CODEC=zlib is set\): chunks are compressed with Node's built-in zstd/,
      );
    } finally {
      process.off('warning', listener);
      await pool.close();
    }
  });

  it('with DRKIT_ZSTD_CODEC=zlib in a fresh process, the codec module is the built-in one, warns once, and interoperates', async () => {
    const plain = inputs.map(([, input]) => input);
    const addonFrames = addon ? plain.map((input) => compressWith(addon, input)) : [];
    const request = {
      inputs: plain.map((input) => input.toString('base64')),
      frames: addonFrames.map((frame, i) => ({
        frame: frame.toString('base64'),
        plainLength: plain[i]!.byteLength,
      })),
    };
    const child = spawn(
      process.execPath,
      [fileURLToPath(new URL('zstd-codec-child.fixture.mjs', import.meta.url))],
      {
        env: { ...process.env, DRKIT_ZSTD_CODEC: 'zlib' },
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (data: Buffer) => stdout.push(data));
    child.stderr.on('data', (data: Buffer) => stderr.push(data));
    child.stdin.end(JSON.stringify(request));
    const status = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect({ status, stderr: status === 0 ? '' : Buffer.concat(stderr).toString() }).toEqual({
      status: 0,
      stderr: '',
    });
    const report = JSON.parse(Buffer.concat(stdout).toString()) as {
      codecName: string;
      warnings: Array<{ name: string; code?: string; message: string }>;
      frames: string[];
      plains: string[];
    };
    expect(report.codecName).toBe('zlib');
    expect(report.warnings.map((warning) => [warning.name, warning.code])).toEqual([
      ['DrkitWarning', 'DRKIT_ZSTD_ADDON_UNAVAILABLE'],
    ]);
    expect(report.warnings[0]!.message).toContain('(DRKIT_ZSTD_CODEC=zlib is set)');
    for (const [i, frame] of report.frames.entries()) {
      const bytes = Buffer.from(frame, 'base64');
      expect(zstdDecompressSync(bytes).equals(plain[i]!)).toBe(true);
      if (addon) expect(decompressWith(addon, bytes, plain[i]!.byteLength).equals(plain[i]!)).toBe(true);
    }
    expect(report.plains.map((bytes, i) => Buffer.from(bytes, 'base64').equals(plain[i]!))).toEqual(
      addonFrames.map(() => true),
    );
  }, 60_000);
});
