#!/bin/sh
# The second pass of `npm test`: every test project that needs no peer (unit tests, the local end-to-end tests,
# the examples) again on the oldest supported Node.js line. The main pass runs everything on the newest line.
set -eu
cd "$(dirname "$0")/.."
: "${DRKIT_OLDEST_NODE:?is not set: run this through scripts/pnpm.sh (npm test), which installs that Node.js}"
echo "tests again on Node.js $("$DRKIT_OLDEST_NODE" --version), the oldest supported line: every project without a peer"
PATH="$(dirname "$DRKIT_OLDEST_NODE"):$PATH"
export PATH
exec node node_modules/vitest/vitest.mjs run --project '!*:*' --project '!packaging'
