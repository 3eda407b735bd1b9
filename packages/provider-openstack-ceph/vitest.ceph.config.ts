import { defineProject } from 'vitest/config';

// The tests against a real Ceph cluster: their own project, started once for all files by the global setup
// (scripts/peers/ceph.sh, one monitor and one memstore OSD on 127.0.0.1) and stopped at the end.
export default defineProject({
  test: {
    name: 'provider-openstack-ceph:ceph',
    include: ['test/integration/*.test.ts'],
    globalSetup: ['test/integration/ceph-global-setup.ts'],
  },
});
