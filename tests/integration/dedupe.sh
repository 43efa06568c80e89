#!/usr/bin/env bash
# dedupe.sh - a write re-sent with the same (client_id, seq) is applied once:
# the same put_req frame re-sent to the primary, through another node,
# pipelined, in fast mode, with a different value, and after the primary was
# killed (lib/dedupe.py has the steps). Finally the restarted node must read
# the same version as the others.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

cl_start 3
settle "leaders settle after start"
python3 tests/integration/lib/dedupe.py "$CL_DIR" "$CL_PORT" "$CL_N" >"$CL_DIR/dedupe.out" 2>&1 ||
    {
        cat "$CL_DIR/dedupe.out"
        fail "a re-sent write was applied more than once (or not answered)"
    }
grep '^dedupe:' "$CL_DIR/dedupe.out"
node=$(sed -n 's/^{"restarted": \([0-9]*\)}$/\1/p' "$CL_DIR/dedupe.out")
wait_for 20 "node $node healthy after restart" $TT http "$(node_http "$node")" /health
settle "leaders settle after restarting node $node"
ports=()
for i in $(seq 1 "$CL_N"); do ports+=("$(node_http "$i")"); done
$TT hash-converged 30 "${ports[@]}" || fail "replicas disagree after the retries"
