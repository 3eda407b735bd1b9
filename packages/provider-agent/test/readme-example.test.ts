import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

// Starts a Node.js process: well under a second alone, but more than vitest's 5 s is possible on 2 busy cores.
it('the README example runs against the built package and prints what it says', {
  timeout: 60_000,
}, async () => {
  const readme = await readFile(join(packageRoot, 'README.md'), 'utf8');
  const example = /```js\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(example, 'README.md has a ```js example').toBeDefined();
  expect(existsSync(join(packageRoot, 'dist/index.js')), 'build the package first: npx tsup').toBe(true);
  // Inside the package, so that `@drkit/provider-agent` resolves to the package itself (its dist).
  const scratch = join(packageRoot, '.tmp');
  await mkdir(scratch, { recursive: true });
  const script = join(scratch, `readme-example-${process.pid}.mjs`);
  const cwd = await mkdtemp(join(tmpdir(), 'drkit-readme-'));
  try {
    await writeFile(script, example!);
    const { stdout } = await promisify(execFile)(process.execPath, [script], { cwd });
    expect(stdout).toMatch(/status: 'normal'/);
    expect(stdout).toMatch(/hostCount: 1/);
    expect(stdout).toContain(
      'full data 0 4096 hello, disk\nincremental data 0 4096 hello, disk\nincremental zero 4096 67104768\n',
    );
  } finally {
    await rm(script, { force: true });
    await rmdir(scratch).catch(() => {});
    await rm(cwd, { recursive: true, force: true });
  }
});
