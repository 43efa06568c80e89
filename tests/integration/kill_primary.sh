#!/usr/bin/env bash
# kill_primary.sh - nothing acknowledged as strong is lost when primaries die.
#
# 3 nodes. tload (tests/integration/tload.c, built here against the just-built
# static libtrine) makes 1000 strong puts of distinct keys with known values
# from 8 threads sharing one handle, spread over ~20 s. Meanwhile, twice: the
# node leading the most partitions is killed with -9; the time from the kill
# to the first successful strong write on a partition it led (a key it
# served just before) is measured and must be under 3 s, both as the
# cluster sees it (probes through a survivor every 50 ms) and as a client sees
# it (one CLI put started at the kill, 10 s budget); and EVERY partition it led
# must have a new leader within 3 s too (polled on the survivors' /status).
# The node is then
# restarted and leadership left to settle. Afterwards every acknowledged put
# must read back with its value from EVERY node: strong reads at once, fast
# reads once the replicas' content hashes agree.
#
# History: before 586ca2d (ranked election timeouts) this failed: replica.c's
# per-partition seed (node_seed * 0x9e37.. + partition) cancels against
# raft.c's seed ^ (id * 0x9e37..), so for 15 of 64 partitions two or three
# nodes drew identical election timeouts and split votes for 5-25 s.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

COUNT=1000
THREADS=8
DURATION_MS=20000
NEW_PRIMARY_MAX_MS=3000

cl_start 3
settle "leaders settle after start"

# The driver, against the static library of the flavour under test.
san=""
case $BUILD in */san) san="-fsanitize=address,undefined" ;; esac
if [ -f "$BINDIR/../lib/libtrine.a" ]; then # bin/ -> lib/
    libtrine=$BINDIR/../lib/libtrine.a
else # other flavours: build/<flavour>/pub/
    libtrine=$BUILD/pub/libtrine.a
fi
[ -f "$libtrine" ] || fail "$libtrine is not built"
# shellcheck disable=SC2086,SC2046
cc -std=c11 -O1 -g -Wall -Wextra -Werror -D_GNU_SOURCE $san -Iinternal/client \
    tests/integration/tload.c "$libtrine" \
    $(pkg-config --libs openssl msgpack libxxhash libisal) -lpthread -o "$CL_DIR/tload" ||
    fail "cannot build tests/integration/tload.c"

say "load: $COUNT strong puts from $THREADS threads over ${DURATION_MS} ms"
"$CL_DIR/tload" "$CL_EPS" "$CL_CERTS" $COUNT $THREADS $DURATION_MS "kp-" "$CL_DIR/acked.tsv" 8000 \
    >"$CL_DIR/tload.out" 2>"$CL_DIR/tload.err" &
load_pid=$!
sleep 2

figures=()
for round in 1 2; do
    kill -0 $load_pid 2>/dev/null || fail "round $round: the load ended before the kill"
    victim=$(top_leader)
    [ -n "$victim" ] || fail "round $round: no node leads any partition"
    survivor=$((victim % CL_N + 1))
    probe=$($TT key-led-by "$(node_ep "$survivor")" "$CL_CERTS" "$victim" "probe$round-") ||
        fail "round $round: no probe key led by node $victim"
    led=$($TT led-by "$(node_http "$victim")" "$victim" | tr ' ' ,)
    say "round $round: kill -9 node $victim (leads partitions $led; probe key $probe)"
    cli put "$probe" before-kill >/dev/null || fail "round $round: put before the kill failed"
    t0=$(now_ms)
    scripts/cluster.sh kill "$victim" --dir "$CL_DIR" >/dev/null
    # Every partition it led: when does a survivor become its leader?
    sports=()
    for i in $(seq 1 "$CL_N"); do [ "$i" = "$victim" ] || sports+=("$(node_http "$i")"); done
    $TT failover "$t0" 40 "$led" "${sports[@]}" >"$CL_DIR/failover.$round" 2>&1 &
    fo_pid=$!
    # What a client sees: one library call (the CLI, every endpoint, 10 s budget).
    (
        rc=0
        cli --timeout 10000 put "$probe" via-cli >"$CL_DIR/cli.out" 2>&1 || rc=$?
        echo "$rc $(($(now_ms) - t0))" >"$CL_DIR/cli.rc"
    ) &
    cli_pid=$!
    # A strong read started at the kill: a ReadIndex request a follower forwarded
    # to the dead leader must fail over too (it used to wait for its deadline).
    (
        rc=0
        cli --timeout 10000 get "$probe" >"$CL_DIR/get.out" 2>&1 || rc=$?
        echo "$rc $(($(now_ms) - t0))" >"$CL_DIR/get.rc"
    ) &
    get_pid=$!
    # When the cluster can take the write: probes every 50 ms through a survivor.
    out=$($TT probe-write "$(node_ep "$survivor")" "$CL_CERTS" "$probe" "$t0" 20) ||
        fail "round $round: no new primary for $probe: $out"
    read -r ms served attempts <<<"$out"
    say "round $round: new primary (node $served) took a strong write $ms ms after the kill" \
        "($attempts probes sent)"
    wait $cli_pid || true
    read -r cli_rc cli_ms <"$CL_DIR/cli.rc"
    [ "$cli_rc" -eq 0 ] || fail "round $round: client put after the kill: exit $cli_rc after" \
        "$cli_ms ms: $(cat "$CL_DIR/cli.out")"
    say "round $round: a client put started at the kill succeeded after $cli_ms ms"
    wait $get_pid || true
    read -r get_rc get_ms <"$CL_DIR/get.rc"
    [ "$get_rc" -eq 0 ] || fail "round $round: strong get after the kill: exit $get_rc after" \
        "$get_ms ms: $(cat "$CL_DIR/get.out")"
    say "round $round: a strong get started at the kill succeeded after $get_ms ms"
    [ "$get_ms" -le $NEW_PRIMARY_MAX_MS ] ||
        fail "round $round: the strong get took $get_ms ms, want <= $NEW_PRIMARY_MAX_MS ms"
    wait $fo_pid || true
    slowest=$(head -n 1 "$CL_DIR/failover.$round")
    slowest_ms=$(sed -n 's/^partition [0-9]*: \([0-9]*\) ms.*/\1/p' <<<"$slowest")
    say "round $round: all $(wc -l <"$CL_DIR/failover.$round") partitions node $victim led" \
        "have a new leader; slowest: $slowest"
    figures+=("$ms (client $cli_ms, slowest of its partitions ${slowest_ms:-none})")
    [ "$ms" -le $NEW_PRIMARY_MAX_MS ] ||
        fail "round $round: new primary after $ms ms, want <= $NEW_PRIMARY_MAX_MS ms"
    [ "$cli_ms" -le $NEW_PRIMARY_MAX_MS ] ||
        fail "round $round: the client's put took $cli_ms ms, want <= $NEW_PRIMARY_MAX_MS ms"
    [ -n "$slowest_ms" ] && [ "$slowest_ms" -le $NEW_PRIMARY_MAX_MS ] ||
        fail "round $round: partitions led by node $victim without a new leader within" \
            "$NEW_PRIMARY_MAX_MS ms: $(head -n 5 "$CL_DIR/failover.$round" | paste -sd';')"
    sleep 1
    node_restart "$victim"
    wait_for 20 "node $victim healthy after restart" $TT http "$(node_http "$victim")" /health
    settle "leaders settle after restarting node $victim"
    say "round $round: node $victim back, leaders settled"
done

# tload bounds itself (DURATION_MS + one 8 s put timeout); this loop bounds the wait.
for _ in $(seq 1 300); do kill -0 $load_pid 2>/dev/null || break; sleep 0.2; done
kill -0 $load_pid 2>/dev/null && fail "tload did not finish"
wait $load_pid || fail "tload failed: $(cat "$CL_DIR/tload.err")"
summary=$(cat "$CL_DIR/tload.out")
say "load: $summary"
read -r _ acked _ failed _ worst _ _ <<<"$summary"
if [ "$failed" -gt 0 ]; then
    say "puts not acknowledged (allowed, but reported):"
    head -n 10 "$CL_DIR/tload.err"
fi
[ "$acked" -eq "$(wc -l <"$CL_DIR/acked.tsv")" ] || fail "acked count and file disagree"
# Unacknowledged writes are allowed, but with 8 s of retries nearly all must land.
[ "$acked" -ge $((COUNT * 95 / 100)) ] || fail "only $acked of $COUNT puts acknowledged"

settle "leaders settle after the load"
eps=()
for i in $(seq 1 "$CL_N"); do eps+=("$(node_ep "$i")"); done
$TT verify "$CL_CERTS" "$CL_DIR/acked.tsv" strong "${eps[@]}" ||
    fail "acknowledged strong puts missing or wrong (strong reads)"
ports=()
for i in $(seq 1 "$CL_N"); do ports+=("$(node_http "$i")"); done
$TT hash-converged 30 "${ports[@]}" || fail "replicas did not converge"
$TT verify "$CL_CERTS" "$CL_DIR/acked.tsv" fast "${eps[@]}" ||
    fail "acknowledged strong puts missing or wrong (fast reads after settling)"
say "FIGURES: new primary after kill -9 (ms): ${figures[0]}, ${figures[1]}; $acked/$COUNT puts acknowledged," \
    "worst put latency $worst ms"
