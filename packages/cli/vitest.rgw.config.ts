import { defineProject } from 'vitest/config';

// The CLI against a real Ceph RGW 16 (an S3 repository, `--repo s3://bucket/prefix`): the global setup of
// @drkit/store-s3's RGW tests starts one (scripts/peers/rgw.sh) for this project and stops it at the end.
export default defineProject({
  test: {
    name: 'cli:rgw',
    include: ['test/rgw/*.test.ts'],
    globalSetup: ['../store-s3/test/integration/rgw-global-setup.ts'],
    testTimeout: 180_000,
    hookTimeout: 240_000,
  },
});
