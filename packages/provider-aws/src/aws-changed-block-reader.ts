import {
  GetSnapshotBlockCommand,
  ListChangedBlocksCommand,
  type ListChangedBlocksCommandOutput,
  ListSnapshotBlocksCommand,
  type ListSnapshotBlocksCommandOutput,
} from '@aws-sdk/client-ebs';
import {
  type AbandonReason,
  type CallOptions,
  type ChangedBlockReader,
  type ChangedExtent,
  type ChangeSetValidity,
  type Checkpoint,
  ChecksumMismatchError,
  type CommittedPoint,
  type Disk,
  type ExtentReadSession,
  InvalidArgumentError,
  type OpenChangedBlocksOptions,
  parseCheckpointToken,
  type ReadRequest,
  type ReadResult,
  retry,
  SourceProtocolError,
  UnreachableError,
  withCallDeadline,
} from '@drkit/core';
import type { AwsClients } from './aws-clients.js';
import { awsErrorFacts, isAwsThrottling, isAwsTransient, toDrkitError } from './aws-errors.js';
import type { ResolvedAwsOptions } from './aws-options.js';
import type { AwsRateLimiter, SnapshotLane } from './aws-rate-limiter.js';

/** The EBS direct API block size: 512 KiB. */
export const EBS_BLOCK_SIZE = 524_288;
const GIB = 1024 ** 3;
const SNAPSHOT_ID = /^snap-[0-9a-f]{8,32}$/;
/** How many blocks a re-listing after an expired block token asks for (the API's minimum page). */
const RELIST_WINDOW = 100;
/** Fresh tokens kept at most (a re-listed window's worth for each read in flight, with room to spare). */
const MAX_FRESH_TOKENS = 20_000;
/**
 * Attempts of one EBS request that fails in transport or with a 5xx. Throttling is not counted here: a throttled
 * request waits in the platform's rate limiter and is sent again.
 */
const TRANSIENT_ATTEMPTS = 3;
/** Attempts of one list call failing in transport or with a 5xx (throttling waits in the rate limiter). */
const LIST_ATTEMPTS = 6;

/** What a checkpoint of this reader records: the EBS snapshot the point was read from. Never a secret. */
interface AwsEbsToken {
  readonly format: 'drkit-aws-ebs';
  readonly version: 1;
  readonly volumeId: string;
  readonly snapshotId: string;
}

/** An open read of one EBS volume at one snapshot: `extents()` lists, `read()` calls GetSnapshotBlock. */
export interface AwsEbsReadSession extends ExtentReadSession {
  /** The snapshot read (the disk's {@link @drkit/core!DiskSnapshot.ref}). */
  readonly snapshotId: string;
  /** The snapshot the changes are listed against, for an incremental. */
  readonly baseSnapshotId: string | undefined;
}

/** The {@link @drkit/core!ChangedBlockReader} of an AWS platform. */
export interface AwsChangedBlockReader extends ChangedBlockReader {
  readonly mode: 'extents';
  readonly blockSize: typeof EBS_BLOCK_SIZE;
  /**
   * Opens a read of the disk's EBS snapshot (the host snapshot's `ref` for the disk, required). Without a base:
   * every written block (`ListSnapshotBlocks`; unlisted blocks are zeros), validity `full` with `fullReason` or
   * `first-backup`. With a base: `ListChangedBlocks` from the base's snapshot, validity `exact`. A full read
   * instead, with the reason, when the checkpoint is garbled or another disk's (`checkpoint-invalid`), its
   * snapshot is gone (`base-snapshot-missing`) or of another lineage (`aws-unrelated-snapshots`).
   *
   * @throws {@link @drkit/core!InvalidArgumentError} without a snapshot reference;
   * {@link @drkit/core!NotFoundError} when the snapshot does not exist; {@link @drkit/core!AuthenticationError},
   * {@link @drkit/core!PermissionError} (naming `ebs:ListSnapshotBlocks` or `ebs:ListChangedBlocks`),
   * {@link @drkit/core!UnreachableError}. Rejects with `signal.reason` when aborted.
   */
  open(options: OpenChangedBlocksOptions): Promise<AwsEbsReadSession>;
}

function parseToken(text: string): AwsEbsToken | undefined {
  const token = parseCheckpointToken(text, 'drkit-aws-ebs', 1, ['volumeId', 'snapshotId']);
  if (!token || !SNAPSHOT_ID.test(token.snapshotId)) return undefined;
  return token as unknown as AwsEbsToken;
}

/** One entry of a listing page: a block with data (and its token), or a block now unwritten. */
interface ListedBlock {
  readonly index: number;
  readonly token: string | undefined;
}

interface ListPage {
  readonly blocks: readonly ListedBlock[];
  readonly volumeSizeGiB: number | undefined;
  readonly nextToken: string | undefined;
}

type Listing =
  | { readonly kind: 'blocks'; readonly snapshotId: string }
  | { readonly kind: 'changed'; readonly firstSnapshotId: string; readonly snapshotId: string };

/** Runs `call` within the call's signal, deadline and the request timeout; rethrows an abort's reason. */
async function bounded<T>(
  options: CallOptions | undefined,
  timeoutSeconds: number,
  what: string,
  call: (signal: AbortSignal | undefined) => Promise<T>,
): Promise<T> {
  const limit = Date.now() + timeoutSeconds * 1000;
  const deadline = options?.deadline === undefined ? limit : Math.min(options.deadline, limit);
  using scope = withCallDeadline({ ...options, deadline }, what);
  try {
    return await call(scope.signal);
  } catch (error) {
    if (scope.signal?.aborted) throw scope.signal.reason;
    throw error;
  }
}

/** @internal */
export interface AwsReaderContext {
  readonly clients: AwsClients;
  readonly options: ResolvedAwsOptions;
  /** The platform's rate limiter, shared by every session. */
  readonly limiter: AwsRateLimiter;
}

/**
 * Creates the reader of an AWS platform.
 *
 * @internal use {@link createAwsPlatform}.
 */
export function createAwsChangedBlockReader(context: AwsReaderContext): AwsChangedBlockReader {
  const { clients, options, limiter } = context;

  async function listPage(
    listing: Listing,
    from: { nextToken?: string; startingBlockIndex?: number; maxResults?: number },
    callOptions: CallOptions | undefined,
    timeoutSeconds: number,
  ): Promise<ListPage> {
    const action = listing.kind === 'blocks' ? 'ebs:ListSnapshotBlocks' : 'ebs:ListChangedBlocks';
    const what =
      listing.kind === 'blocks'
        ? `ListSnapshotBlocks of ${listing.snapshotId}`
        : `ListChangedBlocks from ${listing.firstSnapshotId} to ${listing.snapshotId}`;
    const page = {
      MaxResults: from.maxResults ?? options.listPageSize,
      ...(from.nextToken === undefined ? {} : { NextToken: from.nextToken }),
      ...(from.startingBlockIndex === undefined ? {} : { StartingBlockIndex: from.startingBlockIndex }),
    };
    const operation = listing.kind === 'blocks' ? 'ListSnapshotBlocks' : 'ListChangedBlocks';
    return retry(
      () =>
        limiter.list(
          operation,
          () =>
            bounded(callOptions, timeoutSeconds, what, async (signal) => {
              if (listing.kind === 'blocks') {
                const out: ListSnapshotBlocksCommandOutput = await clients.ebs.send(
                  new ListSnapshotBlocksCommand({ SnapshotId: listing.snapshotId, ...page }),
                  { abortSignal: signal },
                );
                return {
                  blocks: (out.Blocks ?? []).map((b) => ({ index: b.BlockIndex!, token: b.BlockToken })),
                  volumeSizeGiB: out.VolumeSize,
                  nextToken: out.NextToken || undefined,
                };
              }
              const out: ListChangedBlocksCommandOutput = await clients.ebs.send(
                new ListChangedBlocksCommand({
                  FirstSnapshotId: listing.firstSnapshotId,
                  SecondSnapshotId: listing.snapshotId,
                  ...page,
                }),
                { abortSignal: signal },
              );
              return {
                blocks: (out.ChangedBlocks ?? []).map((b) => ({
                  index: b.BlockIndex!,
                  token: b.SecondBlockToken,
                })),
                volumeSizeGiB: out.VolumeSize,
                nextToken: out.NextToken || undefined,
              };
            }),
          callOptions?.signal,
          what,
        ),
      {
        attempts: LIST_ATTEMPTS,
        isRetryable: (error) => !isAwsThrottling(error) && isAwsTransient(error),
        ...(callOptions?.signal ? { signal: callOptions.signal } : {}),
      },
    ).catch((error: unknown) => {
      if (callOptions?.signal?.aborted) throw callOptions.signal.reason;
      const facts = awsErrorFacts(error);
      if (facts.name === 'ValidationException' || facts.name === 'ResourceNotFoundException') throw error;
      throw toDrkitError(error, action, what);
    });
  }

  async function open(openOptions: OpenChangedBlocksOptions): Promise<AwsEbsReadSession> {
    const { disk, snapshot, base, signal } = openOptions;
    signal?.throwIfAborted();
    const snapshotId =
      openOptions.diskSnapshot?.ref ?? snapshot?.disks.find((d) => d.diskId === disk.id)?.ref;
    if (snapshotId === undefined) {
      throw new InvalidArgumentError(
        `disk ${disk.id}: an EBS read needs the host snapshot of this backup (the platform takes host snapshots): pass \`snapshot\``,
      );
    }
    if (!SNAPSHOT_ID.test(snapshotId)) {
      throw new InvalidArgumentError(
        `disk ${disk.id}: ${JSON.stringify(snapshotId)} is not an EBS snapshot id`,
      );
    }
    const timeoutSeconds = openOptions.requestTimeoutSeconds ?? options.requestTimeoutSeconds;
    const callOptions: CallOptions = {
      ...(signal ? { signal } : {}),
      ...(openOptions.deadline === undefined ? {} : { deadline: openOptions.deadline }),
    };
    const full: Listing = { kind: 'blocks', snapshotId };
    const fullRead = async (
      validity: ChangeSetValidity,
    ): Promise<{ listing: Listing; validity: ChangeSetValidity; first: ListPage }> => {
      try {
        return { listing: full, validity, first: await listPage(full, {}, callOptions, timeoutSeconds) };
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        throw toDrkitError(
          error,
          'ebs:ListSnapshotBlocks',
          `disk ${disk.id}: ListSnapshotBlocks of ${snapshotId}`,
        );
      }
    };
    let decided: { listing: Listing; validity: ChangeSetValidity; first: ListPage };
    const token = base ? parseToken(base.token) : undefined;
    if (!base) {
      decided = await fullRead({ kind: 'full', reason: openOptions.fullReason ?? 'first-backup' });
    } else if (!token || base.diskId !== disk.id || token.volumeId !== disk.id) {
      decided = await fullRead({
        kind: 'full',
        reason: 'checkpoint-invalid',
        detail: !token
          ? 'the base checkpoint is not an EBS checkpoint drkit wrote'
          : `the base checkpoint belongs to ${token.volumeId}, not ${disk.id}`,
      });
    } else {
      const changed: Listing = { kind: 'changed', firstSnapshotId: token.snapshotId, snapshotId };
      try {
        decided = {
          listing: changed,
          validity: { kind: 'exact' },
          first: await listPage(changed, {}, callOptions, timeoutSeconds),
        };
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        const facts = awsErrorFacts(error);
        if (facts.name === 'ResourceNotFoundException') {
          // The base is gone, or the new snapshot is: the full listing tells which (and throws for the latter).
          decided = await fullRead({
            kind: 'full',
            reason: 'base-snapshot-missing',
            detail: `the base snapshot ${token.snapshotId} no longer exists (${facts.message})`,
          });
        } else if (facts.reason === 'UNRELATED_SNAPSHOTS') {
          decided = await fullRead({
            kind: 'full',
            reason: 'aws-unrelated-snapshots',
            detail: `EBS says the base snapshot ${token.snapshotId} and ${snapshotId} are not of one lineage`,
          });
        } else {
          throw toDrkitError(
            error,
            'ebs:ListChangedBlocks',
            `disk ${disk.id}: ListChangedBlocks from ${token.snapshotId}`,
          );
        }
      }
    }
    const sizeGiB = decided.first.volumeSizeGiB;
    if (sizeGiB === undefined || !Number.isSafeInteger(sizeGiB) || sizeGiB < 1) {
      throw new SourceProtocolError(`disk ${disk.id}: EBS did not report the size of snapshot ${snapshotId}`);
    }
    return new EbsReadSession({
      disk,
      snapshotId,
      snapshotName: snapshot?.name,
      capacityBytes: sizeGiB * GIB,
      validity: decided.validity,
      listing: decided.listing,
      first: decided.first,
      timeoutSeconds,
      listPage,
      clients,
      lane: limiter.snapshot(snapshotId),
      allocate: openOptions.allocate,
    });
  }

  return {
    mode: 'extents',
    blockSize: EBS_BLOCK_SIZE,
    maxConcurrentReads: options.maxConcurrentReads,
    open,
  };
}

interface SessionInit {
  readonly disk: Disk;
  readonly snapshotId: string;
  readonly snapshotName: string | undefined;
  readonly capacityBytes: number;
  readonly validity: ChangeSetValidity;
  readonly listing: Listing;
  readonly first: ListPage;
  readonly timeoutSeconds: number;
  readonly clients: AwsClients;
  /** The snapshot's bucket in the platform's rate limiter, released by close(). */
  readonly lane: SnapshotLane;
  readonly allocate: ((length: number) => Uint8Array) | undefined;
  readonly listPage: (
    listing: Listing,
    from: { nextToken?: string; startingBlockIndex?: number; maxResults?: number },
    options: CallOptions | undefined,
    timeoutSeconds: number,
  ) => Promise<ListPage>;
}

class EbsReadSession implements AwsEbsReadSession {
  readonly mode = 'extents' as const;
  readonly capacityBytes: number;
  readonly validity: ChangeSetValidity;
  readonly snapshotId: string;
  readonly baseSnapshotId: string | undefined;
  readonly #init: SessionInit;
  readonly #createdAt = new Date().toISOString();
  #first: ListPage | undefined;
  #listed = false;
  #closed = false;
  #outcome: 'commit' | 'abandon' | undefined;
  /** Tokens listed again after one expired, by block index, until that block is read. */
  readonly #fresh = new Map<number, string>();
  /** Re-listings in progress, by the block index they start at. */
  readonly #relisting = new Map<number, Promise<void>>();

  constructor(init: SessionInit) {
    this.#init = init;
    this.capacityBytes = init.capacityBytes;
    this.validity = init.validity;
    this.snapshotId = init.snapshotId;
    this.baseSnapshotId = init.listing.kind === 'changed' ? init.listing.firstSnapshotId : undefined;
    this.#first = init.first;
  }

  async *extents(options: CallOptions = {}): AsyncGenerator<ChangedExtent> {
    if (this.#listed) throw new InvalidArgumentError('extents() of an EBS read session is called once');
    this.#listed = true;
    this.#assertOpen();
    const { listing, disk } = this.#init;
    let page = this.#first!;
    this.#first = undefined;
    let last = -1;
    let zero: { offset: number; length: number } | undefined;
    const capacity = this.capacityBytes;
    for (;;) {
      options.signal?.throwIfAborted();
      for (const block of page.blocks) {
        if (!Number.isSafeInteger(block.index) || block.index <= last) {
          throw new SourceProtocolError(
            `disk ${disk.id}: EBS listed block ${block.index} after block ${last} (not ascending)`,
          );
        }
        last = block.index;
        const offset = block.index * EBS_BLOCK_SIZE;
        if (offset >= capacity) {
          throw new SourceProtocolError(
            `disk ${disk.id}: EBS listed block ${block.index}, past the volume's end`,
          );
        }
        const length = Math.min(EBS_BLOCK_SIZE, capacity - offset);
        if (block.token === undefined) {
          if (listing.kind === 'blocks') {
            throw new SourceProtocolError(`disk ${disk.id}: EBS listed block ${block.index} without a token`);
          }
          // Only in the base: the block is not written any more and reads as zeros.
          if (zero && zero.offset + zero.length === offset) zero.length += length;
          else {
            if (zero) yield { kind: 'zero', ...zero };
            zero = { offset, length };
          }
          continue;
        }
        if (zero) {
          yield { kind: 'zero', ...zero };
          zero = undefined;
        }
        yield { kind: 'data', offset, length, token: block.token };
      }
      if (page.nextToken === undefined) break;
      page = await this.#nextPage(page.nextToken, last + 1, options);
    }
    if (zero) yield { kind: 'zero', ...zero };
  }

  /** The next page; a page token that expired (60 minutes) is replaced by listing again from `resumeAt`. */
  async #nextPage(nextToken: string, resumeAt: number, options: CallOptions): Promise<ListPage> {
    const { listPage, listing, timeoutSeconds, disk } = this.#init;
    try {
      return await listPage(listing, { nextToken }, options, timeoutSeconds);
    } catch (error) {
      if (options.signal?.aborted) throw options.signal.reason;
      if (awsErrorFacts(error).reason === 'INVALID_PAGE_TOKEN') {
        try {
          return await listPage(listing, { startingBlockIndex: resumeAt }, options, timeoutSeconds);
        } catch (again) {
          if (options.signal?.aborted) throw options.signal.reason;
          throw toDrkitError(again, this.#action(), `disk ${disk.id}: listing again from block ${resumeAt}`);
        }
      }
      throw toDrkitError(error, this.#action(), `disk ${disk.id}: listing the blocks of ${this.snapshotId}`);
    }
  }

  #action(): string {
    return this.#init.listing.kind === 'blocks' ? 'ebs:ListSnapshotBlocks' : 'ebs:ListChangedBlocks';
  }

  async read(request: ReadRequest, options: CallOptions = {}): Promise<ReadResult> {
    this.#assertOpen();
    const { disk } = this.#init;
    const index = request.offset / EBS_BLOCK_SIZE;
    if (!Number.isSafeInteger(index) || index < 0 || request.length <= 0 || request.length > EBS_BLOCK_SIZE) {
      throw new InvalidArgumentError(
        `disk ${disk.id}: an EBS read is one 512 KiB block at a multiple of 524288 (asked offset ${request.offset}, length ${request.length})`,
      );
    }
    let token = this.#fresh.get(index) ?? request.token;
    if (token === undefined)
      throw new InvalidArgumentError(`disk ${disk.id}: the read of block ${index} has no block token`);
    for (let relisted = 0; ; relisted++) {
      try {
        const result = await this.#get(index, token, request.length, options);
        this.#fresh.delete(index);
        return result;
      } catch (error) {
        if (options.signal?.aborted) throw options.signal.reason;
        // A block token expires after 7 days (or may change when listed again): list that window again.
        if (awsErrorFacts(error).reason === 'INVALID_BLOCK_TOKEN' && relisted < 2) {
          token = await this.#relist(index, options);
          continue;
        }
        throw toDrkitError(
          error,
          'ebs:GetSnapshotBlock',
          `disk ${disk.id}: GetSnapshotBlock ${index} of ${this.snapshotId}`,
        );
      }
    }
  }

  async #relist(index: number, options: CallOptions): Promise<string> {
    let running = this.#relisting.get(index);
    if (!running) {
      const { listPage, listing, timeoutSeconds } = this.#init;
      running = listPage(
        listing,
        { startingBlockIndex: index, maxResults: RELIST_WINDOW },
        options,
        timeoutSeconds,
      ).then((page) => {
        if (this.#fresh.size + page.blocks.length > MAX_FRESH_TOKENS) this.#fresh.clear();
        for (const block of page.blocks)
          if (block.token !== undefined) this.#fresh.set(block.index, block.token);
      });
      this.#relisting.set(index, running);
      running.then(
        () => this.#relisting.delete(index),
        () => this.#relisting.delete(index),
      );
    }
    try {
      await running;
    } catch (error) {
      if (options.signal?.aborted) throw options.signal.reason;
      throw toDrkitError(
        error,
        this.#action(),
        `disk ${this.#init.disk.id}: listing block ${index} again for a new token`,
      );
    }
    const token = this.#fresh.get(index);
    if (token === undefined) {
      throw new SourceProtocolError(
        `disk ${this.#init.disk.id}: block ${index} of ${this.snapshotId} had an expired token and is not listed any more`,
      );
    }
    return token;
  }

  /** One GetSnapshotBlock, its body always consumed or destroyed; transport failures and 5xx tried again. */
  async #get(index: number, token: string, length: number, options: CallOptions): Promise<ReadResult> {
    const { clients, timeoutSeconds, disk, allocate, lane } = this.#init;
    const what = `GetSnapshotBlock ${index} of ${this.snapshotId}`;
    return retry(
      () =>
        lane.run(
          () =>
            bounded(options, timeoutSeconds, what, async (signal) => {
              const out = await clients.ebs.send(
                new GetSnapshotBlockCommand({
                  SnapshotId: this.snapshotId,
                  BlockIndex: index,
                  BlockToken: token,
                }),
                { abortSignal: signal },
              );
              const body = out.BlockData as
                | (AsyncIterable<Uint8Array> & { destroy?: () => void })
                | undefined;
              let consumed = false;
              try {
                if (!body) throw new SourceProtocolError(`disk ${disk.id}: ${what} answered without a body`);
                const expected = out.DataLength;
                if (expected !== length) {
                  throw new SourceProtocolError(
                    `disk ${disk.id}: ${what} says its data is ${expected} bytes long, the block is ${length}`,
                  );
                }
                const data = allocate?.(expected) ?? new Uint8Array(expected);
                if (data.byteLength !== expected)
                  throw new SourceProtocolError('allocate() returned a buffer of the wrong length');
                let filled = 0;
                for await (const chunk of body) {
                  if (filled + chunk.byteLength > expected) {
                    throw new ChecksumMismatchError(
                      `disk ${disk.id}: ${what} sent more than its ${expected} bytes`,
                    );
                  }
                  data.set(chunk, filled);
                  filled += chunk.byteLength;
                }
                consumed = true;
                if (filled !== expected) {
                  // A body cut short is a damaged transfer: the engine reads it again.
                  throw new ChecksumMismatchError(
                    `disk ${disk.id}: ${what} sent ${filled} of its ${expected} bytes`,
                  );
                }
                if (out.Checksum === undefined) return { data };
                const algorithm =
                  out.ChecksumAlgorithm === 'SHA256' ? 'sha256' : String(out.ChecksumAlgorithm).toLowerCase();
                return { data, checksum: { algorithm, base64: out.Checksum } };
              } finally {
                if (!consumed) body?.destroy?.();
              }
            }),
          options.signal,
          what,
        ),
      {
        attempts: TRANSIENT_ATTEMPTS,
        isRetryable: (error) => !isAwsThrottling(error) && isAwsTransient(error),
        ...(options.signal ? { signal: options.signal } : {}),
      },
    ).catch((error: unknown) => {
      if (isAwsTransient(error) && !isAwsThrottling(error)) {
        // Not retryable: this reader has retried already, and the engine would multiply the attempts.
        throw new UnreachableError(
          `disk ${disk.id}: ${what} kept failing after ${TRANSIENT_ATTEMPTS} attempts (${awsErrorFacts(error).message})`,
          {
            cause: new Error(awsErrorFacts(error).message),
            retryable: false,
          },
        );
      }
      throw error;
    });
  }

  checkpoint(): Checkpoint {
    const { disk, snapshotName } = this.#init;
    const token: AwsEbsToken = {
      format: 'drkit-aws-ebs',
      version: 1,
      volumeId: disk.id,
      snapshotId: this.snapshotId,
    };
    return {
      diskId: disk.id,
      token: JSON.stringify(token),
      capacityBytes: this.capacityBytes,
      createdAt: this.#createdAt,
      ...(snapshotName === undefined ? {} : { snapshotName }),
    };
  }

  /**
   * Nothing to do: EBS keeps no change tracking of its own to advance. The snapshot read becomes the next base
   * through the checkpoint, and the engine settles the older one (kept or released) through its ledger.
   */
  async commit(_point: CommittedPoint, _options?: CallOptions): Promise<void> {
    this.#outcome ??= 'commit';
  }

  /** Nothing to do: nothing on AWS moved. The engine releases the snapshot if no point needs it. */
  async abandon(_reason: AbandonReason, _options?: CallOptions): Promise<void> {
    this.#outcome ??= 'abandon';
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#fresh.clear();
    this.#init.lane[Symbol.dispose]();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #assertOpen(): void {
    if (this.#closed) throw new InvalidArgumentError(`the EBS read session of ${this.snapshotId} is closed`);
  }
}
