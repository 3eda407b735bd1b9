import { defineProject } from 'vitest/config';

export default defineProject({
  // test/rgw/ needs a Ceph RGW: the cli:rgw project (vitest.rgw.config.ts) runs it.
  test: { name: 'cli', include: ['test/*.test.ts'], testTimeout: 120_000, hookTimeout: 60_000 },
});
