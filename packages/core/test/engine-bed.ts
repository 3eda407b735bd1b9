// What the engine's test files share: a repository in a temporary folder, its teardown, and byte checks.
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type BackupEngine,
  createLocalFolderStore,
  openRepository,
  type Repository,
  type RepositoryEncryption,
} from '../src/index.js';
import { encodeCheckedJson } from '../src/repository/repository-config.js';

/** SHA-256 of some bytes, hex. */
export function sha(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** A new repository (encrypted with `options.encryption`) in a new temporary folder (`<dir>/repo`). */
export async function openTempRepository(
  prefix: string,
  options: { encryption?: RepositoryEncryption } = {},
): Promise<{ dir: string; repository: Repository }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const repository = await openRepository({
    store: createLocalFolderStore({ path: join(dir, 'repo') }),
    create: true,
    ...options,
  });
  return { dir, repository };
}

/** Closes the engine (if any) and the repository, and removes the folder. */
export async function closeTempRepository(bed: {
  dir: string;
  repository: Repository;
  engine: BackupEngine | undefined;
}): Promise<void> {
  await bed.engine?.close();
  await bed.repository.close();
  await rm(bed.dir, { recursive: true, force: true });
}

/** Restores a point into a file of the folder and returns its bytes. */
export async function restoredBytes(
  repository: Repository,
  dir: string,
  pointId: string,
): Promise<Uint8Array> {
  const path = join(dir, `restore-${pointId}`);
  await repository.restore(pointId, { path });
  return new Uint8Array(await readFile(path));
}

/** Parses a point metadata file (JSON followed by its `drkit-sha256:` checksum line) as a test edits it. */
export function parsePointFile(text: string): Record<string, unknown> {
  return JSON.parse(text.slice(0, text.lastIndexOf('drkit-sha256:')));
}

/** Serialises edited point metadata with a valid checksum line, as a drkit that wrote those fields would. */
export function pointFile(value: unknown): Uint8Array {
  return encodeCheckedJson(value);
}
