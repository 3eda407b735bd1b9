import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalFolderStore } from '@drkit/core';
import { describeStoreContract } from '../src/index.js';

// The local folder store of @drkit/core against the shared store contract. It lives here rather than beside the
// store because core cannot depend on testkit (testkit depends on core).
describeStoreContract({
  name: 'local folder',
  async createStore() {
    const path = await mkdtemp(join(tmpdir(), 'drkit-store-contract-'));
    return {
      store: createLocalFolderStore({ path: join(path, 'store') }),
      cleanup: () => rm(path, { recursive: true, force: true }),
    };
  },
});
