import { defineProject } from 'vitest/config';

export default defineProject({
  test: { name: 'store-s3', include: ['test/unit/*.test.ts'] },
});
