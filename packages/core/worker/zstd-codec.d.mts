// Types of zstd-codec.mjs, the chunk worker's zstd codec (internal to @drkit/core: not an export of the package).

/** The `code` of the `DrkitWarning` that says the built-in codec is used. */
export declare const ADDON_UNAVAILABLE_WARNING: 'DRKIT_ZSTD_ADDON_UNAVAILABLE';

/** The codec in use: `'addon'` (the package's own) or `'zlib'` (Node's built-in). */
export declare const codecName: 'addon' | 'zlib';

/** The zstd library version of the codec in use. */
export declare const zstdVersion: string;

/** The warning to emit once per process when the built-in codec is used, else undefined. */
export declare const codecWarning:
  | { readonly message: string; readonly code: 'DRKIT_ZSTD_ADDON_UNAVAILABLE' }
  | undefined;

/** zstd's worst-case compressed size of `size` bytes (`ZSTD_COMPRESSBOUND`). */
export declare function compressBound(size: number): number;

/**
 * Compresses `data` into `out` and returns the number of bytes written at its start: one frame at level 1 that
 * declares its content size.
 *
 * @throws a `RangeError` when the frame does not fit in `out` (`compressBound(data.byteLength)` bytes suffice).
 */
export declare function compressInto(out: Uint8Array, data: Uint8Array): number;

/**
 * Decompresses one frame of `plainLength` bytes into a new buffer.
 *
 * @throws an `Error` when the frame is corrupt (the addon: also when it does not declare `plainLength`).
 */
export declare function decompress(payload: Uint8Array, plainLength: number): Buffer;

/**
 * Decompresses one frame into `out` (exactly the frame's content size) and returns `out`.
 *
 * @throws an `Error` when the frame is corrupt or does not hold `out.byteLength` bytes.
 */
export declare function decompressInto(out: Uint8Array, payload: Uint8Array): Uint8Array;
