/**
 * Reads a checkpoint token that a provider wrote as JSON `{ "format": F, "version": V, ... }`, checking the format,
 * the version and that the named fields are strings. Returns `undefined` for another provider's token, another
 * version, or anything malformed: the provider then reads in full (reason `checkpoint-invalid`) rather than trust it.
 *
 * @example
 * ```ts
 * const token = parseCheckpointToken(base.token, 'drkit-ceph-rbd', 1, ['pool', 'image', 'snapshot']);
 * if (!token) return { kind: 'full', reason: 'checkpoint-invalid' };
 * ```
 */
export function parseCheckpointToken<const K extends string>(
  text: string,
  format: string,
  version: number,
  stringFields: readonly K[],
): ({ readonly format: string; readonly version: number } & Readonly<Record<K, string>>) | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const token = value as Record<string, unknown>;
  if (token.format !== format || token.version !== version) return undefined;
  for (const field of stringFields) if (typeof token[field] !== 'string') return undefined;
  return token as { format: string; version: number } & Record<K, string>;
}
