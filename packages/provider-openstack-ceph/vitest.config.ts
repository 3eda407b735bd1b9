import { configDefaults, defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: 'provider-openstack-ceph',
    // Starts a throw-away Ceph cluster (scripts/peers/ceph.sh) for test/integration/*; see that file.
    globalSetup: ['test/integration/ceph-global-setup.ts'],
    // The OpenStack tests are their own project (vitest.openstack.config.ts), with their own peers.
    exclude: [...configDefaults.exclude, 'test/integration/openstack/**'],
  },
});
