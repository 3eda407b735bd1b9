// Builds the vcsim launcher once for all test files (`sh scripts/peers/vcsim.sh build`: offline from Debian's
// govmomi, cached under .cache/vcsim until its sources change). When it cannot be built, every test fails with
// the reason (never a silent skip); the package's unit tests still run.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import type { ProvidedVcsim } from './vcsim-description.js';

/** scripts/peers/vcsim.sh of this repository. */
export const VCSIM_SCRIPT = fileURLToPath(new URL('../../../../scripts/peers/vcsim.sh', import.meta.url));

export default async function setup(project: TestProject): Promise<void> {
  const started = performance.now();
  const provided = await new Promise<ProvidedVcsim>((resolve) => {
    execFile('sh', [VCSIM_SCRIPT, 'build'], { timeout: 540_000 }, (error, stdout, stderr) => {
      if (error) {
        resolve({
          ok: false,
          reason:
            'the vcsim launcher could not be built (install Go and govmomi with `sh scripts/peers/vcsim.sh ' +
            `install\`): ${error.message}\n${stderr.slice(-4000)}`,
        });
      } else {
        resolve({ ok: true, binary: stdout.trim(), buildMs: Math.round(performance.now() - started) });
      }
    });
  });
  project.provide('vcsim', provided);
}
