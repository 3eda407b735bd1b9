import { InvalidArgumentError } from '../errors/drkit-error.js';

/** Prefix of the temporary files a store may leave while writing; no key segment may start with it. */
export const STORE_TEMP_PREFIX = '.drkit-tmp-';

function checkCharacters(what: string, value: string): void {
  if (value.includes('\\'))
    throw new InvalidArgumentError(`${what} ${JSON.stringify(value)} contains a backslash`);
  for (let i = 0; i < value.length; i++) {
    if (value.charCodeAt(i) < 0x20) {
      throw new InvalidArgumentError(`${what} ${JSON.stringify(value)} contains a control character`);
    }
  }
}

function checkSegment(what: string, value: string, segment: string): void {
  if (segment === '') throw new InvalidArgumentError(`${what} ${JSON.stringify(value)} has an empty segment`);
  if (segment === '.' || segment === '..') {
    throw new InvalidArgumentError(`${what} ${JSON.stringify(value)} has a "${segment}" segment`);
  }
  if (segment.startsWith(STORE_TEMP_PREFIX)) {
    throw new InvalidArgumentError(
      `${what} ${JSON.stringify(value)} has a segment starting with the reserved "${STORE_TEMP_PREFIX}"`,
    );
  }
}

/**
 * Checks that a string is a valid store key: `/`-separated segments, none empty, `.` or `..`, no leading `/`
 * (keys are relative), no backslash or control character, no segment starting with {@link STORE_TEMP_PREFIX}.
 * Every store applies the same rule so that a repository can move between stores.
 *
 * @throws {@link InvalidArgumentError} naming the key and what is wrong with it.
 */
export function assertValidStoreKey(key: string): void {
  if (typeof key !== 'string' || key === '')
    throw new InvalidArgumentError('a store key must be a non-empty string');
  checkCharacters('store key', key);
  if (key.startsWith('/'))
    throw new InvalidArgumentError(`store key ${JSON.stringify(key)} must not be absolute`);
  for (const segment of key.split('/')) checkSegment('store key', key, segment);
}

/**
 * Checks a {@link Store.list} prefix: like a key, except that it may be empty and its last segment may be empty
 * or partial (`chunks/`, `chunks/a`).
 *
 * @throws {@link InvalidArgumentError} naming the prefix and what is wrong with it.
 */
export function assertValidStorePrefix(prefix: string): void {
  if (typeof prefix !== 'string') throw new InvalidArgumentError('a store prefix must be a string');
  if (prefix === '') return;
  checkCharacters('store prefix', prefix);
  if (prefix.startsWith('/'))
    throw new InvalidArgumentError(`store prefix ${JSON.stringify(prefix)} must not be absolute`);
  const segments = prefix.split('/');
  const last = segments.pop() ?? '';
  for (const segment of segments) checkSegment('store prefix', prefix, segment);
  if (last === '..' || last.startsWith(STORE_TEMP_PREFIX)) {
    throw new InvalidArgumentError(`store prefix ${JSON.stringify(prefix)} has an invalid last segment`);
  }
}
