import { hostname } from 'node:os';
import { InvalidArgumentError, NotFoundError } from '../errors/drkit-error.js';
import { resolveSyncProxySettings } from '../proxy/sync-proxy-settings.js';
import type { Repository } from '../repository/types.js';
import type {
  DiskTask,
  DiskTaskResult,
  Logger,
  Platform,
  RunDiskTaskOptions,
  SyncProxy,
  SyncProxySettings,
} from '../spec/v2/index.js';
import { ChunkWorkerPool } from '../workers/chunk-worker-pool.js';
import { runDiskTask } from './disk-task-runner.js';
import { resolveStallTimeoutSeconds } from './stall-watchdog.js';

/** Options of {@link createInProcessSyncProxy}. */
export interface InProcessSyncProxyOptions {
  /** Default `in-process`. */
  readonly id?: string;
  /** Default: this machine's host name. */
  readonly name?: string;
  readonly settings?: Partial<SyncProxySettings>;
  /** The platforms whose tasks this proxy can run. */
  readonly platforms: readonly Platform[];
  /** Where chunks and points go. */
  readonly repository: Repository;
  /**
   * Worker threads for hashing and compression. Leave it out: the proxy then starts a pool of its own on its
   * first task (one thread per core, at most 8) and stops it on `close()`. A pool passed in (a
   * `ChunkWorkerPool` of `@drkit/core/internal`, for drkit's own tests) is shared and left running.
   *
   * @internal
   */
  readonly workers?: ChunkWorkerPool;
  /**
   * Seconds a disk task may go without progress before it fails with a {@link TaskStalledError}; a `run` call's
   * `stallTimeoutSeconds` overrides it. Default 600.
   */
  readonly stallTimeoutSeconds?: number;
  /** Where the proxy's tasks write what they do, unless a `run` call passes its own `logger`. Default: nothing. */
  readonly logger?: Logger;
}

/** A Sync Proxy that runs disk tasks in this process. */
export interface InProcessSyncProxy extends SyncProxy {
  /**
   * Stops the proxy's worker threads (it owns them unless a pool was passed in) and resolves when they have
   * exited. Tasks still running fail. A `run` after `close()` rejects with an {@link InvalidArgumentError}.
   */
  close(): Promise<void>;
}

/**
 * The Sync Proxy the engine uses by default: runs disk tasks in the current process with a pool of worker
 * threads for hashing and compression, which it starts on its first task and stops on `close()`. An embedder
 * registers several of them (each with its own `maxMountedDisks`) in a {@link SyncProxyRegistry} to spread
 * tasks; call `close()` on each when done.
 *
 * @throws {@link InvalidSettingsError} for invalid settings or `stallTimeoutSeconds`.
 * @example
 * ```ts
 * const proxy = createInProcessSyncProxy({ platforms: [platform], repository, settings: { maxMountedDisks: 8 } });
 * ```
 */
export function createInProcessSyncProxy(options: InProcessSyncProxyOptions): InProcessSyncProxy {
  const settings = resolveSyncProxySettings(options.settings);
  const stallTimeoutSeconds = resolveStallTimeoutSeconds(options.stallTimeoutSeconds, 'stallTimeoutSeconds');
  const platforms = new Map(options.platforms.map((p) => [p.id, p]));
  let pool = options.workers;
  const ownsPool = pool === undefined;
  let closed = false;
  const id = options.id ?? 'in-process';
  return {
    id,
    name: options.name ?? hostname(),
    settings,
    async run(task: DiskTask, runOptions: RunDiskTaskOptions = {}): Promise<DiskTaskResult> {
      const platform = platforms.get(task.platformId);
      if (closed) throw new InvalidArgumentError(`Sync Proxy ${id} is closed: create a new one`);
      if (!platform) throw new NotFoundError(`this Sync Proxy does not know platform ${task.platformId}`);
      pool ??= new ChunkWorkerPool();
      return runDiskTask(task, {
        platform,
        repository: options.repository,
        pool,
        signal: runOptions.signal,
        onProgress: runOptions.onProgress,
        stallTimeoutSeconds: runOptions.stallTimeoutSeconds ?? stallTimeoutSeconds,
        // The proxy's "HTTP Communication Timeout" bounds every request of the task to its source.
        requestTimeoutSeconds: settings.httpTimeoutSeconds,
        ...((runOptions.logger ?? options.logger) === undefined
          ? {}
          : { logger: runOptions.logger ?? options.logger }),
      });
    },
    async close() {
      closed = true;
      const owned = ownsPool ? pool : undefined;
      pool = undefined;
      await owned?.close();
    },
  };
}
