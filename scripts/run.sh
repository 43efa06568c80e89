#!/usr/bin/env bash
# `make run`: (re)starts a local 3-node cluster on 127.0.0.1 with dev TLS
# certificates (scripts/cluster.sh), shows a put and a get at each consistency
# level, and leaves the cluster running. Stop it with `scripts/cluster.sh stop`.
#   TRINE_RUN_PORT  first client port (default 7001; admin HTTP at +100)
set -euo pipefail
cd "$(dirname "$0")/.."
port=${TRINE_RUN_PORT:-7001}
if [ -f run/cluster/cluster.env ]; then scripts/cluster.sh stop >/dev/null 2>&1 || true; fi
scripts/cluster.sh start -n 3 --port "$port"
eval "$(scripts/cluster.sh env)" # start waited until every partition is led and settled

echo
echo "== A tour (every command below works in your shell after the eval line)"
run() { echo "\$ $*"; "$@" || true; }
key="greeting:$(date +%H%M%S)" # fresh each run: the cluster keeps its data across runs
run bin/trine --consistency fast put "$key" "hello, fast"
run bin/trine --consistency fast get "$key"
run bin/trine --consistency strong put "$key" "hello, strong"
run bin/trine --consistency strong get "$key"
run bin/trine --consistency all put "$key" "hello, all"
run bin/trine cas "$key" 3 "swapped"
run bin/trine scan greeting:
run bin/trine cluster status
cat <<EOT

The cluster keeps running. Next:
  eval "\$(scripts/cluster.sh env)"          # point bin/trine at it
  scripts/cluster.sh kill 1; bin/trine put k v   # strong writes survive a kill -9
  scripts/cluster.sh restart 1                   # it rejoins and catches up
  curl -s localhost:$((port + 100))/metrics | head   # Prometheus metrics (also /status, /health)
  scripts/cluster.sh stop                        # stop everything (data stays in run/cluster)
EOT
