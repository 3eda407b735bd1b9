import { DrkitError } from '../errors/drkit-error.js';
import type { PlatformStatus } from '../spec/v2/index.js';

/**
 * The `abnormal` status a platform's `verify()` reports for an error: the error's message as the reason and its
 * stable code (a drkit error's `code`, or a system error's `code` such as `ENOENT`). When `signal` is aborted it
 * rethrows the abort reason instead, since `verify()` reports source problems and never hides an abort.
 *
 * `options.prefix` puts words before the message, e.g. `disk d1: cannot open /dev/sdb`.
 *
 * @example
 * ```ts
 * try { await connect(); } catch (error) { return abnormalStatus(error, { signal }); }
 * ```
 */
export function abnormalStatus(
  error: unknown,
  options: { signal?: AbortSignal; prefix?: string } = {},
): Extract<PlatformStatus, { status: 'abnormal' }> {
  if (options.signal?.aborted) throw options.signal.reason;
  const message = error instanceof Error ? error.message : String(error);
  const code = DrkitError.isInstance(error) ? error.code : (error as NodeJS.ErrnoException | undefined)?.code;
  return {
    status: 'abnormal',
    reason: options.prefix === undefined ? message : `${options.prefix}: ${message}`,
    ...(typeof code === 'string' ? { code } : {}),
    checkedAt: new Date().toISOString(),
  };
}
