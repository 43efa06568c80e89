# common.sh - sourced by the integration scripts (not run by itself).
#
# Gives each script its own cluster: a `mktemp -d` directory, a random free
# base port in [20000, 40000), scripts/cluster.sh to start/kill/restart nodes,
# and an EXIT trap that resumes stopped nodes, stops the cluster and removes
# the directory (kept when TRINE_KEEP=1). A failing check calls `fail`, which
# prints what failed plus each node's last warnings/errors and log lines.
#
# Environment (tests/run.sh sets it): BUILD (build/rel | build/san), BINDIR
# (bin | build/san/bin). Everything runs from the repo root.
#
# After cl_start: CL_DIR, CL_N, CL_PORT (node i: client port CL_PORT+i-1,
# admin HTTP CL_PORT+100+i-1), CL_CERTS, CL_EPS (all client endpoints).

cd "$(dirname "${BASH_SOURCE[0]}")/../../.." || exit 2
BUILD=${BUILD:-build/rel}
BINDIR=${BINDIR:-bin}
export BUILD BINDIR
export PYTHONDONTWRITEBYTECODE=1
TT="python3 tests/integration/lib/tt.py"
TEST_NAME=$(basename "$0" .sh)
T_START=$(date +%s.%N)
CL_DIR=""

elapsed() { awk -v a="$(date +%s.%N)" -v b="$T_START" 'BEGIN { printf "%.1f", a - b }'; }
say() { printf '[%s %6ss] %s\n' "$TEST_NAME" "$(elapsed)" "$*"; }
now_ms() { date +%s%3N; }

node_pid() { cat "$CL_DIR/node-$1/pid" 2>/dev/null || true; }
node_ep() { echo "127.0.0.1:$((CL_PORT + $1 - 1))"; }
node_http() { echo $((CL_PORT + 100 + $1 - 1)); }
node_log() { echo "$CL_DIR/node-$1/trined.log"; }
# A killed process stays a zombie until pid 1 reaps it (seconds in some containers):
# that is not alive.
pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
node_alive() { pid_alive "$(node_pid "$1")"; }
# node_kill I: kill -9 node I and wait (up to 10 s) until it is no longer running (a
# zombie counts as gone, as for scripts/cluster.sh restart).
node_wait_gone() {
    local p n=0
    p=$(node_pid "$1")
    while pid_alive "$p" && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
}
node_kill() {
    scripts/cluster.sh kill "$1" --dir "$CL_DIR" >/dev/null
    node_wait_gone "$1"
}
# node_restart I: start node I again (after node_kill or a kill whose zombie is gone).
node_restart() {
    node_wait_gone "$1"
    scripts/cluster.sh restart "$1" --dir "$CL_DIR" >/dev/null
}
all_http() { local i; for i in $(seq 1 "$CL_N"); do node_http "$i"; done; }

dump_logs() {
    [ -n "$CL_DIR" ] && [ -d "$CL_DIR" ] || return 0
    local i
    for i in $(seq 1 "${CL_N:-0}"); do
        local log
        log=$(node_log "$i")
        [ -f "$log" ] || continue
        echo "---- node $i: warnings/errors (last 15) in $log"
        grep -E '"level":"(warn|error)"|AddressSanitizer|runtime error|fatal' "$log" | tail -n 15
        echo "---- node $i: last 10 lines"
        tail -n 10 "$log"
    done
}

fail() {
    echo "$TEST_NAME: FAIL: $*"
    dump_logs
    exit 1
}

# Sanitizer reports in any node log fail the test (the nodes' exit codes are not
# seen: cluster.sh runs them in the background).
check_sanitizer_reports() {
    local i bad=0
    for i in $(seq 1 "${CL_N:-0}"); do
        if grep -q -E 'ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:' \
            "$(node_log "$i")" 2>/dev/null; then
            echo "$TEST_NAME: FAIL: sanitizer report in node $i's log:"
            grep -A 30 -E 'ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:' \
                "$(node_log "$i")" | head -n 60
            bad=1
        fi
    done
    return $bad
}

cleanup() {
    local rc=$?
    trap - EXIT
    set +e # every step below must run, whatever fails
    if [ -n "$CL_DIR" ] && [ -f "$CL_DIR/cluster.env" ]; then
        local i p
        for i in $(seq 1 "$CL_N"); do # a SIGSTOPped node would not see SIGTERM
            p=$(node_pid "$i")
            [ -n "$p" ] && kill -CONT "$p" 2>/dev/null
        done
        scripts/cluster.sh stop --dir "$CL_DIR" >/dev/null 2>&1
        check_sanitizer_reports || rc=1
    fi
    if [ -n "$CL_DIR" ] && [ -d "$CL_DIR" ]; then
        if [ $rc -ne 0 ]; then # keep the node logs of a failure next to the suite's log
            local keep=$BUILD/test-logs/$TEST_NAME-nodes i
            rm -rf "$keep" && mkdir -p "$keep"
            for i in $(seq 1 "${CL_N:-0}"); do
                cp "$(node_log "$i")" "$keep/node-$i.log" 2>/dev/null || true
            done
            cp "$CL_DIR"/*.out "$CL_DIR"/*.err "$CL_DIR"/*.log "$keep/" 2>/dev/null || true
            echo "node logs kept in $keep"
        fi
        if [ "${TRINE_KEEP:-0}" = 1 ]; then echo "kept $CL_DIR"; else rm -rf "$CL_DIR"; fi
    fi
    [ $rc -eq 0 ] && echo "$TEST_NAME: ok ($(elapsed) s)"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -x "$BINDIR/trined" ] || fail "$BINDIR/trined is not built"
[ -x "$BINDIR/trine" ] || fail "$BINDIR/trine is not built"

# ports_free BASE N: client ports BASE.. and admin ports BASE+100.. all bindable.
ports_free() {
    python3 - "$1" "$2" <<'EOF'
import socket, sys
base, n = int(sys.argv[1]), int(sys.argv[2])
for p in [base + i for i in range(n)] + [base + 100 + i for i in range(n)]:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        sys.exit(1)
    finally:
        s.close()
EOF
}

# cl_start N [trined flags...]: a fresh cluster of N nodes; up to 5 port picks.
cl_start() {
    CL_N=$1
    shift
    CL_DIR=$(mktemp -d "${TMPDIR:-/tmp}/trine-$TEST_NAME-XXXXXX")
    CL_CERTS=$CL_DIR/certs
    local try
    for try in 1 2 3 4 5; do
        CL_PORT=$((20000 + RANDOM % 19700))
        ports_free "$CL_PORT" "$CL_N" || continue
        if scripts/cluster.sh start -n "$CL_N" --dir "$CL_DIR" --port "$CL_PORT" -- "$@" \
            >"$CL_DIR/start.log" 2>&1; then
            CL_EPS=$(seq 1 "$CL_N" | while read -r i; do node_ep "$i"; done | paste -sd,)
            say "cluster of $CL_N nodes in $CL_DIR, ports $CL_PORT.., admin $((CL_PORT + 100)).."
            return 0
        fi
        say "start on port $CL_PORT failed (try $try):"
        tail -n 5 "$CL_DIR/start.log"
        scripts/cluster.sh stop --dir "$CL_DIR" >/dev/null 2>&1
        rm -rf "${CL_DIR:?}"/node-*
    done
    fail "could not start a cluster of $CL_N nodes"
}

# cli [trine args...]: the CLI against this cluster (all endpoints unless --endpoints given).
cli() {
    "$BINDIR/trine" --endpoints "$CL_EPS" --cacert "$CL_CERTS/ca.pem" --cert "$CL_CERTS/client.pem" \
        --key "$CL_CERTS/client.key" "$@"
}

# wait_for SECONDS DESCRIPTION CMD...: polls CMD every 0.2 s until it succeeds.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local end=$(($(date +%s) + secs)) n=0
    while [ $n -lt $((secs * 10)) ]; do
        "$@" >/dev/null 2>&1 && return 0
        [ "$(date +%s)" -ge $end ] && break
        sleep 0.2
        n=$((n + 1))
    done
    fail "$what: not within ${secs}s"
}

# Every partition has one leader its replicas agree on, on the running nodes given
# (default all).
leaders_settled() {
    local ports=() i
    [ $# -gt 0 ] || set -- $(seq 1 "$CL_N")
    for i in "$@"; do ports+=("$(node_http "$i")"); done
    $TT leaders-agree "${ports[@]}"
}

# settle WHAT [node ids...]: wait (up to SETTLE_S) until leaders_settled.
SETTLE_S=40
settle() {
    local what=$1
    shift
    wait_for "$SETTLE_S" "$what" leaders_settled "$@"
}

# The node (id) leading the most partitions.
top_leader() {
    local ports=() i
    for i in $(seq 1 "$CL_N"); do node_alive "$i" && ports+=("$(node_http "$i")"); done
    $TT roles "${ports[@]}" | sort -k2,2nr | head -n 1 | cut -d' ' -f1
}
