// Checks once, before the NBD integration tests, that the real NBD servers from Debian are installed (nbdkit with
// its memory and file plugins, qemu-nbd; nbdinfo as the reference client, openssl for the TLS test) and records
// their versions. When one is missing, every test of the
// project fails with the reason (never a silent skip): install them with `sh scripts/peers/nbd.sh install`.
// Each test file starts the servers it needs itself (nbd-servers.ts).
import { execFile } from 'node:child_process';
import type { TestProject } from 'vitest/node';
import type { ProvidedNbdPeers } from './nbd-servers.js';

function version(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, (error, stdout) => {
      if (error) reject(new Error(`${command} ${args.join(' ')}: ${error.message}`));
      else resolve(stdout.split('\n')[0]!.trim());
    });
  });
}

export default async function setup(project: TestProject): Promise<void> {
  let provided: ProvidedNbdPeers;
  try {
    const [nbdkit, qemuNbd, nbdinfo] = await Promise.all([
      version('nbdkit', ['--version']),
      version('qemu-nbd', ['--version']),
      version('nbdinfo', ['--version']),
      version('nbdkit', ['memory', '--dump-plugin']),
      version('nbdkit', ['file', '--dump-plugin']),
      version('openssl', ['version']),
    ]);
    provided = { ok: true, versions: { nbdkit, qemuNbd, nbdinfo } };
  } catch (error) {
    provided = {
      ok: false,
      reason:
        'the NBD servers the tests need are missing (install them with `sh scripts/peers/nbd.sh install`): ' +
        (error instanceof Error ? error.message : String(error)),
    };
  }
  project.provide('nbdPeers', provided);
}
