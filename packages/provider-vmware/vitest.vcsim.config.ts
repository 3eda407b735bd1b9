import { defineProject } from 'vitest/config';

// The tests against vcsim: the global setup builds the launcher once (scripts/peers/vcsim.sh build, cached under
// .cache/vcsim); each test file starts its own simulator on 127.0.0.1, port 0, with its own TMPDIR, and stops it
// by PID (test/integration/vcsim-launcher.ts).
export default defineProject({
  test: {
    name: 'provider-vmware:vcsim',
    include: ['test/integration/*.test.ts'],
    globalSetup: ['test/integration/vcsim-global-setup.ts'],
    testTimeout: 60_000,
    // A cold build of the launcher takes about a minute on 2 cores.
    hookTimeout: 600_000,
  },
});
