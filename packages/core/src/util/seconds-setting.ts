import { InvalidSettingsError } from '../errors/drkit-error.js';

/**
 * Validates a duration setting in seconds: `value` (or `fallback` when it is undefined) must be above 0 and at
 * most 86400 (one day); with `wholeSeconds`, a whole number from 1.
 *
 * @throws {@link InvalidSettingsError} naming `field`.
 * @internal
 */
export function resolveSecondsSetting(
  value: number | undefined,
  fallback: number,
  field: string,
  options: { readonly wholeSeconds?: boolean } = {},
): number {
  const seconds = value ?? fallback;
  if (options.wholeSeconds) {
    if (!Number.isInteger(seconds) || seconds < 1 || seconds > 86_400) {
      throw new InvalidSettingsError(
        field,
        `must be a whole number of seconds from 1 to 86400, got ${seconds}`,
      );
    }
  } else if (typeof seconds !== 'number' || !(seconds > 0) || seconds > 86_400) {
    throw new InvalidSettingsError(
      field,
      `must be a number of seconds above 0 and at most 86400, got ${seconds}`,
    );
  }
  return seconds;
}
