// Install step of @drkit/provider-agent. The package ships its lseek addon prebuilt (prebuilds/, N-API, so one
// binary serves every Node.js version) for the platforms listed in the README. This script checks that one of
// them loads here; when none fits this platform it builds the addon from native/seek.c with node-gyp, and when
// that is impossible too (no compiler, no headers) it says so and lets the install succeed: the package still
// works, reading disks without hole detection (every byte read, a DRKIT_SEEK_DATA_UNAVAILABLE warning).
'use strict';
const { spawnSync } = require('node:child_process');
const loadAddon = require('node-gyp-build');

function loads() {
  try {
    loadAddon(__dirname);
    return true;
  } catch {
    return false;
  }
}

if (!loads()) {
  // npm and pnpm name the node-gyp they bundle; otherwise try one on PATH.
  const nodeGyp = process.env.npm_config_node_gyp;
  const build = nodeGyp
    ? spawnSync(process.execPath, [nodeGyp, 'rebuild'], { cwd: __dirname, stdio: 'inherit' })
    : spawnSync('node-gyp', ['rebuild'], {
        cwd: __dirname,
        stdio: 'inherit',
        shell: process.platform === 'win32',
      });
  if (build.status !== 0 || !loads()) {
    console.warn(
      `@drkit/provider-agent: no prebuilt lseek addon for ${process.platform}-${process.arch} and it could not be ` +
        'built here (node-gyp needs python3, make and a C compiler). Installed anyway: local disks are read ' +
        'without SEEK_DATA/SEEK_HOLE, so holes of sparse images are read as data (slower, same backups), and ' +
        'block devices are sized from /sys. Install a compiler and reinstall to get hole detection.',
    );
  }
}
