#!/usr/bin/env bash
# partitions_mismatch.sh - the partition count is fixed at cluster creation.
#
# 1. Node 3 of a 64-partition cluster, restarted on its data dir with
#    --partitions 32, must refuse to start: exit 1 within seconds, a message on
#    stderr (and in its log) naming both counts and why, and its data dir
#    untouched - restarted with the right flags it serves its old data.
# 2. A node with an EMPTY data dir and --partitions 32 does start, but its
#    peers refuse it (their log says why, without flooding it), its Raft
#    messages never reach theirs (every partition keeps one leader) and the
#    cluster keeps serving.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

cl_start 3
settle "leaders settle after start"
cli put pm-key before-restart >/dev/null || fail "put before the restart"

members=$(seq 1 3 | while read -r i; do echo "$i=$(node_ep "$i")"; done | paste -sd,)
trined3() { # DATA_DIR [flags...]: node 3's command line, as cluster.sh builds it
    local data=$1
    shift
    exec "$BINDIR/trined" --id 3 --listen "$(node_ep 3)" --http "127.0.0.1:$(node_http 3)" \
        --data-dir "$data" --initial-cluster "$members" --tls-cert "$CL_CERTS/node-3.pem" \
        --tls-key "$CL_CERTS/node-3.key" --tls-ca "$CL_CERTS/ca.pem" "$@"
}

# ---- 1. restart on the same data dir with another count -----------------------------------
kill -TERM "$(node_pid 3)"
for _ in $(seq 1 100); do node_alive 3 || break; sleep 0.1; done
node_alive 3 && fail "node 3 did not stop on SIGTERM within 10 s"
meta_before=$(cat "$CL_DIR/node-3/data/node.meta")
t0=$(now_ms)
trined3 "$CL_DIR/node-3/data" --partitions 32 >"$CL_DIR/mismatch.out" 2>"$CL_DIR/mismatch.err" &
mpid=$!
for _ in $(seq 1 600); do kill -0 $mpid 2>/dev/null || break; sleep 0.1; done
if kill -0 $mpid 2>/dev/null; then
    kill -KILL $mpid
    fail "trined with --partitions 32 kept running (no refusal within 60 s)"
fi
rc=0
wait $mpid || rc=$?
took=$(($(now_ms) - t0))
say "trined --partitions 32 on a 64-partition data dir: exit $rc after $took ms: $(cat "$CL_DIR/mismatch.err")"
[ $rc -eq 1 ] || fail "trined with --partitions 32 exited $rc, want 1"
for want in "refusing to start" "64-partition" "32 partitions" "fixed at cluster creation"; do
    grep -q -- "$want" "$CL_DIR/mismatch.err" || fail "the refusal does not say '$want'"
done
[ "$(cat "$CL_DIR/node-3/data/node.meta")" = "$meta_before" ] || fail "node.meta changed"
node_restart 3
wait_for 20 "node 3 healthy after the right restart" $TT http "$(node_http 3)" /health
settle "leaders settle"
r=$($TT get "$(node_ep 3)" "$CL_CERTS" pm-key fast)
grep -q '"value": "before-restart"' <<<"$r" || fail "node 3 lost its data: $r"
say "node 3 restarted with 64 partitions serves its data: $r"

# ---- 2. an empty data dir with another count: peers refuse the node -----------------------
node_kill 3
mkdir -p "$CL_DIR/node-3b"
trined3 "$CL_DIR/node-3b" --partitions 32 >"$CL_DIR/node-3b/trined.log" 2>&1 &
echo $! >"$CL_DIR/node-3/pid" # so the cleanup stops it
refused() { grep -q "runs with 32 partitions, this node with 64" "$(node_log 1)" "$(node_log 2)"; }
wait_for 20 "peers refusing the 32-partition node" refused
say "peers: $(grep -h "runs with 32 partitions" "$(node_log 1)" "$(node_log 2)" | head -n 1)"
settle "nodes 1 and 2 lead every partition" 1 2
cli --timeout 20000 put pm-key2 during >/dev/null ||
    fail "the cluster stopped serving next to the foreign node"
v=$(cli --timeout 20000 get pm-key2 2>/dev/null) || fail "get next to the foreign node"
[ "$v" = during ] || fail "get next to the foreign node returned '$v'"
say "the two 64-partition nodes keep serving"
# The foreign node redials all the time: its refusals are logged, but not each time.
n=$(grep -c "runs with 32 partitions" "$(node_log 1)")
say "node 1 logged $n refusals"
[ "$n" -le 5 ] || fail "node 1 logged the refusal $n times (a flood)"
