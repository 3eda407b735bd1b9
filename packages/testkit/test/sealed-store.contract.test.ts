import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalFolderStore } from '@drkit/core';
import { SealedStore } from '@drkit/core/internal';
import { describeStoreContract } from '../src/index.js';

// The store an encrypted repository works through (every blob sealed on the way in, opened on the way out) is a
// store like any other: the same contract, over a local folder store.
describeStoreContract({
  name: 'sealed (AES-256-GCM) over a local folder',
  async createStore() {
    const path = await mkdtemp(join(tmpdir(), 'drkit-sealed-contract-'));
    return {
      store: new SealedStore(createLocalFolderStore({ path: join(path, 'store') }), randomBytes(32)),
      cleanup: () => rm(path, { recursive: true, force: true }),
    };
  },
});
