#!/bin/sh
# govmomi's vCenter simulator (vcsim) for drkit's VMware integration tests, built offline from Debian's govmomi
# source with the project's own launcher (scripts/peers/vcsim/, see its README: it adds QueryChangedDiskAreas,
# PropertyCollector paging and a read-only user).
#
#   sh scripts/peers/vcsim.sh install   installs the Debian packages (needs root) and builds the launcher
#   sh scripts/peers/vcsim.sh build     builds the launcher unless the cached binary is up to date; prints its path
#
# The binary is cached under .cache/vcsim/<key>/drkit-vcsim, the key a hash of the launcher's sources, the Go
# version and the govmomi package version: a change to any of them builds anew, otherwise nothing is rebuilt.
# Tests start one launcher per test file (`drkit-vcsim -mode vpx|esx`, 127.0.0.1, port 0, its own TMPDIR) and
# stop it by PID; see packages/provider-vmware/test/integration/vcsim-launcher.ts.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
src=$here/vcsim
GOVMOMI=/usr/share/gocode/src/github.com/vmware/govmomi

usage() {
  echo "usage: $0 install | build" >&2
  exit 64
}

log() {
  echo "vcsim.sh: $*" >&2
}

fail() {
  echo "vcsim.sh: error: $*" >&2
  exit 1
}

install_packages() {
  if command -v go >/dev/null 2>&1 && [ -d "$GOVMOMI/simulator" ]; then
    log "golang-go and govmomi already installed ($(go version | cut -d' ' -f3), govmomi $(govmomi_version))"
    return 0
  fi
  [ "$(id -u)" = 0 ] || fail "installing golang-go and golang-github-vmware-govmomi-dev needs root (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends golang-go golang-github-vmware-govmomi-dev >&2 ||
    {
      apt-get -o DPkg::Lock::Timeout=600 update >&2
      apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends golang-go golang-github-vmware-govmomi-dev >&2
    }
}

govmomi_version() {
  dpkg-query -W -f '${Version}' golang-github-vmware-govmomi-dev 2>/dev/null || echo unknown
}

cache_key() {
  {
    for f in "$src"/*.go; do
      printf '%s\n' "$(basename "$f")"
      cat "$f"
    done
    go version
    govmomi_version
  } | sha256sum | cut -c1-16
}

build() {
  command -v go >/dev/null 2>&1 || fail "go not found: run 'sh scripts/peers/vcsim.sh install' first"
  [ -d "$GOVMOMI/simulator" ] || fail "$GOVMOMI not found: run 'sh scripts/peers/vcsim.sh install' first"
  key=$(cache_key)
  dir=$repo/.cache/vcsim/$key
  binary=$dir/drkit-vcsim
  if [ -x "$binary" ]; then
    log "launcher up to date ($binary)"
    echo "$binary"
    return 0
  fi
  mkdir -p "$repo/.cache/vcsim"
  tmp=$(mktemp -d "$repo/.cache/vcsim/.building.XXXXXX")
  started=$(date +%s)
  log "building the launcher (Go $(go version | cut -d' ' -f3), govmomi $(govmomi_version), offline, GOPATH mode)"
  # GOPATH mode against Debian's source tree: no module download, no network. The build cache stays in the
  # repository's .cache unless GOCACHE says otherwise (a CI machine may have no HOME).
  (cd "$src" && GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off \
    GOCACHE="${GOCACHE:-$repo/.cache/go-build}" go build -o "$tmp/drkit-vcsim" .) >&2 ||
    {
      rm -rf "$tmp"
      fail "go build of scripts/peers/vcsim failed"
    }
  rm -rf "$dir"
  mv "$tmp" "$dir"
  log "built $binary in $(($(date +%s) - started)) s"
  # Older builds are of no use: keep only this one.
  for old in "$repo/.cache/vcsim"/*; do
    [ "$old" = "$dir" ] || rm -rf "$old"
  done
  echo "$binary"
}

[ $# -ge 1 ] || usage
case "$1" in
  install)
    install_packages
    build >/dev/null
    ;;
  build) build ;;
  *) usage ;;
esac
