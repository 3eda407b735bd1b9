import { defineConfig } from 'vitest/config';

// Projects named `<package>:<peer>` need a real peer their global setup starts or checks (Ceph, OpenStack, vcsim,
// NBD servers); the others need nothing but this machine. scripts/test-oldest-node.sh runs the latter again on the
// oldest Node.js line.
export default defineConfig({
  test: {
    projects: [
      'packages/*',
      'examples',
      'packages/provider-openstack-ceph/vitest.ceph.config.ts',
      'packages/provider-openstack-ceph/vitest.openstack.config.ts',
      'packages/provider-vmware/vitest.vcsim.config.ts',
      'packages/provider-vmware/vitest.nbd.config.ts',
      'packages/store-s3/vitest.rgw.config.ts',
      'packages/cli/vitest.rgw.config.ts',
      'test/packaging',
    ],
  },
});
