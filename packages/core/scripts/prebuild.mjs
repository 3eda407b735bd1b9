// Build step of @drkit/core: compiles the zstd addon (native/zstd.c and zstd's C sources, native/binding.gyp)
// with prebuildify into prebuilds/<platform>-<arch>/, where node-gyp-build finds it at run time. N-API, so one
// binary serves every Node.js version on that platform.
//
// Compiling zstd takes a while, so the step is skipped while the binary is newer than the sources (`--force`
// builds anyway). When it cannot build (no compiler, no Node.js headers), it says so and exits 0: the package
// still works, its chunk worker then uses Node's built-in zstd (the same repository format, more memory).
// It never downloads anything: node-gyp gets the headers of the running Node.js (npm_config_nodedir).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { arch, platform } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const sources = ['native/zstd.c', 'native/binding.gyp'].map((file) => join(root, file));
const builds = join(root, 'prebuilds', `${platform()}-${arch()}`);
const force = process.argv.includes('--force');

function newestSource() {
  return Math.max(...sources.map((file) => statSync(file).mtimeMs));
}

/** The prebuilt binaries of this platform, newest first. */
function binaries() {
  if (!existsSync(builds)) return [];
  return readdirSync(builds)
    .filter((name) => name.endsWith('.node'))
    .map((name) => ({ path: join(builds, name), mtimeMs: statSync(join(builds, name)).mtimeMs }))
    .sort((a, b) => b.mtimeMs - a.mtimeMs);
}

function warn(reason) {
  const stale = binaries()[0];
  console.warn(
    `@drkit/core: the zstd addon was not built for ${platform()}-${arch()} (${reason}). ` +
      (stale
        ? `The older ${relative(root, stale.path)} stays in place.`
        : "The chunk worker will use Node's built-in zstd: the same repository format, more memory per worker."),
  );
}

/** The headers node-gyp builds against: npm_config_nodedir, or those beside the running Node.js. */
function nodeHeaders() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const beside = resolve(dirname(process.execPath), '..');
  return existsSync(join(beside, 'include', 'node', 'node_api.h')) ? beside : undefined;
}

function build() {
  const current = binaries()[0];
  if (!force && current && current.mtimeMs >= newestSource()) {
    console.log(`@drkit/core: ${relative(root, current.path)} is up to date`);
    return;
  }
  const nodedir = nodeHeaders();
  if (!nodedir) {
    warn(`no Node.js headers: set npm_config_nodedir to a folder with include/node/node_api.h`);
    return;
  }
  const requireHere = createRequire(import.meta.url);
  let prebuildify;
  try {
    prebuildify = requireHere.resolve('prebuildify/bin.js');
    requireHere.resolve('zstd-napi/package.json'); // zstd's C sources
  } catch (cause) {
    warn(`a devDependency is missing: ${cause.message.split('\n')[0]}`);
    return;
  }
  const started = performance.now();
  // From native/, where binding.gyp is (see there why not at the package root), into the package's prebuilds/.
  const result = spawnSync(
    process.execPath,
    [
      prebuildify,
      '--napi',
      '--strip',
      '--tag-libc',
      '--cwd',
      'native',
      '--out',
      '.',
      '--name',
      '@drkit/core',
    ],
    { cwd: root, stdio: 'inherit', env: { ...process.env, npm_config_nodedir: nodedir } },
  );
  if (result.error || result.status !== 0) {
    warn(
      result.error
        ? result.error.message
        : `prebuildify exited with ${result.status ?? result.signal}; node-gyp needs python3, make and a C compiler`,
    );
    return;
  }
  const built = binaries()[0];
  if (!built) {
    warn('prebuildify wrote no binary');
    return;
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  let addon;
  try {
    addon = requireHere(built.path); // linked with -z now: an unresolved symbol fails here, not on first use
  } catch (cause) {
    warn(`${relative(root, built.path)} does not load: ${cause.message.split('\n')[0]}`);
    return;
  }
  console.log(`@drkit/core: built ${relative(root, built.path)} (zstd ${addon.version}) in ${seconds} s`);
}

build();
