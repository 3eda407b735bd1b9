import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/**
 * The `lseek(2)` addon of `native/seek.c`, shipped prebuilt (N-API) in `prebuilds/`. Node.js has no `lseek`; drkit
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

/**
 * The `code` of the process warning (`process.on('warning')`, `name` `'DrkitWarning'`) emitted once per process
 * when the lseek addon is missing or does not load. drkit still works without it: holes of sparse images are read
 * as data (slower, the same backups) and block devices are sized from `/sys/dev/block`.
 */
export const SEEK_DATA_UNAVAILABLE_WARNING = 'DRKIT_SEEK_DATA_UNAVAILABLE';

/** The package's root folder, from `src/` under vitest and from `dist/` once bundled by tsup. */
const PACKAGE_ROOT = fileURLToPath(new URL('..', import.meta.url));

let loaded: NativeSeek | null | undefined;
let warned = false;

/**
 * Loads the addon once: the prebuilt binary in `prebuilds/` for this platform, or one built from source at
 * install time (`build/Release`), through `node-gyp-build`. Lazy, so that importing the package never needs it.
 *
 * @returns the addon, or `undefined` when it is missing or does not load; then {@link warnSeekDataUnavailable}
 *   has said so.
 * @internal
 */
export function loadNativeSeek(): NativeSeek | undefined {
  if (loaded === undefined) {
    const addon = tryLoadNativeSeek(PACKAGE_ROOT);
    if (typeof addon === 'string') {
      loaded = null;
      warnSeekDataUnavailable(addon);
    } else {
      loaded = addon;
    }
  }
  return loaded ?? undefined;
}

/**
 * Loads the addon of the package rooted at `root`, uncached.
 *
 * @returns the addon, or why it could not be loaded.
 * @internal
 */
export function tryLoadNativeSeek(root: string): NativeSeek | string {
  try {
    const addon: unknown = createRequire(import.meta.url)('node-gyp-build')(root);
    return isNativeSeek(addon) ? addon : 'the loaded binary is not the expected lseek addon';
  } catch (cause) {
    return cause instanceof Error ? cause.message.split('\n')[0]! : String(cause);
  }
}

/**
 * Emits, once per process, the `DrkitWarning` with code {@link SEEK_DATA_UNAVAILABLE_WARNING}: what reading
 * without the addon costs, and how to get it.
 *
 * @internal
 */
export function warnSeekDataUnavailable(reason: string): void {
  if (warned) return;
  warned = true;
  process.emitWarning(
    `@drkit/provider-agent: the lseek addon is not available for ${process.platform}-${process.arch} ` +
      `(${reason}): holes of sparse disk images are read as data (slower, the same backups) and block devices ` +
      'are sized from /sys/dev/block. Reinstall the package where a prebuilt binary exists (linux-x64, glibc) ' +
      'or with python3, make and a C compiler present to build it.',
    { type: 'DrkitWarning', code: SEEK_DATA_UNAVAILABLE_WARNING },
  );
}

/**
 * The addon a reader uses: the injected one (`null`: act as if it were missing, for tests of that path), else
 * the package's own.
 *
 * @internal
 */
export function resolveNativeSeek(injected: NativeSeek | null | undefined): NativeSeek | undefined {
  if (injected === null) {
    warnSeekDataUnavailable('replaced by a test');
    return undefined;
  }
  return injected ?? loadNativeSeek();
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
