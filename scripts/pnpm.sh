#!/bin/sh
# Runs the pinned pnpm (installed on demand through npx) after installing the locked dependencies.
# Only Node 20 and npm are needed on the machine.
set -eu
cd "$(dirname "$0")/.."
PNPM_VERSION=10.34.9
npx -y "pnpm@${PNPM_VERSION}" install --frozen-lockfile --reporter=append-only
exec npx -y "pnpm@${PNPM_VERSION}" "$@"
