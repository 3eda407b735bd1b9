import { describe, expect, it } from 'vitest';
import { parseCheckpointToken } from './checkpoint-token.js';

describe('parseCheckpointToken', () => {
  const good = JSON.stringify({ format: 'drkit-x', version: 2, pool: 'volumes', image: 'a', extra: 5 });

  it('returns the token when format, version and string fields check', () => {
    const token = parseCheckpointToken(good, 'drkit-x', 2, ['pool', 'image']);
    expect(token?.pool).toBe('volumes');
    expect(token?.image).toBe('a');
  });

  it.each([
    ['another format', good, 'drkit-y', 2, ['pool']],
    ['another version', good, 'drkit-x', 1, ['pool']],
    ['a missing field', good, 'drkit-x', 2, ['snapshot']],
    ['a field that is not a string', good, 'drkit-x', 2, ['extra']],
    ['not JSON', 'changeId 52 3/14', 'drkit-x', 2, []],
    ['JSON that is not an object', '[1,2]', 'drkit-x', 2, []],
    ['null', 'null', 'drkit-x', 2, []],
  ])('refuses %s', (_name, text, format, version, fields) => {
    expect(
      parseCheckpointToken(text as string, format as string, version as number, fields as string[]),
    ).toBe(undefined);
  });
});
