import {
  type CallOptions,
  type ChangedBlockReader,
  type ChangedBlockSession,
  type ChangedExtent,
  type ChangeSetValidity,
  type Checkpoint,
  CheckpointInvalidError,
  type ExtentReadSession,
  type FullReadReason,
  InvalidArgumentError,
  InvalidSettingsError,
  type OpenChangedBlocksOptions,
  parseCheckpointToken,
  type ReadRequest,
  type ReadResult,
} from '@drkit/core';
import type { VimSoapClient } from './soap/vim-soap-client.js';
import type { ManagedObjectReference } from './soap/xml-writer.js';
import {
  type ChangedAreasPage,
  type ChangedAreasQuery,
  queryChangedDiskAreasPage,
} from './vmware-changed-areas.js';
import type { VmwareConnectionBudget, VmwareConnectionGrant } from './vmware-connection-budget.js';
import { createDatastoreRangeReader, datacenterPathOf, flatFileOf } from './vmware-datastore-ranges.js';
import { vmwareFaultOf } from './vmware-errors.js';
import { openNbdSource, type VmwareNbdSource } from './vmware-nbd-transport.js';
import type { ResolvedVmwareOptions, VmwareTransport } from './vmware-options.js';
import { objectSpec, retrieveObjects } from './vmware-property-collector.js';
import type { VmwareSession } from './vmware-session.js';
import type { VmwareDiskSnapshotRef } from './vmware-snapshots.js';

const notBuiltMarker = Symbol.for('drkit.vmware.data-path-not-built');

/**
 * A part of the data path of `@drkit/provider-vmware` that is not built yet: over HTTPS datastore ranges, a disk
 * whose snapshot file is a delta of a snapshot chain (use the NBD transport). An
 * {@link @drkit/core!InvalidSettingsError} (code `INVALID_SETTINGS`, field `transport`), not retryable: no retry
 * makes it work in this release. Never a session that pretends to read.
 */
export class VmwareDataPathNotBuiltError extends InvalidSettingsError {
  /** The transport the platform was configured with. */
  readonly transport: VmwareTransport;
  constructor(transport: VmwareTransport, detail?: string) {
    super(
      'transport',
      `the ${transport === 'nbd' ? 'NBD' : 'HTTPS datastore'} data path of @drkit/provider-vmware cannot read ` +
        `this disk (not built yet): ${detail ?? ''}`,
      { retryable: false },
    );
    this.transport = transport;
    Object.defineProperty(this, notBuiltMarker, { value: true });
  }
  static override isInstance(error: unknown): error is VmwareDataPathNotBuiltError {
    return (
      InvalidSettingsError.isInstance(error) &&
      (error as unknown as Record<symbol, unknown>)[notBuiltMarker] === true
    );
  }
}

/** The format of this reader's checkpoint tokens (JSON). */
const TOKEN_FORMAT = 'drkit-vmware-cbt';
const TOKEN_VERSION = 1;

/**
 * What a checkpoint of this reader holds: the disk (VM and device key), its change id at the snapshot (empty when
 * change tracking gave none) and its base file (the VMDK without a snapshot-chain suffix).
 * @internal
 */
export interface VmwareCheckpointToken {
  readonly format: typeof TOKEN_FORMAT;
  readonly version: typeof TOKEN_VERSION;
  readonly vm: string;
  readonly deviceKey: string;
  readonly changeId: string;
  readonly file: string;
}

/**
 * The reader's block size: 512 bytes, a sector. `QueryChangedDiskAreas` answers sector-aligned areas (ESXi tracks
 * at a granularity that grows with the disk's size, 64 KiB or more; the areas are listed as they come), so a
 * 512-byte block lists them without rounding: nothing unchanged is read. The engine cuts them at its chunk
 * boundaries and completes partly covered chunks from the parent point.
 */
const BLOCK_SIZE = 512;

/**
 * `QueryChangedDiskAreas` pages asked for ahead of the one being listed (in memory at most, with it). 16: each
 * answer is a SOAP round trip, and with small answers (vcsim's 4 MiB) the listing, not the reads, bounds a
 * session; 16 ahead read NBD sessions at 0.27 of nbdcopy (median of five bench invocations) against 0.19 with 4.
 */
const PAGES_AHEAD = 16;

/** The VMDK a snapshot chain's delta belongs to: `[ds] vm/disk-000002.vmdk` → `[ds] vm/disk.vmdk`. */
function baseFileOf(fileName: string | undefined): string {
  return (fileName ?? '').replace(/-\d{6}\.vmdk$/, '.vmdk');
}

/** The epoch of a change id (`52 1b ... 6a/17` → `52 1b ... 6a`): it changes when tracking is reset. */
function changeIdEpoch(changeId: string): string {
  const slash = changeId.lastIndexOf('/');
  return slash < 0 ? changeId : changeId.slice(0, slash);
}

function parseDiskSnapshotRef(options: OpenChangedBlocksOptions): VmwareDiskSnapshotRef {
  const text = options.diskSnapshot?.ref;
  if (text === undefined) {
    throw new InvalidArgumentError(
      `the VMware reader of disk ${options.disk.id} needs its snapshot (diskSnapshot): VMware disks are read ` +
        'from a VM snapshot only',
    );
  }
  let ref: Partial<VmwareDiskSnapshotRef> | undefined;
  try {
    ref = JSON.parse(text) as Partial<VmwareDiskSnapshotRef>;
  } catch {
    ref = undefined;
  }
  if (
    typeof ref !== 'object' ||
    ref === null ||
    typeof ref.vm !== 'string' ||
    typeof ref.snapshot !== 'string' ||
    typeof ref.deviceKey !== 'number'
  ) {
    throw new InvalidArgumentError(
      `diskSnapshot.ref of disk ${options.disk.id} is not a snapshot reference of @drkit/provider-vmware`,
    );
  }
  return ref as VmwareDiskSnapshotRef;
}

/**
 * A read of every byte of the disk as the NBD export's allocation tells it: `zero` extents for what reads as
 * zeros (shrunk to whole 512-byte blocks), `data` for the rest (grown to them), neighbours merged. The engine
 * stores zeros without reading them.
 * @internal
 */
export async function* wholeByAllocation(
  allocation: NonNullable<VmwareNbdSource['allocation']>,
  capacityBytes: number,
  options: CallOptions,
): AsyncGenerator<ChangedExtent> {
  let pending: { kind: 'data' | 'zero'; offset: number; length: number } | undefined;
  /** Everything before this is pending or yielded, contiguous from 0. */
  let covered = 0;
  const blockEnd = (at: number) => Math.min(capacityBytes, Math.ceil(at / BLOCK_SIZE) * BLOCK_SIZE);
  function* add(kind: 'data' | 'zero', end: number): Generator<ChangedExtent> {
    if (end <= covered) return;
    if (pending && pending.kind === kind) pending.length = end - pending.offset;
    else {
      if (pending) {
        options.signal?.throwIfAborted();
        yield { kind: pending.kind, offset: pending.offset, length: pending.length };
      }
      pending = { kind, offset: covered, length: end - covered };
    }
    covered = end;
  }
  for await (const extent of allocation(options)) {
    const end = Math.min(capacityBytes, extent.offset + extent.length);
    if (extent.offset > covered) yield* add('data', blockEnd(extent.offset)); // never skip what was not described
    if (end <= covered) continue;
    if (extent.zero) {
      // Only whole blocks read as zeros; the partial blocks at either end are read.
      const zeroEnd = end === capacityBytes ? end : end - (end % BLOCK_SIZE);
      const zeroStart = blockEnd(covered);
      if (zeroEnd > zeroStart) {
        yield* add('data', zeroStart);
        yield* add('zero', zeroEnd);
      }
    }
    yield* add('data', blockEnd(end));
  }
  yield* add('data', capacityBytes);
  if (pending) {
    options.signal?.throwIfAborted();
    yield { kind: pending.kind, offset: pending.offset, length: pending.length };
  }
}

/** What the reader needs from its platform. @internal */
export interface VmwareReaderContext {
  readonly session: VmwareSession;
  readonly client: VimSoapClient;
  readonly settings: ResolvedVmwareOptions;
  /** The platform's data connections per ESXi host, shared by every session. */
  readonly budget: VmwareConnectionBudget;
}

/** Where a session reads the disk's bytes: HTTPS datastore ranges or an NBD export. */
interface DiskDataSource {
  readonly url: string;
  /** NBD with `base:allocation`: what reads as zeros, for a full read without change tracking. */
  readonly allocation?: VmwareNbdSource['allocation'];
  read(
    offset: number,
    length: number,
    options: CallOptions & { readonly allocate?: ((length: number) => Uint8Array) | undefined },
  ): Promise<Uint8Array>;
  close(): Promise<void>;
}

type Listing =
  | { readonly kind: 'areas'; readonly query: ChangedAreasQuery; first: ChangedAreasPage | undefined }
  | { readonly kind: 'whole' };

interface Decision {
  readonly validity: ChangeSetValidity;
  readonly listing: Listing;
}

/**
 * HTTPS ranges with at most `grant.connections` requests in flight (the session's share of its host's budget);
 * the others wait in order. `close` gives the connections back.
 */
function budgetedRanges(
  ranges: { readonly url: string; read: DiskDataSource['read'] },
  grant: VmwareConnectionGrant,
): DiskDataSource {
  let inFlight = 0;
  const queue: (() => void)[] = [];
  const limit = grant.connections;
  return {
    url: ranges.url,
    async read(offset, length, options) {
      if (inFlight >= limit) {
        await new Promise<void>((resolve, reject) => {
          const go = () => {
            options.signal?.removeEventListener('abort', onAbort);
            resolve();
          };
          const onAbort = () => {
            const at = queue.indexOf(go);
            if (at >= 0) queue.splice(at, 1);
            reject(options.signal?.reason);
          };
          queue.push(go);
          options.signal?.addEventListener('abort', onAbort, { once: true });
        });
      } else inFlight += 1;
      try {
        return await ranges.read(offset, length, options);
      } finally {
        const next = queue.shift();
        if (next) next();
        else inFlight -= 1;
      }
    },
    async close() {
      grant.release();
    },
  };
}

/**
 * The changed-block reader of a VMware platform: `extents` mode. `open` decides from the snapshot's change id and
 * the base checkpoint's: an exact incremental (`QueryChangedDiskAreas` from the base's change id), or a full read
 * (`"*"`: allocated areas only, or every byte when the snapshot has no change id) with its reason. Reads go over
 * HTTPS datastore ranges or the NBD export `nbd.locate` names.
 * @internal
 */
export function createVmwareChangedBlockReader(context: VmwareReaderContext): ChangedBlockReader {
  const { session, client, settings, budget } = context;

  /** The moref value of the ESXi host running the VM (`runtime.host`): the key of its connection budget. */
  async function esxiHostOf(vm: string, o: CallOptions): Promise<string> {
    const sc = await session.serviceContent(o);
    const obj: ManagedObjectReference = { type: 'VirtualMachine', value: vm };
    for await (const content of retrieveObjects(
      session,
      sc,
      objectSpec(obj, { type: obj.type, paths: ['runtime.host'] }),
      1,
      o,
    )) {
      const host = content.properties.get('runtime.host')?.text.trim();
      if (host) return host;
    }
    // No host reported (a VM being registered or moved): one shared budget for such VMs, never none.
    return '(unknown host)';
  }

  async function trackingEnabledAt(
    snapshot: ManagedObjectReference,
    o: CallOptions,
  ): Promise<boolean | undefined> {
    const sc = await session.serviceContent(o);
    for await (const content of retrieveObjects(
      session,
      sc,
      objectSpec(snapshot, { type: snapshot.type, paths: ['config.changeTrackingEnabled'] }),
      1,
      o,
    )) {
      const value = content.properties.get('config.changeTrackingEnabled')?.text.trim();
      return value === undefined ? undefined : value === 'true';
    }
    return undefined;
  }

  function soapOptions(o: CallOptions, requestTimeoutSeconds: number): CallOptions {
    return {
      ...o,
      deadline: Math.min(o.deadline ?? Number.POSITIVE_INFINITY, Date.now() + requestTimeoutSeconds * 1000),
    };
  }

  async function decide(
    options: OpenChangedBlocksOptions,
    ref: VmwareDiskSnapshotRef,
    capacityBytes: number,
    o: () => CallOptions,
  ): Promise<Decision> {
    const vm: ManagedObjectReference = { type: 'VirtualMachine', value: ref.vm };
    const snapshot: ManagedObjectReference = { type: 'VirtualMachineSnapshot', value: ref.snapshot };
    const query = (changeId: string): ChangedAreasQuery => ({
      vm,
      snapshot,
      deviceKey: ref.deviceKey,
      changeId,
      capacityBytes,
    });
    const wholeNote =
      settings.transport === 'nbd'
        ? " (over NBD: but what the export's block status says reads as zeros, when it offers base:allocation)"
        : '';
    /** A full read: `"*"` when the snapshot has a change id (allocated areas), else every byte. */
    const full = async (reason: FullReadReason, detail?: string): Promise<Decision> => {
      const validity: ChangeSetValidity = { kind: 'full', reason, ...(detail ? { detail } : {}) };
      if (!ref.changeId) {
        return {
          validity: {
            ...validity,
            detail: `${detail ? `${detail}; ` : ''}the snapshot has no change id (change tracking off or not started): every byte is read${wholeNote}`,
          },
          listing: { kind: 'whole' },
        };
      }
      try {
        const q = query('*');
        return {
          validity,
          listing: { kind: 'areas', query: q, first: await queryChangedDiskAreasPage(session, q, 0, o()) },
        };
      } catch (error) {
        if (!CheckpointInvalidError.isInstance(error)) throw error;
        return {
          validity: {
            ...validity,
            detail: `${detail ? `${detail}; ` : ''}QueryChangedDiskAreas("*") was refused (${vmwareFaultOf(error.cause)?.type ?? 'fault'}): every byte is read${wholeNote}`,
          },
          listing: { kind: 'whole' },
        };
      }
    };

    const base = options.base;
    if (!base) return full(options.fullReason ?? 'first-backup');
    if (base.diskId !== options.disk.id) {
      return full(
        'checkpoint-invalid',
        `the base checkpoint is of disk ${base.diskId}, not of ${options.disk.id}`,
      );
    }
    const token = parseCheckpointToken(base.token, TOKEN_FORMAT, TOKEN_VERSION, [
      'vm',
      'deviceKey',
      'changeId',
      'file',
    ]);
    if (!token) {
      return full('checkpoint-invalid', 'the base checkpoint is not a change id this reader wrote');
    }
    if (token.vm !== ref.vm || token.deviceKey !== String(ref.deviceKey)) {
      // Same drkit disk (instance UUID and device key), another vSphere object: a VM restored or registered again.
      return full(
        'disk-recreated',
        `the base was read from disk ${token.deviceKey} of ${token.vm}, this snapshot is of disk ${ref.deviceKey} ` +
          `of ${ref.vm}: the VM was restored, registered again or its disk replaced`,
      );
    }
    if (!ref.changeId) {
      const tracking = await trackingEnabledAt(snapshot, o());
      return tracking
        ? full(
            'vmware-change-tracking-enabled',
            'change tracking is on but has not started on this disk yet (it starts at the next stun)',
          )
        : full('tracking-disabled', `change tracking is off on ${ref.vm}`);
    }
    if (token.changeId === '') {
      return full(
        'vmware-change-tracking-enabled',
        'the base was read while change tracking was off or had not started: this is the first read with a change id',
      );
    }
    if (base.capacityBytes !== capacityBytes) {
      return full(
        'disk-resized',
        `the disk was ${base.capacityBytes} bytes at the base and is ${capacityBytes} bytes now`,
      );
    }
    const file = baseFileOf(ref.fileName);
    if (token.file !== file) {
      return full('disk-recreated', `the disk's file was ${token.file} at the base and is ${file} now`);
    }
    if (changeIdEpoch(token.changeId) !== changeIdEpoch(ref.changeId)) {
      return full(
        'tracking-reset',
        'the change id epoch differs from the base: change tracking was reset (turned off and on, or the disk restored)',
      );
    }
    const q = query(token.changeId);
    try {
      return {
        validity: { kind: 'exact' },
        listing: { kind: 'areas', query: q, first: await queryChangedDiskAreasPage(session, q, 0, o()) },
      };
    } catch (error) {
      if (!CheckpointInvalidError.isInstance(error)) throw error;
      const fault = vmwareFaultOf(error.cause);
      return full(
        'tracking-reset',
        `vSphere refused the base's change id (${fault?.type ?? 'fault'}${fault?.message ? `: ${fault.message}` : ''})`,
      );
    }
  }

  async function open(options: OpenChangedBlocksOptions): Promise<ChangedBlockSession> {
    options.signal?.throwIfAborted();
    const nbd = settings.transport === 'nbd' ? settings.nbd : undefined;
    if (settings.transport === 'nbd' && !nbd) {
      throw new InvalidSettingsError(
        'nbd',
        'transport "nbd" (the default) needs `nbd.locate`: where the nbdkit export (VDDK plugin) of each disk ' +
          'snapshot is (see the README); or choose `transport: "https"`',
      );
    }
    const requestTimeoutSeconds = options.requestTimeoutSeconds ?? settings.httpTimeoutSeconds;
    const callOptions: CallOptions = {
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.deadline === undefined ? {} : { deadline: options.deadline }),
      ...(options.logger ? { logger: options.logger } : settings.logger ? { logger: settings.logger } : {}),
    };
    const o = () => soapOptions(callOptions, requestTimeoutSeconds);
    const ref = parseDiskSnapshotRef(options);
    const capacityBytes = ref.capacityBytes ?? options.disk.capacityBytes;
    if (nbd) {
      // The change set is decided (SOAP) while the export is located and connected: neither waits for the other.
      // When deciding fails, a session still waiting for a connection of its host stops waiting.
      const stopSourcing = new AbortController();
      const sourceOptions: CallOptions = {
        ...callOptions,
        signal: options.signal ? AbortSignal.any([options.signal, stopSourcing.signal]) : stopSourcing.signal,
      };
      const sourcing = esxiHostOf(ref.vm, o()).then((esxiHost) =>
        openNbdSource(
          nbd,
          {
            diskId: options.disk.id,
            vm: ref.vm,
            snapshot: ref.snapshot,
            deviceKey: ref.deviceKey,
            fileName: ref.fileName,
            capacityBytes,
            esxiHost,
          },
          requestTimeoutSeconds,
          sourceOptions,
          budget,
          options.waiting,
        ),
      );
      sourcing.catch(() => undefined); // awaited below, or closed when deciding failed
      let decision: Decision;
      try {
        decision = await decide(options, ref, capacityBytes, o);
      } catch (error) {
        stopSourcing.abort(error);
        await sourcing.then((source) => source.close()).catch(() => undefined);
        throw error;
      }
      return finish(decision, await sourcing);
    }
    const flat = flatFileOf(ref.fileName);
    if ('problem' in flat) throw new VmwareDataPathNotBuiltError('https', flat.problem);
    const sc = await session.serviceContent(o());
    // The datacenter's path and the change set are asked for at once.
    const deciding = decide(options, ref, capacityBytes, o);
    deciding.catch(() => undefined); // awaited below
    const hosting = esxiHostOf(ref.vm, o());
    hosting.catch(() => undefined); // awaited below
    const datacenterPath = await datacenterPathOf(
      session,
      sc,
      { type: 'VirtualMachine', value: ref.vm },
      o(),
    );
    const ranges = createDatastoreRangeReader({
      client,
      session,
      sdkUrl: settings.sdkUrl,
      datacenterPath,
      file: flat.file,
      requestTimeoutSeconds,
    });
    const decision = await deciding;
    // The host's file service serves the ranges: requests in flight count against its budget like NBD connections.
    const grant = await budget.acquire(
      await hosting,
      settings.maxConcurrentReads,
      callOptions,
      options.waiting,
    );
    try {
      return await finish(decision, budgetedRanges(ranges, grant));
    } catch (error) {
      grant.release();
      throw error;
    }

    async function finish(decision: Decision, source: DiskDataSource): Promise<ExtentReadSession> {
      if (options.signal?.aborted) {
        await source.close().catch(() => undefined);
        throw options.signal.reason;
      }
      const token: VmwareCheckpointToken = {
        format: TOKEN_FORMAT,
        version: TOKEN_VERSION,
        vm: ref.vm,
        deviceKey: String(ref.deviceKey),
        changeId: ref.changeId ?? '',
        file: baseFileOf(ref.fileName),
      };
      const checkpoint: Checkpoint = {
        diskId: options.disk.id,
        token: JSON.stringify(token),
        capacityBytes,
        createdAt: new Date().toISOString(),
      };
      (options.logger ?? settings.logger)?.debug(
        {
          diskId: options.disk.id,
          validity: decision.validity.kind,
          ...(decision.validity.kind === 'full' ? { reason: decision.validity.reason } : {}),
          source: source.url,
        },
        'VMware read session opened',
      );
      return createSession({
        capacityBytes,
        decision,
        checkpoint,
        source,
        allocate: options.allocate,
        requestTimeoutSeconds,
        logger: callOptions.logger,
        diskId: options.disk.id,
      });
    }
  }

  function createSession(s: {
    readonly capacityBytes: number;
    readonly decision: Decision;
    readonly checkpoint: Checkpoint;
    readonly source: DiskDataSource;
    readonly allocate: ((length: number) => Uint8Array) | undefined;
    readonly requestTimeoutSeconds: number;
    readonly logger: CallOptions['logger'];
    readonly diskId: string;
  }): ExtentReadSession {
    let closed = false;
    const { capacityBytes, decision } = s;

    function assertOpen(what: string): void {
      if (closed) throw new InvalidArgumentError(`${what} of disk ${s.diskId}: the read session is closed`);
    }

    async function* extents(options: CallOptions = {}): AsyncGenerator<ChangedExtent> {
      options.signal?.throwIfAborted();
      assertOpen('extents()');
      const listing = decision.listing;
      if (listing.kind === 'whole') {
        if (s.source.allocation) {
          yield* wholeByAllocation(s.source.allocation, capacityBytes, options);
          return;
        }
        if (capacityBytes > 0) yield { kind: 'data', offset: 0, length: capacityBytes };
        return;
      }
      const logger = options.logger ?? s.logger;
      const pageOptions = (): CallOptions =>
        soapOptions({ ...options, ...(logger ? { logger } : {}) }, s.requestTimeoutSeconds);
      let page = listing.first ?? (await queryChangedDiskAreasPage(session, listing.query, 0, pageOptions()));
      listing.first = undefined; // held once: the next pages are fetched as the list is read
      let pending: { offset: number; length: number } | undefined;
      // The next pages are asked for while this one's areas are read, up to PAGES_AHEAD at once, each where the
      // previous answer would end if it covered as much as the last one did. An answer is used only if it starts
      // exactly where the list so far ends, as in a one-by-one walk (the snapshot does not change, so when it was
      // asked does not matter); the others are dropped and the walk goes on from there.
      const ahead: { readonly at: number; readonly page: Promise<ChangedAreasPage> }[] = [];
      let nextAsk = page.end;
      const askAhead = (span: number) => {
        while (ahead.length < PAGES_AHEAD && nextAsk < capacityBytes) {
          const asked = queryChangedDiskAreasPage(session, listing.query, nextAsk, pageOptions());
          asked.catch(() => undefined); // awaited when its turn comes, or dropped
          ahead.push({ at: nextAsk, page: asked });
          nextAsk += span;
        }
      };
      for (;;) {
        if (page.end < capacityBytes) {
          while (ahead.length > 0 && ahead[0]!.at !== page.end) ahead.shift();
          if (ahead.length === 0) nextAsk = page.end;
          askAhead(page.end - page.startOffset);
        }
        for (const area of page.areas) {
          // Areas are sector aligned; round out defensively (reading a few more bytes is never wrong).
          const start = Math.floor(area.offset / BLOCK_SIZE) * BLOCK_SIZE;
          const end = Math.min(
            capacityBytes,
            Math.ceil((area.offset + area.length) / BLOCK_SIZE) * BLOCK_SIZE,
          );
          if (pending && pending.offset + pending.length >= start) {
            pending.length = Math.max(pending.length, end - pending.offset);
          } else {
            if (pending) {
              options.signal?.throwIfAborted();
              yield { kind: 'data', offset: pending.offset, length: pending.length };
            }
            pending = { offset: start, length: end - start };
          }
        }
        if (page.end >= capacityBytes) break;
        page = await ahead.shift()!.page;
      }
      if (pending && pending.length > 0) {
        options.signal?.throwIfAborted();
        yield { kind: 'data', offset: pending.offset, length: pending.length };
      }
    }

    async function read(request: ReadRequest, options: CallOptions = {}): Promise<ReadResult> {
      options.signal?.throwIfAborted();
      assertOpen('read()');
      const { offset, length } = request;
      if (
        !Number.isSafeInteger(offset) ||
        !Number.isSafeInteger(length) ||
        offset < 0 ||
        length <= 0 ||
        offset + length > capacityBytes
      ) {
        throw new InvalidArgumentError(
          `read({ offset: ${offset}, length: ${length} }) of disk ${s.diskId} is outside its ${capacityBytes} bytes`,
        );
      }
      const data = await s.source.read(offset, length, {
        ...options,
        ...(options.logger || !s.logger ? {} : { logger: s.logger }),
        allocate: s.allocate,
      });
      return { data };
    }

    let closing: Promise<void> | undefined;
    function close(): Promise<void> {
      // HTTPS: the agent and the vSphere session are the platform's, nothing of the session's own to release.
      // NBD: the export's connections, then the location's `release`.
      closed = true;
      closing ??= s.source.close();
      return closing;
    }

    return {
      mode: 'extents',
      capacityBytes,
      validity: decision.validity,
      extents,
      read,
      checkpoint: () => s.checkpoint,
      // The base of the next backup is the change id in the checkpoint, which vSphere keeps by itself: nothing to
      // acknowledge on commit, nothing to undo on abandon (the engine releases the VM snapshot after the backup).
      async commit() {},
      async abandon() {},
      close,
      [Symbol.asyncDispose]: close,
    };
  }

  return {
    mode: 'extents',
    blockSize: BLOCK_SIZE,
    maxConcurrentReads: settings.maxConcurrentReads,
    open,
  };
}
