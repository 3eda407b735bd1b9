import { defineProject } from 'vitest/config';

// The package's tests run against the project's AWS emulator (@drkit/testkit, in-process on 127.0.0.1): no
// external peer, so no `provider-aws:<peer>` project. End-to-end tests restore 1 GiB volumes (EBS's smallest).
export default defineProject({
  test: { name: 'provider-aws', testTimeout: 60_000 },
});
