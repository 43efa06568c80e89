#!/usr/bin/env bash
# consistency.sh - the consistency levels do what docs/consistency.md says, on 3 nodes.
#
# 1. Session token: with follower F stopped (SIGSTOP) a strong put goes
#    through; a fast get carrying the put's revision as min_revision, queued
#    on F and served by F after SIGCONT, returns the new value. (The client
#    library sends reads to the primary, so this read is aimed at F directly
#    over the wire: a node that hosts the partition serves a fast get locally.)
#    The CLI path is checked too: `trine get --min-revision` with -o json.
# 2. With a node killed: `all` writes fail with UNAVAILABLE (the node answers
#    at once; the CLI exits 3 once its retries run out), while `fast` (and
#    strong) writes and reads of a key led by a live node keep working.
#    Meanwhile /metrics: well formed, every documented family present, and the primary
#    shows the dead node's follower lag (entries and seconds), back to 0 once it is back.
# 3. Forced fast-mode rollback: the two followers of primary L are killed, a
#    fast write is acknowledged by L alone, L is frozen (SIGSTOP) before it
#    can replicate, the followers restart, elect a new primary and take a
#    write over L's index; L resumes, rejoins and truncates: the rolled-back
#    entry must appear in L's rollbacks.jsonl and trine_fast_rollbacks_total.
#    (Followers are killed rather than stopped: a stopped process still has
#    L's append in its socket buffer and would take the entry on SIGCONT.)
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

cl_start 3
settle "leaders settle after start"

json_field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read())[sys.argv[1]])' "$1"; }

# ---- 1. session token on a lagging follower ------------------------------------------------
L=1
F=2
key=$($TT key-led-by "$(node_ep $L)" "$CL_CERTS" $L "sess-") || fail "no key led by node $L"
out=$($TT lagging-read $F "$(node_ep $F)" "$(node_pid $F)" "$(node_ep $L)" "$CL_CERTS" "$key") ||
    fail "session token read on lagging follower $F: $out"
say "session token: $out"
plain_val=$(json_field plain_read <<<"$out" | python3 -c 'import ast,sys; print(ast.literal_eval(sys.stdin.read())["value"])')
old_val=$(json_field old_value <<<"$out")
if [ "$plain_val" = "$old_val" ]; then
    say "session token: without the token follower $F served the old value (it lagged);" \
        "with it, the new one"
else
    say "session token: follower $F had caught up before serving the plain read"
fi
# The CLI: the put's revision from -o json, given back as --min-revision.
put_json=$(cli -o json put "$key" cli-value) || fail "cli put: $put_json"
rev=$(json_field revision <<<"$put_json")
get_json=$(cli -o json --consistency fast get "$key" --min-revision "$rev") ||
    fail "cli get --min-revision $rev: $get_json"
[ "$(json_field value <<<"$get_json")" = cli-value ] || fail "cli token read: $get_json"
say "session token via the CLI: put revision $rev, get served by node" \
    "$(json_field served_by <<<"$get_json") at applied index $(json_field applied_index <<<"$get_json")"

# ---- 2. one node down: all fails, fast works ----------------------------------------------
D=3
up=1
fkey=$($TT key-led-by "$(node_ep $up)" "$CL_CERTS" $up "fast-") || fail "no key led by node $up"
node_kill $D
say "node $D killed"
sleep 0.5
r=$($TT put "$(node_ep $up)" "$CL_CERTS" "$fkey" all-value all)
[ "$(json_field status <<<"$r")" = UNAVAILABLE ] || fail "all put with node $D down: $r"
say "all put to node $up with node $D down: $(json_field status <<<"$r"): $(json_field message <<<"$r")"
set +e
t_all=$(now_ms)
cli --timeout 5000 --consistency all put "$fkey" all-value 2>"$CL_DIR/all.err"
rc=$?
t_all=$(($(now_ms) - t_all))
set -e
[ $rc -eq 3 ] || fail "trine --consistency all put with node $D down exited $rc, want 3: $(cat "$CL_DIR/all.err")"
# The primary's refusal is final: the client does not retry it until its deadline.
[ "$t_all" -lt 1500 ] || fail "the all put took $t_all ms to fail, want < 1500 (fails at once)"
say "CLI all put: exit 3 after $t_all ms: $(cat "$CL_DIR/all.err")"
for i in 1 2 3 4 5; do
    w=$(cli -o json --consistency fast put "$fkey" "fast-$i") || fail "fast put $i with node $D down: $w"
done
# A fast ack precedes the apply even on the primary: read your write with its revision.
rev=$(json_field revision <<<"$w")
v=$(cli --consistency fast get "$fkey" --min-revision "$rev" 2>/dev/null) ||
    fail "fast get with node $D down"
[ "$v" = fast-5 ] || fail "fast get (min revision $rev) with node $D down returned '$v', want fast-5"
v=$(cli get "$fkey" 2>/dev/null) || fail "strong get with node $D down"
[ "$v" = fast-5 ] || fail "strong get with node $D down returned '$v', want fast-5"
say "fast (and strong) puts and gets work with node $D down"
# Metrics (docs/operations.md): the exposition is well formed with every documented family,
# and the primary of $fkey reports the dead follower's lag in entries and seconds.
MC="python3 tests/integration/lib/metrics_check.py"
out=$($MC format "$(node_http $up)" puts) || fail "node $up /metrics: $out"
say "metrics: node $up: $out"
out=$($MC lag "$(node_http $up)" $D 5) || fail "node $up: no follower lag for node $D: $out"
say "metrics: node $up: $out"
node_restart $D
wait_for 20 "node $D healthy after restart" $TT http "$(node_http $D)" /health
settle "leaders settle after restarting node $D"
cli --consistency all --timeout 10000 put "$fkey" all-back >/dev/null ||
    fail "all put after node $D is back"
say "all put succeeds again once node $D is back"
wait_for 20 "node $D caught up in node $up's follower lag" $MC caught-up "$(node_http $up)" $D
for i in 1 2 3; do
    out=$($MC format "$(node_http $i)") || fail "node $i /metrics: $out"
done
say "metrics: node $D caught up (lag 0 entries, 0 s on node $up); every node's /metrics well formed"

# ---- 3. forced fast-mode rollback ---------------------------------------------------------
L=$(top_leader)
F1=$((L % 3 + 1))
F2=$((F1 % 3 + 1))
rkey=$($TT key-led-by "$(node_ep $L)" "$CL_CERTS" "$L" "rb-") || fail "no key led by node $L"
before=$($TT metric "$(node_http "$L")" trine_fast_rollbacks_total) || fail "no rollback metric"
say "rollback: primary $L of $rkey; killing followers $F1 and $F2"
scripts/cluster.sh kill "$F1" --dir "$CL_DIR" >/dev/null
scripts/cluster.sh kill "$F2" --dir "$CL_DIR" >/dev/null
w=$($TT put "$(node_ep "$L")" "$CL_CERTS" "$rkey" doomed fast)
kill -STOP "$(node_pid "$L")"
node_wait_gone "$F1"
node_wait_gone "$F2"
[ "$(json_field status <<<"$w")" = OK ] || fail "fast put to lone primary $L: $w"
frev=$(json_field revision <<<"$w")
say "rollback: fast put acknowledged by node $L alone at revision $frev; node $L frozen"
node_restart "$F1"
node_restart "$F2"
out=$($TT probe-write "$(node_ep "$F1")" "$CL_CERTS" "$rkey" "$(now_ms)" 40) ||
    fail "followers $F1, $F2 did not elect a new primary for $rkey: $out"
say "rollback: new primary node $(cut -d' ' -f2 <<<"$out") took a write on $rkey" \
    "($(cut -d' ' -f1 <<<"$out") ms after the restart)"
# The new primary's log passes the old index (its noop and the write sit at or after it).
kill -CONT "$(node_pid "$L")"
say "rollback: node $L resumed"
rb=$CL_DIR/node-$L/data/rollbacks.jsonl
has_rollback() { [ -f "$rb" ] && grep -q "\"key\":\"$rkey\"" "$rb"; }
wait_for 20 "rolled-back entry of $rkey in $rb" has_rollback
line=$(grep "\"key\":\"$rkey\"" "$rb" | grep "\"index\":$frev," || true)
[ -n "$line" ] || fail "no rollback of $rkey at index $frev in $rb: $(head -n 5 "$rb")"
grep -q '"exact":true' <<<"$line" || fail "rollback not exact: $line"
after=$($TT metric "$(node_http "$L")" trine_fast_rollbacks_total)
[ "$after" -gt "$before" ] || fail "trine_fast_rollbacks_total on node $L: $before -> $after"
say "rollback: $line"
say "rollback: $(wc -l <"$rb") entries in $rb; trine_fast_rollbacks_total $before -> $after" \
    "(entries node $L appended as primary and lost, whatever their consistency)"
settle "leaders settle after the rollback"
for i in 1 2 3; do
    r=$($TT get "$(node_ep "$i")" "$CL_CERTS" "$rkey" strong)
    [ "$(json_field status <<<"$r")" = OK ] && [ "$(json_field value <<<"$r")" != doomed ] ||
        fail "node $i after the rollback: $r"
done
say "rollback: every node reads the new primary's value, not the rolled-back one"
