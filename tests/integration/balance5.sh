#!/usr/bin/env bash
# balance5.sh - placement and leadership are balanced on 5 nodes.
#
# With P=64 partitions and 3 replicas each: every node hosts about 3/5 of the
# partitions (within 15 %; the ring's 64 vnodes per member give about
# +-12 %), every partition has 3 replicas, one leader all of them name, that
# leader is the partition's preferred primary, and each node leads 64/5 +- 1
# (12 or 13) partitions - polled for up to 15 s after start. Both views are
# checked and must agree: each node's /status and `trine cluster status -o json`.
# Then the node leading the most partitions is killed (-9) and restarted:
# within 15 s of its return leadership must be balanced again (moved back to
# the preferred primaries).
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

P=64
cl_start 5 --partitions $P

# balanced_within SECONDS WHAT: polls tt.py balance; fails with its last summary.
balanced_within() {
    local secs=$1 what=$2 end=$(($(date +%s) + $1)) out n=0
    while [ $n -lt $((secs * 4)) ]; do
        if out=$($TT balance $P 3 $(all_http) 2>&1); then
            say "$what: $out"
            return 0
        fi
        [ "$(date +%s)" -ge $end ] && break
        sleep 0.25
        n=$((n + 1))
    done
    fail "$what: not balanced within ${secs}s: $out"
}

balanced_within 15 "after start"

# The CLI's view (one node's scatter over all) must match the nodes' own.
cs=$(cli -o json cluster status) || fail "trine cluster status: $cs"
view=$(python3 -c '
import json, sys
m = json.loads(sys.argv[1])["members"]
print(" ".join("%d:%d" % (x["node_id"], x["partitions"]) for x in m), "/",
      " ".join("%d:%d" % (x["node_id"], x["primaries"]) for x in m),
      "/", sum(1 for x in m if x["healthy"]))' "$cs")
mine=$($TT balance $P 3 $(all_http) | sed 's/^hosted \(.*\) leads \(.*\)$/\1 \/ \2 \/ 5/')
say "cluster status: hosted / primaries / healthy = $view"
[ "$view" = "$mine" ] || fail "trine cluster status ($view) disagrees with /status ($mine)"

victim=$(top_leader)
node_kill "$victim"
say "node $victim killed"
survivors=()
for i in $(seq 1 "$CL_N"); do [ "$i" = "$victim" ] || survivors+=("$i"); done
settle "leaders elected for node $victim's partitions" "${survivors[@]}"
say "survivors lead: $($TT roles $(for i in "${survivors[@]}"; do node_http "$i"; done) |
    awk '{printf "%s:%s ", $1, $2}')"
node_restart "$victim"
wait_for 20 "node $victim healthy after restart" $TT http "$(node_http "$victim")" /health
balanced_within 15 "after node $victim came back"
