import { randomBytes, randomUUID } from 'node:crypto';
import type { LedgerEntry, Repository } from '../repository/types.js';
import type { Host } from '../spec/v1/host.js';
import type { Platform, SnapshotRef } from '../spec/v1/platform.js';

/** A name for a new drkit snapshot: `drkit-<UTC yyyymmddThhmmss>-<6 hex>`, sortable by time. */
export function snapshotName(now = new Date()): string {
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, '');
  return `drkit-${stamp}-${randomBytes(3).toString('hex')}`;
}

/**
 * Takes the host snapshot through the ledger: the entry is written before the platform is asked, so a crash
 * between the two leaves a record that `reconcile()` can act on.
 */
export async function createRecordedSnapshot(
  platform: Platform,
  repository: Repository,
  host: Host,
  jobId: string,
  signal: AbortSignal | undefined,
): Promise<{ ref: SnapshotRef; entry: LedgerEntry }> {
  if (!platform.createSnapshot) {
    throw new TypeError(`platform ${platform.id} declares host snapshots but has no createSnapshot()`);
  }
  let entry: LedgerEntry = {
    id: randomUUID(),
    kind: 'snapshot',
    platformId: platform.id,
    hostId: host.id,
    name: snapshotName(),
    state: 'pending',
    jobId,
    createdAt: new Date().toISOString(),
  };
  await repository.ledger.record(entry, { signal });
  try {
    const ref = await platform.createSnapshot({ host, name: entry.name, signal });
    if (ref.providerId !== undefined) {
      entry = { ...entry, providerId: ref.providerId };
      await repository.ledger.update(entry, { signal });
    }
    return { ref, entry };
  } catch (error) {
    // The snapshot may exist even though the call failed (a lost answer): release by name, then forget it.
    await releaseRecordedSnapshot(platform, repository, entry).catch(() => undefined);
    throw error;
  }
}

/** Releases a recorded snapshot on the source (idempotent there) and then removes its ledger entry. */
export async function releaseRecordedSnapshot(
  platform: Platform,
  repository: Repository,
  entry: LedgerEntry,
  signal?: AbortSignal,
): Promise<void> {
  await platform.releaseSnapshot?.({ hostId: entry.hostId, name: entry.name, signal });
  await repository.ledger.remove(entry.id, { signal });
}

/** Snapshot names the newest point of each disk of a host still needs as its base. */
export async function snapshotsInUse(
  repository: Repository,
  platformId: string,
  hostId: string,
  signal?: AbortSignal,
): Promise<Set<string>> {
  const newest = new Map<string, string | undefined>();
  for (const point of await repository.points({ platformId, hostId }, { signal })) {
    newest.set(point.diskId, point.checkpoint?.snapshotName); // points come oldest first
  }
  const names = new Set<string>();
  for (const name of newest.values()) if (name !== undefined) names.add(name);
  return names;
}
