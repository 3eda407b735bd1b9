import { defineProject } from 'vitest/config';

// The NBD client's tests against real NBD servers from Debian (nbdkit, qemu-nbd): their own project. The global
// setup checks that the servers are installed (`sh scripts/peers/nbd.sh install`); each test file starts the
// servers it needs, on Unix sockets in temp dirs or on 127.0.0.1, and stops them by PID.
export default defineProject({
  test: {
    name: 'provider-vmware:nbd',
    include: ['test/integration/nbd/*.test.ts'],
    globalSetup: ['test/integration/nbd/nbd-global-setup.ts'],
  },
});
