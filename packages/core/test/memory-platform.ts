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
  ReleaseSnapshotOptions,
  SnapshotRef,
} from '../src/index.js';
import { mergeExtents, NotFoundError } from '../src/index.js';

interface MemoryDisk {
  id: string;
  hostId: string;
  bytes: Uint8Array;
  /** Extents written since each snapshot name. */
  writesSince: Map<string, Extent[]>;
}

interface MemoryHost {
  id: string;
  name: string;
  diskIds: string[];
}

/** A snapshot held on the memory source. */
export interface MemorySnapshot {
  readonly hostId: string;
  readonly name: string;
}

export interface MemoryPlatform extends Platform {
  /** The first host (the only one when the platform was created with `disks`). */
  readonly host: Host;
  /** Every host. */
  hostList(): Host[];
  write(diskId: string, offset: number, data: Uint8Array): void;
  resize(diskId: string, capacity: number): void;
  content(diskId: string): Uint8Array;
  snapshotNames(): string[];
  /** The snapshots that exist on the source now. */
  liveSnapshots(): MemorySnapshot[];
  /** Deletes a snapshot behind drkit's back. */
  dropSnapshot(name: string): void;
  /** Makes `changes()` of a disk throw after yielding this many changes. */
  failAfter: Map<string, number>;
  /** `changes()` of a disk waits for this promise before it yields anything. */
  gates: Map<string, Promise<void>>;
  /** Called when `changes()` of a disk starts, before it waits for the disk's gate. */
  onChangesStart: ((diskId: string) => void) | undefined;
  /** Called (and awaited) by `createSnapshot` before the snapshot is taken. */
  onCreateSnapshot: ((snapshot: MemorySnapshot) => void | Promise<void>) | undefined;
  /** Called (and awaited) by `releaseSnapshot` before the snapshot is deleted; throw to make the release fail. */
  onReleaseSnapshot: ((options: ReleaseSnapshotOptions) => void | Promise<void>) | undefined;
  /** Bytes added to (positive) or cut from (negative) every `readRange` answer: a reader that breaks its contract. */
  readRangeDelta: number;
  /** `open:<disk>:<snapshot>`, `close:<disk>:<snapshot>`, `snapshot:<host>:<name>`, `release:<host>:<name>`. */
  events: string[];
  /** Sessions open now, per host id. */
  openSessions(hostId: string): number;
  released: string[];
  created: string[];
}

export function createMemoryPlatform(options: {
  id?: string;
  /** The disks of a single host `vm-1` (`vm-one`); or use `hosts`. */
  disks?: { id: string; capacity: number }[];
  /** Several hosts; disk ids are unique across the platform. */
  hosts?: { id: string; name?: string; disks: { id: string; capacity: number }[] }[];
  retainsSnapshotAsBase?: boolean;
  /** Size of the data pieces `changes()` yields. */
  pieceSize?: number;
  /** Whether sessions offer `readRange`. */
  readRange?: boolean;
}): MemoryPlatform {
  const platformId = options.id ?? 'memory';
  const hostSpecs = options.hosts ?? [{ id: 'vm-1', name: 'vm-one', disks: options.disks ?? [] }];
  const hosts = new Map<string, MemoryHost>();
  const disks = new Map<string, MemoryDisk>();
  for (const h of hostSpecs) {
    hosts.set(h.id, { id: h.id, name: h.name ?? h.id, diskIds: h.disks.map((d) => d.id) });
    for (const d of h.disks) {
      if (disks.has(d.id)) throw new Error(`duplicate disk id ${d.id}`);
      disks.set(d.id, { id: d.id, hostId: h.id, bytes: new Uint8Array(d.capacity), writesSince: new Map() });
    }
  }
  /** Snapshot name → host id and the copy of each of the host's disks. */
  const snapshots = new Map<string, { hostId: string; disks: Map<string, Uint8Array> }>();
  const open = new Map<string, number>();
  const pieceSize = options.pieceSize ?? 256 * 1024;
  const hostOf = (h: MemoryHost): Host => ({
    id: h.id,
    name: h.name,
    platformId,
    disks: h.diskIds.map((id): Disk => {
      const d = disks.get(id)!;
      return { id, hostId: h.id, name: id, capacityBytes: d.bytes.byteLength };
    }),
  });

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
    gates: new Map(),
    onChangesStart: undefined,
    onCreateSnapshot: undefined,
    onReleaseSnapshot: undefined,
    readRangeDelta: 0,
    events: [],
    released: [],
    created: [],
    get host(): Host {
      return hostOf([...hosts.values()][0]!);
    },
    hostList() {
      return [...hosts.values()].map(hostOf);
    },
    async verify() {
      return { status: 'normal', hostCount: hosts.size, checkedAt: new Date().toISOString() };
    },
    async *hosts() {
      for (const h of hosts.values()) yield hostOf(h);
    },
    async createSnapshot({ host, name }): Promise<SnapshotRef> {
      const h = hosts.get(host.id);
      if (!h) throw new NotFoundError(`no host ${host.id}`);
      await platform.onCreateSnapshot?.({ hostId: h.id, name });
      const copy = new Map<string, Uint8Array>();
      for (const id of h.diskIds) {
        const d = disks.get(id)!;
        copy.set(id, d.bytes.slice());
        d.writesSince.set(name, []);
      }
      snapshots.set(name, { hostId: h.id, disks: copy });
      platform.created.push(name);
      platform.events.push(`snapshot:${h.id}:${name}`);
      return { hostId: h.id, name, providerId: `mem-${name}` };
    },
    async releaseSnapshot(o) {
      o.signal?.throwIfAborted(); // like a real source's API call
      await platform.onReleaseSnapshot?.(o);
      snapshots.delete(o.name);
      for (const d of disks.values()) d.writesSince.delete(o.name);
      platform.released.push(o.name);
      platform.events.push(`release:${o.hostId}:${o.name}`);
    },
    changedBlockReader: {
      async open(o: OpenChangedBlocksOptions): Promise<ChangedBlockSession> {
        const disk = disks.get(o.disk.id);
        if (!disk) throw new NotFoundError(`no disk ${o.disk.id}`);
        const snap = o.snapshot ? snapshots.get(o.snapshot.name)?.disks.get(disk.id) : undefined;
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
        open.set(disk.hostId, (open.get(disk.hostId) ?? 0) + 1);
        platform.events.push(`open:${disk.id}:${snapshotName}`);
        const session: ChangedBlockSession = {
          capacityBytes: snap.byteLength,
          validity,
          async *changes(): AsyncIterable<Change> {
            platform.onChangesStart?.(disk.id);
            await platform.gates.get(disk.id);
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
            if (closed) return;
            closed = true;
            open.set(disk.hostId, (open.get(disk.hostId) ?? 1) - 1);
            platform.events.push(`close:${disk.id}:${snapshotName}`);
          },
          async [Symbol.asyncDispose]() {
            await session.close();
          },
        };
        if (options.readRange) {
          session.readRange = async ({ offset, length }) =>
            snap.slice(offset, Math.max(0, offset + length + platform.readRangeDelta));
        }
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
    liveSnapshots() {
      return [...snapshots.entries()].map(([name, s]) => ({ hostId: s.hostId, name }));
    },
    openSessions(hostId) {
      return open.get(hostId) ?? 0;
    },
    dropSnapshot(name) {
      snapshots.delete(name);
      for (const d of disks.values()) d.writesSince.delete(name);
    },
  };
  return platform;
}
