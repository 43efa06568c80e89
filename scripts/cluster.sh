#!/usr/bin/env bash
# A local Trine cluster on 127.0.0.1.
#
#   scripts/cluster.sh start [-n N] [--dir DIR] [--port BASE] [-- extra trined flags]
#   scripts/cluster.sh stop | status | env       [--dir DIR]
#   scripts/cluster.sh kill I      [--dir DIR]    # kill -9 node I
#   scripts/cluster.sh restart I   [--dir DIR]    # (re)start node I with its original flags
#
# Node i listens on BASE+i-1 (clients and peers, TLS) and serves admin HTTP on
# BASE+100+i-1. State lives in DIR (default run/cluster): node-<i>/ holds the
# data dir, trined.log and pid; certs/ the dev CA and certificates;
# cluster.env the settings `start` used, so the other verbs need no flags.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BINDIR=${BINDIR:-$ROOT/bin}

dir=$ROOT/run/cluster
n=3
port=7001
extra=()

die() { echo "cluster: $*" >&2; exit 2; }

load_env() {
    [ -f "$dir/cluster.env" ] || die "no cluster in $dir (run: scripts/cluster.sh start)"
    # shellcheck disable=SC1091
    . "$dir/cluster.env"
}

pid_of() { cat "$dir/node-$1/pid" 2>/dev/null || true; }
# A killed node stays a zombie until reaped; it is not alive.
alive() {
    local p st
    p=$(pid_of "$1")
    [ -n "$p" ] && kill -0 "$p" 2>/dev/null || return 1
    st=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)
    [ -n "$st" ] && [ "$st" != Z ]
}

members() {
    local s="" i
    for i in $(seq 1 "$n"); do s="$s${s:+,}$i=127.0.0.1:$((port + i - 1))"; done
    echo "$s"
}

start_node() {
    local i=$1
    alive "$i" && { echo "node $i already running (pid $(pid_of "$i"))"; return 0; }
    mkdir -p "$dir/node-$i/data"
    "$BINDIR/trined" --id "$i" --listen "127.0.0.1:$((port + i - 1))" \
        --http "127.0.0.1:$((port + 100 + i - 1))" --data-dir "$dir/node-$i/data" \
        --initial-cluster "$(members)" --tls-cert "$dir/certs/node-$i.pem" \
        --tls-key "$dir/certs/node-$i.key" --tls-ca "$dir/certs/ca.pem" \
        ${EXTRA_FLAGS:-} >>"$dir/node-$i/trined.log" 2>&1 &
    echo $! >"$dir/node-$i/pid"
    echo "node $i: pid $!, client port $((port + i - 1)), http $((port + 100 + i - 1)), log $dir/node-$i/trined.log"
}

wait_healthy() { # up to 10 s for every node's /health
    local i t
    for i in $(seq 1 "$n"); do
        for t in $(seq 1 100); do
            alive "$i" || break
            if (exec 3<>"/dev/tcp/127.0.0.1/$((port + 100 + i - 1))") 2>/dev/null; then break; fi
            sleep 0.1
        done
        alive "$i" || { echo "node $i exited; last log lines:" >&2; tail -n 20 "$dir/node-$i/trined.log" >&2; return 1; }
    done
}

# Up to 20 s until the cluster is ready for `all` writes: every node connected to
# every peer, every partition led, each leader hearing all its replicas and
# standing on its preferred node (so a first command meets no hand-over).
wait_ready() {
    python3 - "$n" "$port" <<'PY' || echo "cluster.sh: not every partition settled within 20 s (the cluster works; first requests may be retried)" >&2
import json, sys, time, urllib.request
n, port = int(sys.argv[1]), int(sys.argv[2])
deadline = time.time() + 20
while time.time() < deadline:
    ok = True
    try:
        for i in range(n):
            st = json.load(urllib.request.urlopen("http://127.0.0.1:%d/status" % (port + 100 + i), timeout=1))
            if not all(p.get("up") for p in st.get("peers", [])):
                ok = False
            for part in st.get("partitions", []):
                if not part.get("leader"):
                    ok = False
                if part.get("role") == "leader" and (part.get("leader") != part.get("preferred")
                                                     or not all(p.get("active") for p in part.get("peers", []))):
                    ok = False
    except Exception:
        ok = False
    if ok:
        sys.exit(0)
    time.sleep(0.2)
sys.exit(1)
PY
}

cmd=${1:-}
[ $# -gt 0 ] && shift
# --dir DIR may follow any verb (and TRINE_CLUSTER_DIR sets it too).
dir=${TRINE_CLUSTER_DIR:-$dir}
if [ "$cmd" != start ]; then
    rest=()
    while [ $# -gt 0 ]; do
        if [ "$1" = --dir ]; then dir=$2; shift 2; else rest+=("$1"); shift; fi
    done
    set -- "${rest[@]+"${rest[@]}"}"
fi
case $cmd in
start)
    while [ $# -gt 0 ]; do
        case $1 in
        -n) n=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --) shift; extra=("$@"); break ;;
        *) die "unknown argument $1" ;;
        esac
    done
    [ -x "$BINDIR/trined" ] || die "$BINDIR/trined is not built (run: make)"
    mkdir -p "$dir"
    scripts/gen-certs.sh --dir "$dir/certs" --nodes "$n" >/dev/null
    printf 'n=%s\nport=%s\nEXTRA_FLAGS=%q\n' "$n" "$port" "${extra[*]:-}" >"$dir/cluster.env"
    EXTRA_FLAGS="${extra[*]:-}"
    for i in $(seq 1 "$n"); do start_node "$i"; done
    wait_healthy
    wait_ready
    echo
    echo "Cluster of $n nodes is up. In this shell:"
    echo "  eval \"\$(scripts/cluster.sh env)\""
    echo "  bin/trine put greeting hello && bin/trine get greeting"
    ;;
stop)
    load_env
    for i in $(seq 1 "$n"); do
        if alive "$i"; then kill -TERM "$(pid_of "$i")"; fi
    done
    for t in $(seq 1 100); do
        any=0
        for i in $(seq 1 "$n"); do alive "$i" && any=1; done
        [ $any = 0 ] && break
        sleep 0.1
    done
    for i in $(seq 1 "$n"); do alive "$i" && kill -KILL "$(pid_of "$i")"; rm -f "$dir/node-$i/pid"; done
    echo "cluster stopped"
    ;;
status)
    load_env
    for i in $(seq 1 "$n"); do
        if alive "$i"; then s="running (pid $(pid_of "$i"))"; else s="stopped"; fi
        echo "node $i  127.0.0.1:$((port + i - 1))  $s"
    done
    ;;
kill)
    load_env
    i=${1:?usage: cluster.sh kill I}
    alive "$i" || die "node $i is not running"
    kill -KILL "$(pid_of "$i")"
    echo "node $i killed (kill -9)"
    ;;
restart)
    load_env
    i=${1:?usage: cluster.sh restart I}
    if alive "$i"; then kill -TERM "$(pid_of "$i")"; sleep 1; fi
    start_node "$i"
    ;;
env)
    load_env
    eps=""
    for i in $(seq 1 "$n"); do eps="$eps${eps:+,}127.0.0.1:$((port + i - 1))"; done
    echo "export TRINE_ENDPOINTS=$eps"
    echo "export TRINE_CACERT=$dir/certs/ca.pem TRINE_CERT=$dir/certs/client.pem TRINE_KEY=$dir/certs/client.key"
    ;;
*)
    sed -n '2,14p' "$0"
    [ -z "$cmd" ] || [ "$cmd" = help ] || [ "$cmd" = -h ] || exit 2
    ;;
esac
