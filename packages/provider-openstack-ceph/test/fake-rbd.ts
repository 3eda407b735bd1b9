// Stand-ins for the rbd command, for the failure paths a real cluster cannot produce on demand (a killed child,
// a hung process, a truncated stream, a key echoed on stderr). Everything else is tested against the real
// cluster in test/integration/.
import { chmod, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RbdConnection } from '../src/ceph/rbd-command.js';

/** A folder of fake rbd scripts; `remove()` deletes it. */
export async function createFakeRbdFolder(): Promise<{
  dir: string;
  script: (name: string, body: string) => Promise<string>;
  remove: () => Promise<void>;
}> {
  const dir = await mkdtemp(join(tmpdir(), 'drkit-fake-rbd-'));
  return {
    dir,
    async script(name, body) {
      const path = join(dir, name);
      await writeFile(path, `#!/bin/sh\n${body}\n`);
      await chmod(path, 0o755);
      return path;
    },
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

/** A connection to a fictitious cluster through the given rbd executable. */
export function fakeConnection(rbdPath: string, overrides: Partial<RbdConnection> = {}): RbdConnection {
  return {
    name: 'fake',
    cluster: 'ceph',
    monHost: '192.0.2.1:6789',
    ipv6: false,
    auth: { user: 'backup', key: 'AQC5VglrRa/WHRAATEludz7fZlhA4ZKBxD9SHw==' },
    pool: 'volumes',
    timeoutSeconds: 7,
    rbdPath,
    ...overrides,
  };
}

/** The temp folders of rbd calls that exist now. */
export async function rbdTempFolders(): Promise<string[]> {
  return (await readdir(tmpdir())).filter((name) => name.startsWith('drkit-rbd-'));
}
