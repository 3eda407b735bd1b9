// The packaging check a publisher runs: pack @drkit/core, @drkit/provider-agent and @drkit/cli as they would be
// published, install the tarballs into an empty npm project on the oldest and the newest supported Node.js line
// with no compiler on PATH, then run the repository README's embedding example and `npx drkit backup/restore`,
// and compare the restored bytes with the disk. Nothing may be compiled and no addon may be missing.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repositoryRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const PACKAGES = ['core', 'provider-agent', 'cli'] as const;
const MiB = 1024 * 1024;

/** Commands that compile: none of them may be reachable from the PATH the installs run with. */
const COMPILERS =
  /^(cc|c\+\+|gcc|g\+\+|cpp|clang|clang\+\+|make|gmake|ld|(.+-)?(gcc|g\+\+|cpp|cc)(-\d+)?|clang(\+\+)?-\d+)$/;

interface Run {
  readonly stdout: string;
  readonly stderr: string;
  readonly seconds: number;
}

function run(command: string, args: readonly string[], options: { cwd: string; env: NodeJS.ProcessEnv }) {
  const started = process.hrtime.bigint();
  return new Promise<Run>((resolve, reject) => {
    execFile(command, args, { ...options, maxBuffer: 64 * MiB }, (error, stdout, stderr) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (error)
        reject(new Error(`${command} ${args.join(' ')} failed: ${error.message}\n${stderr}\n${stdout}`));
      else resolve({ stdout, stderr, seconds });
    });
  });
}

/** A folder of links to every command on this machine's PATH except compilers and make. */
async function pathWithoutCompilers(into: string): Promise<string> {
  await mkdir(into, { recursive: true });
  const seen = new Set<string>();
  for (const directory of (process.env.PATH ?? '').split(delimiter)) {
    if (!directory || directory.includes('node_modules') || directory.includes('.cache/toolchain')) continue;
    let names: string[];
    try {
      names = await readdir(directory);
    } catch {
      continue;
    }
    for (const name of names) {
      if (seen.has(name) || COMPILERS.test(name) || name === 'node') continue;
      seen.add(name);
      await symlink(join(directory, name), join(into, name));
    }
  }
  return into;
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** The embedding example of the repository README, with its paths replaced by the test's own. */
async function readmeEmbeddingExample(paths: {
  repo: string;
  disk: string;
  restored: string;
}): Promise<string> {
  const readme = await readFile(join(repositoryRoot, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Embedding it'));
  const code = /```js\n([\s\S]*?)```/.exec(section)?.[1];
  if (!code) throw new Error('README.md has no ```js block under "## Embedding it"');
  for (const literal of ["'/backup/repo'", "'/dev/sdb'", "'/restore/sdb.img'"]) {
    if (!code.includes(literal)) throw new Error(`the README's embedding example no longer uses ${literal}`);
  }
  return code
    .replaceAll("'/backup/repo'", JSON.stringify(paths.repo))
    .replaceAll("'/dev/sdb'", JSON.stringify(paths.disk))
    .replaceAll("'/restore/sdb.img'", JSON.stringify(paths.restored));
}

let work: string;
let tarballs: string[];
let bareBin: string;
const timings: string[] = [];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'drkit-packaging-'));
  const packed = join(work, 'tarballs');
  await mkdir(packed);
  for (const name of PACKAGES) {
    const folder = join(repositoryRoot, 'packages', name);
    if (!existsSync(join(folder, 'dist', 'index.js'))) throw new Error(`build packages/${name} first`);
    await run('pnpm', ['pack', '--pack-destination', packed], { cwd: folder, env: process.env });
  }
  tarballs = (await readdir(packed))
    .filter((name) => name.endsWith('.tgz'))
    .map((name) => join(packed, name));
  bareBin = await pathWithoutCompilers(join(work, 'bin'));
});

afterAll(async () => {
  if (timings.length > 0) console.log(`packaging timings:\n${timings.join('\n')}`);
  if (work) await rm(work, { recursive: true, force: true });
});

const oldest = process.env.DRKIT_OLDEST_NODE;
const lines: { readonly line: number; readonly node: string | undefined }[] = [
  { line: 22, node: oldest },
  { line: 26, node: process.execPath },
];

describe('the packed packages on a machine without a compiler', () => {
  it('packs the three packages with their prebuilt addons and no build recipe for core', async () => {
    expect(tarballs).toHaveLength(PACKAGES.length);
    const listing = async (name: string) =>
      (
        await run('tar', ['-tzf', tarballs.find((path) => path.includes(name))!], {
          cwd: work,
          env: process.env,
        })
      ).stdout;
    const agent = await listing('provider-agent');
    expect(agent).toMatch(/package\/prebuilds\/linux-x64\/[^\n]+\.node\n/);
    const core = await listing('drkit-core');
    expect(core).toMatch(/package\/prebuilds\/linux-x64\/[^\n]+\.node\n/);
    // npm runs `node-gyp rebuild` for any package with a binding.gyp and no install script of its own.
    expect(core).not.toMatch(/package\/binding\.gyp\n/);
  });

  for (const { line, node } of lines) {
    it(`installs and runs on Node.js ${line}: README example and npx drkit restore byte-identical`, async () => {
      if (!node)
        throw new Error('DRKIT_OLDEST_NODE is not set: run the tests through `npm test` (scripts/pnpm.sh)');
      const project = join(work, `node-${line}`);
      await mkdir(project);
      const env: NodeJS.ProcessEnv = {
        // This machine's environment (certificate settings, proxies, HOME) without what pnpm and the workspace set.
        ...Object.fromEntries(
          Object.entries(process.env).filter(
            ([name]) => !/^(npm_|pnpm_|PNPM_|npm_config_|VITEST|NODE_OPTIONS)/i.test(name),
          ),
        ),
        PATH: [dirname(node), bareBin].join(delimiter),
        // The bootstrap machine's npm may point node-gyp at headers: an install must not need them.
        npm_config_nodedir: join(work, 'no-headers-here'),
        npm_config_update_notifier: 'false',
        npm_config_fetch_retries: '1',
      };
      const version = (await run('node', ['--version'], { cwd: project, env })).stdout.trim();
      expect(version.startsWith(`v${line}.`), `node on PATH is ${version}`).toBe(true);
      for (const compiler of ['cc', 'gcc', 'g++', 'make']) {
        await expect(run('sh', ['-c', `command -v ${compiler}`], { cwd: project, env })).rejects.toThrow();
      }

      await writeFile(join(project, 'package.json'), JSON.stringify({ private: true, type: 'module' }));
      const install = await run('npm', ['install', '--no-audit', '--no-fund', ...tarballs], {
        cwd: project,
        env,
      });
      timings.push(`  Node ${line}: npm install of the 3 tarballs ${install.seconds.toFixed(1)} s`);
      const installed = join(project, 'node_modules', '@drkit');
      // Nothing was compiled: no node-gyp output in either package.
      expect(existsSync(join(installed, 'provider-agent', 'build'))).toBe(false);
      expect(existsSync(join(installed, 'core', 'build'))).toBe(false);

      // A 48 MiB sparse disk with data at both ends and in the middle.
      const disk = join(project, 'disk.img');
      const content = new Uint8Array(48 * MiB);
      content.set(randomBytes(3 * MiB), 0);
      content.set(new TextEncoder().encode('drkit '.repeat(300_000)), 20 * MiB);
      content.set(randomBytes(MiB + 7), 47 * MiB - 7);
      await writeFile(disk, content);
      const expected = sha256(content);

      const example = join(project, 'example.mjs');
      const restoredByExample = join(project, 'restored-example.img');
      await writeFile(
        example,
        await readmeEmbeddingExample({ repo: join(project, 'repo'), disk, restored: restoredByExample }),
      );
      const embedded = await run('node', [example], { cwd: project, env });
      timings.push(
        `  Node ${line}: README embedding example (48 MiB backup + restore) ${embedded.seconds.toFixed(1)} s`,
      );
      expect(embedded.stdout).toMatch(/ succeeded\n/);
      expect(sha256(await readFile(restoredByExample))).toBe(expected);

      const cliRepo = join(project, 'cli-repo');
      const backup = await run('npx', ['drkit', 'backup', disk, '--repo', cliRepo, '--json'], {
        cwd: project,
        env,
      });
      const points = JSON.parse(
        (await run('npx', ['drkit', 'points', '--json', '--repo', cliRepo], { cwd: project, env })).stdout,
      ) as { id: string }[];
      expect(points).toHaveLength(1);
      const restoredByCli = join(project, 'restored-cli.img');
      const restore = await run(
        'npx',
        ['drkit', 'restore', points[0]!.id, restoredByCli, '--repo', cliRepo],
        {
          cwd: project,
          env,
        },
      );
      timings.push(
        `  Node ${line}: npx drkit backup ${backup.seconds.toFixed(1)} s, restore ${restore.seconds.toFixed(1)} s`,
      );
      expect(sha256(await readFile(restoredByCli))).toBe(expected);

      // Both addons came from the prebuilt binaries: no fallback warning anywhere.
      for (const output of [install, embedded, backup, restore]) {
        expect(output.stderr).not.toMatch(/DRKIT_SEEK_DATA_UNAVAILABLE|DRKIT_ZSTD_ADDON_UNAVAILABLE|gyp ERR/);
      }
      expect(embedded.stdout + embedded.stderr).not.toMatch(/no-addon/);
    });
  }
});
