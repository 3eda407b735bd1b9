import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: [
      'packages/*',
      'examples',
      // A second project of that package: the tests against a real OpenStack (see the file).
      'packages/provider-openstack-ceph/vitest.openstack.config.ts',
    ],
  },
});
