#!/usr/bin/env bash
# Trine side by side with etcd and Redis on this machine, in one run.
#
#   scripts/bench-compare.sh [--seconds S] [--clients "1 16 64"] [--no-docs]
#
# Installs what is missing (etcd-server, etcd-client, redis-server,
# redis-tools from Debian; Go builds tests/bench/etcdload, a closed-loop load
# driver on etcd's official Go client), then starts on loopback, all data on
# the same disk:
#   - a 3-member etcd (fsync on, defaults),
#   - a Redis with appendonly yes + appendfsync always,
#   - a 3-node Trine (scripts/cluster.sh, mutual TLS, fsync on),
# and runs, one system at a time, for each client count: writes of 256-byte
# values over 100,000 keys, and reads of 10,000 preloaded keys:
#   Trine: trine-bench cluster (strong writes, fast writes, strong reads) on
#          libtrine's async engine: the clients in one thread, pipelined over
#          2 TLS connections per node
#   etcd:  etcdload (puts; linearizable gets - etcd's default): a goroutine
#          per client over min(clients, 16) gRPC connections
#   Redis: redis-benchmark -t set,get (its own C client: one thread, one
#          connection per client)
# Each client has one request outstanding (closed loop). Each system gets a
# 3-second warm-up first (Trine's leaders move to their preferred primaries). The table goes to
# stdout and, unless --no-docs, into docs/benchmarks.md between the
# bench-compare markers, with the machine, date and versions.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

seconds=10
clients="1 16 64"
docs=1
while [ $# -gt 0 ]; do
    case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --no-docs) docs=0; shift ;;
    -h | --help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "bench-compare: unknown argument $1" >&2; exit 2 ;;
    esac
done
case $seconds in '' | *[!0-9]*) echo "bench-compare: --seconds must be a number" >&2; exit 2 ;; esac
[ "$seconds" -ge 1 ] && [ "$seconds" -le 600 ] || { echo "bench-compare: --seconds 1..600" >&2; exit 2; }

TRINE_DEPS_EXTRA="etcd-server etcd-client redis-server redis-tools" scripts/install-deps.sh
make -s all
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
mkdir -p build/bench
(cd tests/bench/etcdload && GOTOOLCHAIN=local "$GO" build -o "$ROOT/build/bench/etcdload" .)

work=$(mktemp -d "${TMPDIR:-/tmp}/trine-compare.XXXXXX")
results=$work/results.jsonl
: >"$results"
ETCD_EPS=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793
REDIS_PORT=26379
TRINE_PORT=27001
pids=()
cleanup() {
    set +e
    scripts/cluster.sh stop --dir "$work/trine" >/dev/null 2>&1
    redis-cli -p $REDIS_PORT shutdown nosave >/dev/null 2>&1
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

note() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- etcd ----------------------------------------------------------------------------
start_etcd() {
    local cl="" i
    for i in 1 2 3; do cl="$cl${cl:+,}e$i=http://127.0.0.1:$((23800 + i))"; done
    for i in 1 2 3; do
        etcd --name "e$i" --data-dir "$work/etcd/e$i" \
            --listen-client-urls "http://127.0.0.1:$((23790 + i))" \
            --advertise-client-urls "http://127.0.0.1:$((23790 + i))" \
            --listen-peer-urls "http://127.0.0.1:$((23800 + i))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((23800 + i))" \
            --initial-cluster "$cl" --initial-cluster-state new \
            --logger zap --log-level error >"$work/etcd-e$i.log" 2>&1 &
        pids+=($!)
    done
    for _ in $(seq 1 100); do
        ETCDCTL_API=3 etcdctl --endpoints "$ETCD_EPS" endpoint health >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "bench-compare: etcd did not become healthy (logs in $work)" >&2
    exit 1
}
stop_etcd() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
}

# ---- runs ----------------------------------------------------------------------------
run_trine() { # level workload clients
    local out
    out=$(bin/trine-bench cluster --json --workload "$2" --consistency "$1" --clients "$3" \
        --keys "$([ "$2" = read ] && echo 10000 || echo 100000)" --seconds "$seconds" 2>/dev/null | tail -1)
    python3 -c 'import json,sys; o=json.loads(sys.argv[1]); o["system"]="trine"; o["level"]=sys.argv[2]; print(json.dumps(o))' "$out" "$1" >>"$results"
}
run_etcd() { # workload clients
    build/bench/etcdload --endpoints "$ETCD_EPS" --workload "$1" --clients "$2" \
        --keys "$([ "$1" = read ] && echo 10000 || echo 100000)" --seconds "$seconds" >>"$results"
}
run_redis() { # clients
    local n t
    # redis-benchmark runs a request count, not a time: size it from a short probe.
    for t in set get; do
        n=$(redis-benchmark -p $REDIS_PORT -t $t -c "$1" -d 256 -r 100000 -n 2000 --csv -q 2>/dev/null |
            awk -F'"' -v s="$seconds" '/^"/ {print int($4 * s)}' | tail -1)
        [ "${n:-0}" -ge 1000 ] || n=1000
        redis-benchmark -p $REDIS_PORT -t $t -c "$1" -d 256 -r 100000 -n "$n" --csv -q 2>/dev/null |
            python3 -c '
import csv, json, sys
for row in csv.reader(sys.stdin):
    if not row or row[0] not in ("SET", "GET"):
        continue
    rps, p50, p99 = float(row[1]), float(row[4]), float(row[6])
    print(json.dumps({"system": "redis", "workload": "write" if row[0] == "SET" else "read",
                      "level": "appendfsync always" if row[0] == "SET" else "single node",
                      "clients": int(sys.argv[1]), "ops_per_s": rps,
                      "p50_us": int(p50 * 1000), "p99_us": int(p99 * 1000), "p999_us": None}))
' "$1" >>"$results"
    done
}

note "etcd: 3 members on 127.0.0.1:2379x"
start_etcd
note "etcd: warm-up (3 s, not measured)"
build/bench/etcdload --endpoints "$ETCD_EPS" --workload write --clients 16 --seconds 3 >/dev/null
for c in $clients; do
    note "etcd: write, $c clients"; run_etcd write "$c"
    note "etcd: linearizable read, $c clients"; run_etcd read "$c"
done
stop_etcd

note "redis: appendonly yes, appendfsync always on 127.0.0.1:$REDIS_PORT"
redis-server --port $REDIS_PORT --bind 127.0.0.1 --dir "$work" --appendonly yes \
    --appendfsync always --save "" --daemonize yes --logfile "$work/redis.log" >/dev/null
for _ in $(seq 1 50); do redis-cli -p $REDIS_PORT ping >/dev/null 2>&1 && break; sleep 0.1; done
for c in $clients; do note "redis: set/get, $c clients"; run_redis "$c"; done
redis-cli -p $REDIS_PORT shutdown nosave >/dev/null 2>&1 || true

note "trine: 3 nodes on 127.0.0.1:$TRINE_PORT-$((TRINE_PORT + 2))"
scripts/cluster.sh start --dir "$work/trine" --port $TRINE_PORT >/dev/null
eval "$(scripts/cluster.sh env --dir "$work/trine")"
# Leaders settle on their preferred primaries in the first seconds.
note "trine: warm-up (3 s, not measured)"
bin/trine-bench cluster --workload write --clients 16 --seconds 3 >/dev/null 2>&1
for c in $clients; do
    note "trine: strong write, $c clients"; run_trine strong write "$c"
    note "trine: fast write, $c clients"; run_trine fast write "$c"
    note "trine: strong read, $c clients"; run_trine strong read "$c"
done
scripts/cluster.sh stop --dir "$work/trine" >/dev/null

# ---- the table ----------------------------------------------------------------------------
machine="$(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
versions="etcd $(etcd --version 2>/dev/null | awk '/etcd Version/ {print $3}'), redis $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), trine $(git rev-parse --short HEAD)"
table=$(python3 scripts/bench-compare-table.py "$results" "$machine" "$versions" "$seconds" "$clients")
echo "$table"
if [ "$docs" = 1 ]; then
    python3 - "$table" docs/benchmarks.md <<'PY'
import sys
table, path = sys.argv[1], sys.argv[2]
begin, end = "<!-- bench-compare:begin -->", "<!-- bench-compare:end -->"
text = open(path).read()
block = begin + "\n" + table.rstrip() + "\n" + end
if begin in text and end in text:
    text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
else:
    text = text.rstrip() + "\n\n## Side by side: etcd and Redis (scripts/bench-compare.sh)\n\n" + block + "\n"
open(path, "w").write(text)
PY
    note "wrote the table into docs/benchmarks.md"
fi
