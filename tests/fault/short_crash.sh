#!/usr/bin/env bash
# short_crash.sh - the WAL crash matrix as part of `make test` (tests/run.sh runs
# tests/fault/short*.sh): builds the fault-point flavour of trined (build/fp)
# and the fault tools, then kills or fails a node at every step of the write
# path (tests/fault/crash_matrix.py, about 90 s). Exit 0 iff every case passed.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build/rel}
export BUILD
san=0
[ "$BUILD" = build/san ] && san=1
make --no-print-directory SAN=$san fault-tools >/dev/null
make --no-print-directory fault-points >/dev/null
exec tests/fault/crash_matrix.py ${SEED:+--seed "$SEED"}
