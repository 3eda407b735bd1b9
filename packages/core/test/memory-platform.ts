// A platform whose disks live in memory, with host snapshots and exact change tracking: the engine's unit tests
// use it to exercise snapshots, the ledger and incrementals without a real source. Real sources are tested
// against real peers in their own packages.
import { createHash } from 'node:crypto';
import type {
  AbandonReason,
  Change,
  ChangedBlockSession,
  ChangedExtent,
  Checkpoint,
  CommittedPoint,
  CreateSnapshotOptions,
  Disk,
  Extent,
  Host,
  HostSnapshot,
  OpenChangedBlocksOptions,
  Platform,
  ReadRequest,
  ReadResult,
  ReleaseSnapshotOptions,
  SkippedDisk,
  SnapshotConsistency,
} from '../src/index.js';
import { alignExtents, mergeExtents, NotFoundError } from '../src/index.js';

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
  /**
   * `open:<disk>:<snapshot>`, `close:<disk>:<snapshot>`, `snapshot:<host>:<name>`, `release:<host>:<name>`,
   * `commit:<disk>:<pointId>`, `abandon:<disk>:<kind>`.
   */
  events: string[];
  /** The options of every `open` call. */
  opened: OpenChangedBlocksOptions[];
  /** The options of every `createSnapshot` call. */
  snapshotCalls: CreateSnapshotOptions[];
  /** What `createSnapshot` answers: override consistency or drop disks to break the contract. */
  snapshotAnswer: ((snapshot: HostSnapshot) => HostSnapshot) | undefined;
  /** Extents mode: reads in flight now and at most, across all sessions. */
  readsInFlight: { now: number; max: number };
  /** Extents mode: the offsets of `read` calls, in the order they were issued. */
  readOffsets: number[];
  /**
   * Extents mode: called (and awaited) by `read` before it answers; may change the answer (a short read, a
   * corrupted byte) or throw (a throttled source).
   */
  onRead: ((request: ReadRequest, result: ReadResult) => ReadResult | Promise<ReadResult>) | undefined;
  /** Called (and awaited) by a session's `commit`; throw to make it fail. */
  onCommit: ((point: CommittedPoint) => void | Promise<void>) | undefined;
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
  hosts?: {
    id: string;
    name?: string;
    disks: { id: string; capacity: number }[];
    skippedDisks?: SkippedDisk[];
  }[];
  /** How sessions deliver changes: `stream` (default) or `extents` (list, then `read` by range). */
  mode?: 'stream' | 'extents';
  /** Extents mode: the reader's `maxConcurrentReads`. Default 4. */
  maxConcurrentReads?: number;
  /** The reader's `blockSize`. Default 4096. */
  blockSize?: number;
  /** Extents mode: `read` answers carry a SHA-256 checksum. */
  checksums?: boolean;
  /** Whether the platform can quiesce: its snapshots are then `application` when asked to. Default false. */
  quiesce?: boolean;
  /** The consistency of an unquiesced snapshot. Default `host`. */
  consistency?: SnapshotConsistency;
  retainsSnapshotAsBase?: boolean;
  /** Size of the data pieces `changes()` yields. */
  pieceSize?: number;
  /** Whether sessions offer `readRange`. */
  readRange?: boolean;
}): MemoryPlatform {
  const platformId = options.id ?? 'memory';
  const hostSpecs = options.hosts ?? [{ id: 'vm-1', name: 'vm-one', disks: options.disks ?? [] }];
  const hosts = new Map<string, MemoryHost & { skipped: SkippedDisk[] }>();
  const disks = new Map<string, MemoryDisk>();
  for (const h of hostSpecs) {
    hosts.set(h.id, {
      id: h.id,
      name: h.name ?? h.id,
      diskIds: h.disks.map((d) => d.id),
      skipped: h.skippedDisks ?? [],
    });
    for (const d of h.disks) {
      if (disks.has(d.id)) throw new Error(`duplicate disk id ${d.id}`);
      disks.set(d.id, { id: d.id, hostId: h.id, bytes: new Uint8Array(d.capacity), writesSince: new Map() });
    }
  }
  /** Snapshot name → host id and the copy of each of the host's disks. */
  const snapshots = new Map<string, { hostId: string; disks: Map<string, Uint8Array> }>();
  const open = new Map<string, number>();
  const pieceSize = options.pieceSize ?? 256 * 1024;
  const mode = options.mode ?? 'stream';
  const hostOf = (h: MemoryHost & { skipped: SkippedDisk[] }): Host => ({
    id: h.id,
    name: h.name,
    platformId,
    disks: h.diskIds.map((id): Disk => {
      const d = disks.get(id)!;
      return { id, hostId: h.id, name: id, capacityBytes: d.bytes.byteLength };
    }),
    ...(h.skipped.length === 0 ? {} : { skippedDisks: h.skipped }),
  });

  const platform: MemoryPlatform = {
    specificationVersion: 'v2',
    id: platformId,
    kind: 'memory',
    capabilities: {
      snapshots: 'host',
      quiesce: options.quiesce ?? false,
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
    opened: [],
    snapshotCalls: [],
    snapshotAnswer: undefined,
    readsInFlight: { now: 0, max: 0 },
    readOffsets: [],
    onRead: undefined,
    onCommit: undefined,
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
    async createSnapshot(call): Promise<HostSnapshot> {
      const { host, name } = call;
      platform.snapshotCalls.push(call);
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
      const answer: HostSnapshot = {
        hostId: h.id,
        name,
        providerId: `mem-${name}`,
        disks: h.diskIds.map((diskId) => ({ diskId, ref: `${diskId}@${name}` })),
        consistency:
          call.quiesce !== 'none' && options.quiesce ? 'application' : (options.consistency ?? 'host'),
      };
      return platform.snapshotAnswer ? platform.snapshotAnswer(answer) : answer;
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
      mode,
      blockSize: options.blockSize ?? 4096,
      maxConcurrentReads: mode === 'extents' ? (options.maxConcurrentReads ?? 4) : 1,
      async open(o: OpenChangedBlocksOptions): Promise<ChangedBlockSession> {
        platform.opened.push(o);
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
        // A list-then-read source reports whole blocks (as CBT and EBS do).
        if (mode === 'extents') extents = alignExtents(extents, options.blockSize ?? 4096, snap.byteLength);
        let closed = false;
        open.set(disk.hostId, (open.get(disk.hostId) ?? 0) + 1);
        platform.events.push(`open:${disk.id}:${snapshotName}`);
        const common = {
          capacityBytes: snap.byteLength,
          validity,
          checkpoint(): Checkpoint {
            return {
              diskId: disk.id,
              token: snapshotName,
              capacityBytes: snap.byteLength,
              createdAt: new Date().toISOString(),
              snapshotName,
            };
          },
          async commit(point: CommittedPoint) {
            platform.events.push(`commit:${disk.id}:${point.pointId}`);
            await platform.onCommit?.(point);
          },
          async abandon(reason: AbandonReason) {
            platform.events.push(`abandon:${disk.id}:${reason.kind}`);
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
        const failAt = platform.failAfter.get(disk.id);
        const session: ChangedBlockSession =
          mode === 'extents'
            ? {
                ...common,
                mode: 'extents',
                async *extents(): AsyncIterable<ChangedExtent> {
                  platform.onChangesStart?.(disk.id);
                  await platform.gates.get(disk.id);
                  let listed = 0;
                  for (const e of extents) {
                    for (let off = e.offset; off < e.offset + e.length; off += pieceSize) {
                      if (failAt !== undefined && listed >= failAt)
                        throw new Error(`injected failure on ${disk.id}`);
                      const end = Math.min(off + pieceSize, e.offset + e.length);
                      yield { kind: 'data', offset: off, length: end - off, token: `t${off}` };
                      listed++;
                    }
                  }
                },
                async read(request: ReadRequest): Promise<ReadResult> {
                  if (request.token !== `t${request.offset - (request.offset % pieceSize)}`) {
                    throw new Error(`read at ${request.offset} with token ${request.token}`);
                  }
                  platform.readOffsets.push(request.offset);
                  const flight = platform.readsInFlight;
                  flight.now++;
                  flight.max = Math.max(flight.max, flight.now);
                  try {
                    await new Promise((resolve) => setImmediate(resolve)); // let others start
                    const data = snap.slice(request.offset, request.offset + request.length);
                    let result: ReadResult = options.checksums
                      ? {
                          data,
                          checksum: {
                            algorithm: 'sha256',
                            base64: createHash('sha256').update(data).digest('base64'),
                          },
                        }
                      : { data };
                    if (platform.onRead) result = await platform.onRead(request, result);
                    return result;
                  } finally {
                    flight.now--;
                  }
                },
              }
            : {
                ...common,
                mode: 'stream',
                async *changes(): AsyncIterable<Change> {
                  platform.onChangesStart?.(disk.id);
                  await platform.gates.get(disk.id);
                  let yielded = 0;
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
