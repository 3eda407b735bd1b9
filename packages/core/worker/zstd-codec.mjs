// zstd level 1 for the chunk worker. Two interchangeable codecs that write and read the same frames (one zstd
// frame per chunk, declaring its content size):
//
// - 'addon': @drkit/core's own N-API addon (native/zstd.c), shipped prebuilt in prebuilds/ and loaded through
//   node-gyp-build. It compresses straight into the caller's buffer and decompresses into one buffer of the
//   plain length, with one compression and one decompression context per thread, reused: no garbage per chunk.
// - 'zlib': Node's built-in zstd (node:zlib, Node >= 22.15), when the addon does not load (no prebuilt binary for
//   this platform, e.g. musl or macOS, and none built here). Same repository format, but every call allocates a
//   zstd context and an output buffer that the worker's garbage collector frees late: more memory per worker.
//
// The environment variable DRKIT_ZSTD_CODEC=zlib forces the built-in codec (for tests of that path); unset (or
// 'addon'), the addon is used when it loads; any other value means the built-in codec, with the warning naming
// it. The built-in codec is announced once per process with a process warning (type 'DrkitWarning', code
// 'DRKIT_ZSTD_ADDON_UNAVAILABLE') saying why: in the main thread this module emits it itself; in a worker thread
// it only exports it (`codecWarning`) and the chunk worker hands it to the pool, which emits it once for all its
// workers.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { isMainThread } from 'node:worker_threads';
import { constants, zstdCompressSync, zstdDecompressSync } from 'node:zlib';

/** zstd level of every chunk. */
const LEVEL = 1;

/** The `code` of the warning that says the built-in codec is used. */
export const ADDON_UNAVAILABLE_WARNING = 'DRKIT_ZSTD_ADDON_UNAVAILABLE';

const COMPRESS_PARAMS = {
  [constants.ZSTD_c_compressionLevel]: LEVEL,
  // The frame must declare its content size: the repository checks it against the chunk's plain length.
  [constants.ZSTD_c_contentSizeFlag]: 1,
};

/** The addon, or why it is not used. */
function loadAddon() {
  const forced = process.env.DRKIT_ZSTD_CODEC;
  if (forced === 'zlib') return 'DRKIT_ZSTD_CODEC=zlib is set';
  if (forced !== undefined && forced !== '' && forced !== 'addon') {
    return `DRKIT_ZSTD_CODEC=${forced} is not one of 'addon', 'zlib'`;
  }
  try {
    // The package root: the folder above worker/.
    const addon = createRequire(import.meta.url)('node-gyp-build')(
      fileURLToPath(new URL('..', import.meta.url)),
    );
    if (typeof addon?.compressInto !== 'function' || typeof addon.decompressInto !== 'function') {
      return 'the loaded binary is not the zstd addon of @drkit/core';
    }
    return addon;
  } catch (cause) {
    return String(cause?.message ?? cause).split('\n')[0];
  }
}

const loaded = loadAddon();
const addon = typeof loaded === 'string' ? undefined : loaded;

/** The codec in use: `'addon'` (the package's own) or `'zlib'` (Node's built-in). */
export const codecName = addon ? 'addon' : 'zlib';

/** The zstd library version of the codec in use. */
export const zstdVersion = addon ? addon.version : process.versions.zstd;

/**
 * The warning to emit once per process when the built-in codec is used (`{ message, code }`), else undefined.
 */
export const codecWarning =
  typeof loaded === 'string'
    ? {
        message:
          `@drkit/core: the zstd addon is not used (${loaded}): chunks are compressed with Node's built-in zstd, ` +
          'the same repository format with more memory per chunk worker.' +
          (process.env.DRKIT_ZSTD_CODEC === 'zlib'
            ? ''
            : ' The addon ships prebuilt for linux-x64 (glibc); for another platform, build it in the drkit ' +
              'repository (`pnpm run build` in packages/core: needs python3, make and a C compiler).'),
        code: ADDON_UNAVAILABLE_WARNING,
      }
    : undefined;

if (codecWarning && isMainThread) {
  process.emitWarning(codecWarning.message, { type: 'DrkitWarning', code: codecWarning.code });
}

/** zstd's worst-case compressed size of `size` bytes (`ZSTD_COMPRESSBOUND`). */
export function compressBound(size) {
  const small = 128 * 1024;
  return size + (size >>> 8) + (size < small ? (small - size) >>> 11 : 0);
}

/**
 * Compresses `data` into `out` (which has at least `compressBound(data.byteLength)` bytes) and returns the
 * number of bytes written at the start of `out`: one frame at level 1 that declares its content size.
 */
export const compressInto = addon
  ? (out, data) => addon.compressInto(out, data, LEVEL)
  : (out, data) => {
      // One output buffer of the bound's size makes zlib produce the frame in one piece (its default of 16 KiB
      // pieces halves the throughput on a MiB chunk).
      const frame = zstdCompressSync(data, {
        chunkSize: compressBound(data.byteLength),
        pledgedSrcSize: data.byteLength,
        params: COMPRESS_PARAMS,
      });
      if (frame.byteLength > out.byteLength) {
        throw new RangeError(
          `compressInto: the output buffer of ${out.byteLength} bytes is too small for the frame of ` +
            `${data.byteLength} input bytes (compressBound: ${compressBound(data.byteLength)})`,
        );
      }
      out.set(frame, 0);
      return frame.byteLength;
    };

/** Decompresses one frame of `plainLength` bytes into a new buffer of that length. */
export const decompress = addon
  ? (payload, plainLength) => {
      const plain = Buffer.allocUnsafeSlow(plainLength);
      addon.decompressInto(plain, payload);
      return plain;
    }
  : (payload, plainLength) => zstdDecompressSync(payload, { chunkSize: Math.max(64, plainLength) });

/**
 * Decompresses one frame into `out`, which must have exactly the frame's content size, and returns `out`. The
 * addon writes straight into it; the built-in codec decompresses into a buffer of its own and copies.
 */
export const decompressInto = addon
  ? (out, payload) => {
      addon.decompressInto(out, payload);
      return out;
    }
  : (out, payload) => {
      const plain = zstdDecompressSync(payload, { chunkSize: Math.max(64, out.byteLength) });
      if (plain.byteLength !== out.byteLength) {
        throw new Error(`the frame holds ${plain.byteLength} bytes, expected ${out.byteLength}`);
      }
      out.set(plain, 0);
      return out;
    };
