// Build step of a package with an N-API addon (@drkit/core's zstd codec, @drkit/provider-agent's lseek helper),
// run from the package's folder: compiles the addon with prebuildify into prebuilds/<platform>-<arch>/, where
// node-gyp-build finds it at run time. N-API, so one binary serves every Node.js version on that platform.
//
//   node ../../scripts/prebuild-addon.mjs --name @drkit/core --gyp-dir native --sources native/zstd.c,native/binding.gyp
//     [--requires zstd-napi/package.json] [--without "what the package does without it"] [--force]
//
// The step is skipped while the binary is newer than the sources (`--force` builds anyway). When it cannot build
// (no compiler, no Node.js headers), it says so and exits 0: both packages work without their addon (see their
// READMEs). It never downloads anything: node-gyp gets the headers of the running Node.js (npm_config_nodedir).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { arch, platform } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const { values: options } = parseArgs({
  options: {
    name: { type: 'string' },
    'gyp-dir': { type: 'string', default: '.' },
    sources: { type: 'string' },
    requires: { type: 'string' },
    without: { type: 'string', default: 'the package uses its fallback' },
    force: { type: 'boolean', default: false },
  },
});
if (!options.name || !options.sources) {
  throw new Error('prebuild-addon.mjs needs --name and --sources (see the comment at its top)');
}
const root = process.cwd();
const label = options.name;
const sources = options.sources.split(',').map((file) => join(root, file));
const builds = join(root, 'prebuilds', `${platform()}-${arch()}`);
const force = options.force;

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
    `${label}: the addon was not built for ${platform()}-${arch()} (${reason}). ` +
      (stale ? `The older ${relative(root, stale.path)} stays in place.` : `Without it ${options.without}.`),
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
    console.log(`${label}: ${relative(root, current.path)} is up to date`);
    return;
  }
  const nodedir = nodeHeaders();
  if (!nodedir) {
    warn(`no Node.js headers: set npm_config_nodedir to a folder with include/node/node_api.h`);
    return;
  }
  // Resolved from the package, whose devDependencies these are.
  const requireHere = createRequire(join(root, 'package.json'));
  let prebuildify;
  try {
    prebuildify = requireHere.resolve('prebuildify/bin.js');
    if (options.requires) requireHere.resolve(options.requires); // e.g. C sources the binding.gyp compiles
  } catch (cause) {
    warn(`a devDependency is missing: ${cause.message.split('\n')[0]}`);
    return;
  }
  const started = performance.now();
  // From the folder of binding.gyp (core keeps it in native/: see there why) into the package's prebuilds/.
  const result = spawnSync(
    process.execPath,
    [
      prebuildify,
      '--napi',
      '--strip',
      '--tag-libc',
      '--cwd',
      options['gyp-dir'],
      '--out',
      '.',
      '--name',
      label,
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
  const version = typeof addon.version === 'string' ? ` (${addon.version})` : '';
  console.log(`${label}: built ${relative(root, built.path)}${version} in ${seconds} s`);
}

build();
