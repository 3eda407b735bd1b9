// Shared bits of the vcsim tests: a platform on a launcher, a logger that keeps every line.
import type { Logger } from '@drkit/core';
import { createVmwarePlatform, type VmwarePlatform, type VmwarePlatformOptions } from '../../src/index.js';
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
