import { defineProject } from 'vitest/config';

// The OpenStack integration tests: their own project, so that the package's unit and Ceph-only tests do not wait
// for the OpenStack peer (about 1-2 minutes to start). Its global setup starts Ceph, then OpenStack with Cinder's
// RBD driver writing into that Ceph cluster, and stops both at the end.
export default defineProject({
  test: {
    name: 'provider-openstack-ceph:openstack',
    include: ['test/integration/openstack/**/*.test.ts'],
    globalSetup: ['test/integration/openstack/openstack-global-setup.ts'],
    // One OpenStack for all files; the files change shared state (users, tokens) and run one after the other.
    fileParallelism: false,
    testTimeout: 300_000,
    hookTimeout: 900_000,
  },
});
