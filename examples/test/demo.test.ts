import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);

describe('examples/demo.mjs', () => {
  it('backs up, changes, backs up, restores both points identically (small disk)', async () => {
    const { stdout } = await run(process.execPath, ['demo.mjs', '--size-mib', '48'], {
      cwd: new URL('..', import.meta.url).pathname,
    });
    expect(stdout).toMatch(/full read \(first-backup\)/);
    expect(stdout).toMatch(/superset change set/);
    expect(stdout.match(/IDENTICAL to the disk as backed up/g)).toHaveLength(2);
    expect(stdout).toMatch(/all good/);
    expect(stdout).toMatch(/done: both recovery points restore byte for byte/);
  });
});
