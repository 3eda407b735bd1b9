import type { AbandonReason } from './abandon-reason.js';
import type { CallOptions } from './call-options.js';
import type { ChangeSetValidity } from './change-set-validity.js';
import type { Checkpoint } from './checkpoint.js';
import type { CommittedPoint } from './committed-point.js';
import type { Extent } from './extent.js';

/**
 * What every read session has, whichever way it reads ({@link @drkit/core!StreamReadSession}, {@link @drkit/core!ExtentReadSession}). A
 * session holds source resources (a connection, a temp keyring, a mounted volume) until closed; `await using`
 * closes it also when the consumer stops early.
 *
 * A session ends with an outcome, told exactly once, before `close()`: {@link @drkit/core!ReadSessionBase.commit} after the
 * recovery point is committed, or {@link @drkit/core!ReadSessionBase.abandon} when the task failed or was cancelled. A source
 * that tracks changes itself (an agent's dirty-block bitmap, a change id it must acknowledge) advances on commit
 * and keeps its tracking on abandon, so the next backup reads those blocks again. A session closed with neither
 * (a consumer that only looked) is abandoned.
 */
export interface ReadSessionBase extends AsyncDisposable {
  /** Capacity of the disk at the snapshot, in bytes; may differ from the base's (a disk that grew or shrank). */
  readonly capacityBytes: number;
  /** Whether the change set is exact, a superset, or a full read and why. */
  readonly validity: ChangeSetValidity;
  /**
   * Reads arbitrary bytes of the snapshot, when the source allows cheap random access. The engine uses it to
   * complete chunks that the change set covers only partly; without it, it takes the rest from the parent point.
   * Valid until the session is closed (also after the changes were read). Resolves with exactly `extent.length`
   * bytes: a longer or shorter answer fails the disk task with a `SourceProtocolError` (nothing is committed),
   * never padded or cut.
   */
  readRange?(extent: Extent, options?: CallOptions): Promise<Uint8Array>;
  /** The checkpoint the next backup of this disk should use as its base. Valid once every change was read. */
  checkpoint(): Checkpoint;
  /**
   * Told once the recovery point holding this session's data is committed (durable in the repository). A failure
   * here does not undo the point: the task still succeeds, reporting the error as `sourceCommitError`; the
   * source should then read those blocks again next time.
   */
  commit(point: CommittedPoint, options?: CallOptions): Promise<void>;
  /** Told once when the task ends without a point. Must not advance the source's change tracking. */
  abandon(reason: AbandonReason, options?: CallOptions): Promise<void>;
  /** Releases the session's resources. Idempotent. */
  close(): Promise<void>;
}
