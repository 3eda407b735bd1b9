import { defineProject } from 'vitest/config';

// The tests against a real Ceph RGW 16: their own project, started once for all files by the global setup
// (scripts/peers/rgw.sh: a micro-Ceph cluster and radosgw on 127.0.0.1) and stopped at the end.
export default defineProject({
  test: {
    name: 'store-s3:rgw',
    include: ['test/integration/*.test.ts'],
    globalSetup: ['test/integration/rgw-global-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 240_000,
  },
});
