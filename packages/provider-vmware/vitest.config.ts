import { configDefaults, defineProject } from 'vitest/config';

// The package's unit tests: no peer. The tests against vcsim (govmomi's simulator with the project's launcher,
// scripts/peers/vcsim.sh) are the `provider-vmware:vcsim` project (vitest.vcsim.config.ts); the NBD client's
// tests against real NBD servers are the `provider-vmware:nbd` project (vitest.nbd.config.ts).
export default defineProject({
  test: {
    name: 'provider-vmware',
    exclude: [...configDefaults.exclude, 'test/integration/**'],
  },
});
