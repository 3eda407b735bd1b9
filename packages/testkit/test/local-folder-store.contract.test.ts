import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalFolderStore, LOCAL_FOLDER_SYNC_LEVELS } from '@drkit/core';
import { describeStoreContract } from '../src/index.js';

// The local folder store of @drkit/core against the shared store contract. It lives here rather than beside the
// store because core cannot depend on testkit (testkit depends on core).
// Once per sync level (`filesystem` where syncfs exists): the contract holds whatever the store syncs.
for (const syncLevel of LOCAL_FOLDER_SYNC_LEVELS) {
  if (syncLevel === 'filesystem' && process.platform !== 'linux') continue;
  describeStoreContract({
    name: `local folder (sync level ${syncLevel})`,
    async createStore() {
      const path = await mkdtemp(join(tmpdir(), 'drkit-store-contract-'));
      return {
        store: createLocalFolderStore({ path: join(path, 'store'), syncLevel }),
        cleanup: () => rm(path, { recursive: true, force: true }),
      };
    },
  });
}
