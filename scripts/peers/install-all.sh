#!/bin/sh
# Installs the Debian packages of every real peer the integration tests start (Ceph, OpenStack, ...).
# Each peer script in this folder answers `install`; this runs them all. Needs root and Debian's mirrors.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
for script in "$here"/*.sh; do
  case "$(basename "$script")" in install-all.sh) continue ;; esac
  sh "$script" install
done
