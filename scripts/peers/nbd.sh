#!/bin/sh
# Real NBD servers for the NBD client's integration tests (packages/provider-vmware, project
# `provider-vmware:nbd`): nbdkit (file, memory and pattern plugins; log, delay, error and blocksize-policy
# filters) and qemu-nbd from Debian, with libnbd's nbdinfo and nbdcopy as reference clients and openssl for the
# TLS test's certificates. The tests start and stop the servers themselves (on Unix sockets in temp dirs or on
# 127.0.0.1, stopped by PID); this script only installs them.
#
#   sh scripts/peers/nbd.sh install     installs the Debian packages that are missing (needs root)
#   sh scripts/peers/nbd.sh versions    prints the versions found
set -eu

packages="nbdkit qemu-utils libnbd-bin openssl"

usage() {
  echo "usage: $0 install | versions" >&2
  exit 64
}

log() {
  echo "nbd.sh: $*" >&2
}

fail() {
  echo "nbd.sh: error: $*" >&2
  exit 1
}

installed() {
  command -v nbdkit >/dev/null 2>&1 && command -v qemu-nbd >/dev/null 2>&1 &&
    command -v nbdinfo >/dev/null 2>&1 && command -v nbdcopy >/dev/null 2>&1 &&
    command -v openssl >/dev/null 2>&1 &&
    nbdkit file --dump-plugin >/dev/null 2>&1 && nbdkit memory --dump-plugin >/dev/null 2>&1
}

versions() {
  echo "nbdkit: $(nbdkit --version)"
  echo "qemu-nbd: $(qemu-nbd --version | head -n 1)"
  echo "nbdinfo: $(nbdinfo --version | head -n 1)"
  echo "nbdcopy: $(nbdcopy --version | head -n 1)"
}

install_packages() {
  if installed; then
    log "NBD servers already installed ($(nbdkit --version), $(qemu-nbd --version | head -n 1 | cut -d' ' -f1-2))"
    return 0
  fi
  [ "$(id -u)" = 0 ] || fail "installing the NBD servers needs root (apt-get): $packages"
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends $packages >&2 ||
    {
      apt-get -o DPkg::Lock::Timeout=600 update >&2
      # shellcheck disable=SC2086
      apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends $packages >&2
    }
  installed || fail "the packages installed, but nbdkit's file and memory plugins or a tool is still missing"
}

[ $# -ge 1 ] || usage
case "$1" in
  install) install_packages ;;
  versions) versions ;;
  *) usage ;;
esac
