#!/usr/bin/env bash
# short.sh - the fault run of `make test` (tests/run.sh runs tests/fault/short*.sh).
#
# A seeded 3-node run of about 45 s of workload under mixed faults: every kind
# (kill, pause, partition, loss, clock, fsync) at least once, >= 5,000
# operations, the whole script well under 3 minutes on 2 cores. It builds the
# workload driver and the checker first (make fault-tools), then runs
# the checker's self-tests (go test) and tests/fault/harness.py; the harness's summary line is the last line and its
# exit status is the verdict. Environment: BUILD, BINDIR (tests/run.sh sets
# them), TRINE_SEED or SEED (default: a fresh seed, printed), FAULT_SECONDS.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build/rel}
BINDIR=${BINDIR:-bin}
export BUILD BINDIR
san=0
[ "$BUILD" = build/san ] && san=1
make --no-print-directory SAN=$san fault-tools >/dev/null
# The checker's own tests first: it must catch the anomalies it claims to.
(cd tests/fault/checker && GOTOOLCHAIN=local "${GO:-$(command -v go || echo /usr/local/go/bin/go)}" test -count=1 ./...)
seed=${SEED:-${TRINE_SEED:-}}
exec tests/fault/harness.py --nodes 3 --seconds "${FAULT_SECONDS:-45}" --min-ops 5000 \
    --require kill,pause,partition,loss,clock,fsync \
    --faults kill,pause,partition,loss,clock,fsync --mode mixed ${seed:+--seed "$seed"}
