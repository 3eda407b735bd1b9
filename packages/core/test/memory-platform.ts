// A platform whose disks live in memory, with host snapshots and exact change tracking: the engine's unit tests
// use it to exercise snapshots, the ledger and incrementals without a real source. Real sources are tested
// against real peers in their own packages.
import type {
  Change,
  ChangedBlockSession,
  Checkpoint,
  Disk,
  Extent,
  Host,
  OpenChangedBlocksOptions,
  Platform,
  SnapshotRef,
} from '../src/index.js';
import { mergeExtents, NotFoundError } from '../src/index.js';

interface MemoryDisk {
  id: string;
  bytes: Uint8Array;
  /** Extents written since each snapshot name. */
  writesSince: Map<string, Extent[]>;
}

export interface MemoryPlatform extends Platform {
  readonly host: Host;
  write(diskId: string, offset: number, data: Uint8Array): void;
  resize(diskId: string, capacity: number): void;
  content(diskId: string): Uint8Array;
  snapshotNames(): string[];
  /** Deletes a snapshot behind drkit's back. */
  dropSnapshot(name: string): void;
  /** Makes `changes()` of a disk throw after yielding this many changes. */
  failAfter: Map<string, number>;
  released: string[];
  created: string[];
}

export function createMemoryPlatform(options: {
  id?: string;
  disks: { id: string; capacity: number }[];
  retainsSnapshotAsBase?: boolean;
  /** Size of the data pieces `changes()` yields. */
  pieceSize?: number;
}): MemoryPlatform {
  const platformId = options.id ?? 'memory';
  const disks = new Map<string, MemoryDisk>(
    options.disks.map((d) => [d.id, { id: d.id, bytes: new Uint8Array(d.capacity), writesSince: new Map() }]),
  );
  const snapshots = new Map<string, Map<string, Uint8Array>>();
  const pieceSize = options.pieceSize ?? 256 * 1024;
  const hostDisks = (): Disk[] =>
    [...disks.values()].map((d) => ({
      id: d.id,
      hostId: 'vm-1',
      name: d.id,
      capacityBytes: d.bytes.byteLength,
    }));

  const platform: MemoryPlatform = {
    specificationVersion: 'v1',
    id: platformId,
    kind: 'memory',
    capabilities: {
      snapshots: 'host',
      retainsSnapshotAsBase: options.retainsSnapshotAsBase ?? true,
      changeTracking: 'exact',
    },
    failAfter: new Map(),
    released: [],
    created: [],
    get host(): Host {
      return { id: 'vm-1', name: 'vm-one', platformId, disks: hostDisks() };
    },
    async verify() {
      return { status: 'normal', hostCount: 1, checkedAt: new Date().toISOString() };
    },
    async *hosts() {
      yield platform.host;
    },
    async createSnapshot({ name }): Promise<SnapshotRef> {
      const copy = new Map<string, Uint8Array>();
      for (const d of disks.values()) {
        copy.set(d.id, d.bytes.slice());
        d.writesSince.set(name, []);
      }
      snapshots.set(name, copy);
      platform.created.push(name);
      return { hostId: 'vm-1', name, providerId: `mem-${name}` };
    },
    async releaseSnapshot({ name }) {
      snapshots.delete(name);
      for (const d of disks.values()) d.writesSince.delete(name);
      platform.released.push(name);
    },
    changedBlockReader: {
      async open(o: OpenChangedBlocksOptions): Promise<ChangedBlockSession> {
        const disk = disks.get(o.disk.id);
        if (!disk) throw new NotFoundError(`no disk ${o.disk.id}`);
        const snap = o.snapshot ? snapshots.get(o.snapshot.name)?.get(disk.id) : undefined;
        if (!snap || !o.snapshot) throw new NotFoundError('snapshot missing');
        const snapshotName = o.snapshot.name;
        let extents: Extent[];
        let validity: ChangedBlockSession['validity'];
        const baseWrites = o.base ? disk.writesSince.get(o.base.token) : undefined;
        const base = o.base;
        if (base && baseWrites) {
          // Writes since the base, up to this snapshot: those recorded since the base minus those since this one.
          const since = disk.writesSince.get(snapshotName) ?? [];
          const count = baseWrites.length - since.length;
          const grown =
            snap.byteLength > base.capacityBytes
              ? [{ offset: base.capacityBytes, length: snap.byteLength - base.capacityBytes }]
              : [];
          extents = mergeExtents([...baseWrites.slice(0, count), ...grown])
            .map((e) => ({ offset: e.offset, length: Math.min(e.length, snap.byteLength - e.offset) }))
            .filter((e) => e.length > 0);
          validity = { kind: 'exact' };
        } else {
          extents = snap.byteLength > 0 ? [{ offset: 0, length: snap.byteLength }] : [];
          validity = {
            kind: 'full',
            reason: base ? 'base-snapshot-missing' : (o.fullReason ?? 'first-backup'),
          };
        }
        let closed = false;
        const session: ChangedBlockSession = {
          capacityBytes: snap.byteLength,
          validity,
          async *changes(): AsyncIterable<Change> {
            let yielded = 0;
            const failAt = platform.failAfter.get(disk.id);
            for (const e of extents) {
              for (let off = e.offset; off < e.offset + e.length; off += pieceSize) {
                if (failAt !== undefined && yielded >= failAt)
                  throw new Error(`injected failure on ${disk.id}`);
                const end = Math.min(off + pieceSize, e.offset + e.length);
                yield { kind: 'data', offset: off, data: snap.slice(off, end) };
                yielded++;
              }
            }
          },
          checkpoint(): Checkpoint {
            return {
              diskId: disk.id,
              token: snapshotName,
              capacityBytes: snap.byteLength,
              createdAt: new Date().toISOString(),
              snapshotName,
            };
          },
          async close() {
            closed = true;
          },
          async [Symbol.asyncDispose]() {
            if (!closed) await session.close();
          },
        };
        return session;
      },
    },
    write(diskId, offset, data) {
      const d = disks.get(diskId)!;
      d.bytes.set(data, offset);
      for (const list of d.writesSince.values()) list.push({ offset, length: data.byteLength });
    },
    resize(diskId, capacity) {
      const d = disks.get(diskId)!;
      const next = new Uint8Array(capacity);
      next.set(d.bytes.subarray(0, Math.min(capacity, d.bytes.byteLength)));
      d.bytes = next;
    },
    content(diskId) {
      return disks.get(diskId)!.bytes.slice();
    },
    snapshotNames() {
      return [...snapshots.keys()];
    },
    dropSnapshot(name) {
      snapshots.delete(name);
      for (const d of disks.values()) d.writesSince.delete(name);
    },
  };
  return platform;
}
