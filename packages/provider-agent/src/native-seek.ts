import { createRequire } from 'node:module';

/**
 * The `lseek(2)` addon built from `native/seek.c` when the package is installed. Node.js has no `lseek`; drkit
 * needs it to skip the holes of sparse images (`SEEK_DATA` / `SEEK_HOLE`) and to size block devices
 * (`SEEK_END`, since `fstat` reports 0 bytes for them).
 *
 * @internal
 */
export interface NativeSeek {
  /**
   * Moves the file offset of `fd` and returns the new offset, or -1 when `lseek` fails with `ENXIO` (no data,
   * or no hole, at or after `offset`, or `offset` past the end).
   *
   * @throws an `Error` with `code` (`EINVAL` when the filesystem does not support `whence`, `EBADF`, ...),
   * `errno` and `syscall: 'lseek'` for any other failure.
   */
  seek(fd: number, offset: number, whence: number): number;
  readonly SEEK_SET: number;
  readonly SEEK_CUR: number;
  readonly SEEK_END: number;
  /** -1 when the platform does not define it. */
  readonly SEEK_DATA: number;
  /** -1 when the platform does not define it. */
  readonly SEEK_HOLE: number;
}

/** Where the addon lands, relative to this module: `src/` under vitest and `dist/` once bundled by tsup. */
const ADDON_PATH = '../build/Release/seek.node';

let loaded: NativeSeek | undefined;

/**
 * Loads the addon once. Lazy, so that importing the package works on a machine where it was not built; only
 * reading a local disk needs it.
 *
 * @throws an `Error` that says how to build the addon when it is missing or does not load.
 * @internal
 */
export function loadNativeSeek(): NativeSeek {
  if (loaded) return loaded;
  const requireNative = createRequire(import.meta.url);
  let addon: unknown;
  try {
    addon = requireNative(ADDON_PATH);
  } catch (cause) {
    throw new Error(
      'the lseek addon of @drkit/provider-agent (build/Release/seek.node) is not built or does not load: ' +
        'reinstall the package with install scripts allowed (pnpm: list @drkit/provider-agent in ' +
        '`onlyBuiltDependencies`), or run `npx node-gyp rebuild` in its folder (needs python3, make and a C compiler)',
      { cause },
    );
  }
  if (!isNativeSeek(addon)) {
    throw new Error(
      'build/Release/seek.node of @drkit/provider-agent is not the expected lseek addon: rebuild it',
    );
  }
  loaded = addon;
  return addon;
}

function isNativeSeek(value: unknown): value is NativeSeek {
  if (typeof value !== 'object' || value === null) return false;
  const candidate = value as Record<string, unknown>;
  return (
    typeof candidate.seek === 'function' &&
    ['SEEK_SET', 'SEEK_CUR', 'SEEK_END', 'SEEK_DATA', 'SEEK_HOLE'].every(
      (name) => typeof candidate[name] === 'number',
    )
  );
}
