// Shared bits of the vcsim tests: a platform on a launcher, a logger that keeps every line, and the setup of the
// tests through the engine (a temporary repository per test, the vcsim disk it started closed after it, the checks
// of a task's outcome and of a restored point).
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type BackupJobResult,
  createLocalFolderStore,
  type DiskTaskResult,
  type Logger,
  openRepository,
  type Repository,
} from '@drkit/core';
import { afterEach, beforeEach, expect } from 'vitest';
import { createVmwarePlatform, type VmwarePlatform, type VmwarePlatformOptions } from '../../src/index.js';
import { startVcsimDisk, type VcsimDisk, type VcsimDiskOptions } from './vcsim-disk.js';
import type { RunningVcsim } from './vcsim-launcher.js';

export function platformOn(
  vcsim: RunningVcsim,
  overrides: Partial<VmwarePlatformOptions> = {},
): VmwarePlatform {
  return createVmwarePlatform({
    id: `vcsim-${vcsim.mode}`,
    url: vcsim.url,
    username: vcsim.username,
    password: vcsim.password,
    tls: { ca: vcsim.certificate },
    ...overrides,
  });
}

export interface CapturedLine {
  readonly level: string;
  readonly fields: Readonly<Record<string, unknown>>;
  readonly message: string;
}

/** A logger that keeps what it is told, to check what is (and is not) logged. */
export function capturingLogger(): Logger & { readonly lines: CapturedLine[]; text(): string } {
  const lines: CapturedLine[] = [];
  const method = (level: string) => (fields: Readonly<Record<string, unknown>>, message: string) => {
    lines.push({ level, fields, message });
  };
  return {
    lines,
    debug: method('debug'),
    info: method('info'),
    warn: method('warn'),
    error: method('error'),
    text: () => JSON.stringify(lines),
  };
}

/** Everything an error says, its causes included. */
export function describeError(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; current !== undefined && depth < 5; depth += 1) {
    parts.push(
      current instanceof Error
        ? `${current.name}: ${current.message} ${current.stack ?? ''}`
        : String(current),
    );
    try {
      parts.push(JSON.stringify(current));
    } catch {
      // not JSON-able
    }
    current = current instanceof Error ? current.cause : undefined;
  }
  return parts.join('\n');
}

/** What {@link useEngineFixture} gives a test file. */
export interface EngineFixture {
  /** This test's temporary folder (the repository is in `repo/` under it). */
  readonly dir: string;
  readonly repository: Repository;
  /** Starts a launcher with one VM disk for this test; it is closed after the test. */
  startDisk(options?: VcsimDiskOptions): Promise<VcsimDisk>;
  /** The one task's result, or an error naming its status and everything its error says. */
  succeeded(result: BackupJobResult): DiskTaskResult;
  /** The one task's error; the job must count it failed. */
  failedWith(result: BackupJobResult): unknown;
  /** Restores a point and compares it byte for byte with what the disk held when it was read. */
  expectRestores(pointId: string, expected: Uint8Array, what?: string): Promise<void>;
}

/**
 * Before each test of the file: a temporary folder with a new repository; after it: the repository closed, the
 * disks it started closed (their launchers stopped), the folder removed.
 */
export function useEngineFixture(prefix: string): EngineFixture {
  let dir: string | undefined;
  let repository: Repository | undefined;
  const disks: VcsimDisk[] = [];
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), prefix));
    repository = await openRepository({
      store: createLocalFolderStore({ path: join(dir, 'repo') }),
      create: true,
    });
  });
  afterEach(async () => {
    await repository?.close();
    for (const disk of disks.splice(0)) await disk.close();
    if (dir) await rm(dir, { recursive: true, force: true });
    dir = undefined;
    repository = undefined;
  });
  const fixture: EngineFixture = {
    get dir() {
      if (!dir) throw new Error('the engine fixture is only there inside a test');
      return dir;
    },
    get repository() {
      if (!repository) throw new Error('the engine fixture is only there inside a test');
      return repository;
    },
    async startDisk(options) {
      const disk = await startVcsimDisk(options);
      disks.push(disk);
      return disk;
    },
    succeeded(result) {
      expect(result.tasks).toHaveLength(1);
      const [task] = result.tasks;
      if (task?.status !== 'succeeded') {
        throw new Error(
          `${task?.diskId}: ${task?.status} ${describeError((task as { error?: unknown }).error)}`,
        );
      }
      return task.result;
    },
    failedWith(result) {
      expect(result.tasks).toHaveLength(1);
      const [task] = result.tasks;
      if (task?.status !== 'failed') throw new Error(`${task?.diskId}: ${task?.status}, expected failed`);
      expect(result.failed).toBe(1);
      return task.error;
    },
    async expectRestores(pointId, expected, what = pointId) {
      const path = join(fixture.dir, `${pointId}.img`);
      await fixture.repository.restore(pointId, { path });
      const restored = await readFile(path);
      expect(restored.length, `${what}: size`).toBe(expected.length);
      if (!restored.equals(expected)) {
        let at = 0;
        while (restored[at] === expected[at]) at += 1;
        throw new Error(`${what}: the restored image differs from the disk first at byte ${at}`);
      }
      await rm(path);
    },
  };
  return fixture;
}
