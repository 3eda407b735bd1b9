import { InvalidSettingsError } from '../errors/drkit-error.js';
import type { SyncProxySettings } from '../spec/v2/index.js';

/**
 * Defaults of the product page: HTTP timeout 600 s (kept and shown, but bounding nothing yet: see
 * {@link SyncProxySettings.httpTimeoutSeconds}), 50 mounted disks.
 */
export const DEFAULT_SYNC_PROXY_SETTINGS: SyncProxySettings = Object.freeze({
  httpTimeoutSeconds: 600,
  maxMountedDisks: 50,
});

/** The most disks one Sync Proxy may mount at once. */
export const MAX_MOUNTED_DISKS_LIMIT = 150;

/**
 * Fills defaults and validates Sync Proxy settings.
 *
 * @throws {@link InvalidSettingsError} naming the field, e.g. `maxMountedDisks: must be at most 150, got 200`.
 * @example
 * ```ts
 * const settings = resolveSyncProxySettings({ maxMountedDisks: 80 }); // httpTimeoutSeconds: 600
 * ```
 */
export function resolveSyncProxySettings(
  input: Partial<SyncProxySettings> = {},
  field = 'settings',
): SyncProxySettings {
  const settings = { ...DEFAULT_SYNC_PROXY_SETTINGS, ...input };
  const timeout = settings.httpTimeoutSeconds;
  if (!Number.isInteger(timeout) || timeout < 1 || timeout > 86_400) {
    throw new InvalidSettingsError(
      `${field}.httpTimeoutSeconds`,
      `must be a whole number of seconds from 1 to 86400, got ${String(timeout)}`,
    );
  }
  const disks = settings.maxMountedDisks;
  if (!Number.isInteger(disks) || disks < 1 || disks > MAX_MOUNTED_DISKS_LIMIT) {
    throw new InvalidSettingsError(
      `${field}.maxMountedDisks`,
      `must be a whole number from 1 to ${MAX_MOUNTED_DISKS_LIMIT}, got ${String(disks)}; add Sync Proxies to read more disks at once`,
    );
  }
  return Object.freeze(settings);
}
