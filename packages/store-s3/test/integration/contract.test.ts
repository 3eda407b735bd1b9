import { describeStoreContract } from '@drkit/testkit';
import { freshBucket, removeBucket, rgwStore } from './rgw-fixture.js';

describeStoreContract({
  name: 's3 (ceph rgw 16)',
  timeoutMs: 120_000,
  async createStore() {
    const bucket = await freshBucket();
    const store = rgwStore(bucket);
    const others: ReturnType<typeof rgwStore>[] = [];
    return {
      store,
      secondClient() {
        const other = rgwStore(bucket);
        others.push(other);
        return other;
      },
      async cleanup() {
        await removeBucket(bucket);
        store.destroy();
        for (const other of others) other.destroy();
      },
    };
  },
});
