#!/usr/bin/env bash
# Builds the web client into OUTDIR (CMake calls it with its build tree's
# web/). Installs the npm toolchain first (npm ci, from package-lock.json)
# when node_modules is missing or older than the lock file.
set -euo pipefail
outdir=${1:?usage: web/build.sh OUTDIR}
cd "$(dirname "$0")"
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "web: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
exec node build.mjs --outdir "$outdir"
