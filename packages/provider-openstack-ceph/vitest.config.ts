import { configDefaults, defineProject } from 'vitest/config';

// The package's unit tests: no peer. The tests against a real Ceph cluster are the `:ceph` project
// (vitest.ceph.config.ts), those against a real OpenStack the `:openstack` project (vitest.openstack.config.ts).
export default defineProject({
  test: {
    name: 'provider-openstack-ceph',
    exclude: [...configDefaults.exclude, 'test/integration/**'],
  },
});
