import { defineProject } from 'vitest/config';

// What a publisher checks before a release: the packed tarballs install and run on each supported Node.js line
// on a machine without a compiler. Installs from the npm registry (the packages' own dependencies), so it takes a
// minute or two; it runs in the main test pass only (see scripts/test-oldest-node.sh).
export default defineProject({
  test: { name: 'packaging', testTimeout: 600_000, hookTimeout: 300_000, fileParallelism: false },
});
