#!/usr/bin/env bash
# The docker compose demo (deploy/, docs/operations.md "Docker compose demo").
#
#   scripts/demo.sh up      `make demo`: base image, images, 5 nodes + Prometheus, the tour;
#                           leaves the cluster running (project trine-demo)
#   scripts/demo.sh down    `make demo-down`: removes its containers, network and volumes
#                           (the images stay; see docs)
#   scripts/demo.sh test    `make test-docker`: the same on its own project (trine-test-<pid>),
#                           every step checked, one node killed, torn down at exit;
#                           ends with "docker: N passed, N failed"
#
# The tour's first half (put/get at each consistency level) is the compose file's
# `demo` service (deploy/docker/trine-tour). The second half runs here, because it
# stops a container: it finds the primary of a key, stops that node's container,
# shows the new primary and that strong data survived, starts it again and shows
# it catching up. The CLI runs inside a node container (`docker exec`).
#
# Environment: TRINE_PROMETHEUS_PUBLISH (up: 127.0.0.1:9090), TRINE_DEMO_STOP
# (stop|kill: how the primary's container goes down; up: stop, test: kill),
# TRINE_DOCKER_BUILD_FLAGS (extra `docker build` flags, e.g. "--network host"
# where containers cannot reach deb.debian.org). Build logs: run/docker/.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-up}
case $mode in
up) project=trine-demo ;;
down) project=trine-demo ;;
test) project=${TRINE_TEST_PROJECT:-trine-test-$$} ;;
*) sed -n '2,20p' "$0"; exit 2 ;;
esac
export TRINE_COMPOSE_PROJECT=$project
LOGDIR=run/docker
mkdir -p "$LOGDIR"
T0=$SECONDS
pass=0 fail=0

dc() { scripts/compose.sh "$@"; }
say() { printf '\n== %s\n' "$*"; }
note() { printf '   %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }
check() { # description, then a test command; counts in test mode, warns otherwise
    local what=$1
    shift
    if "$@"; then
        pass=$((pass + 1))
        [ "$mode" = test ] && echo "ok   $what"
        return 0
    fi
    fail=$((fail + 1))
    echo "FAIL $what" >&2
    return 1
}
# must DESCRIPTION CMD...: a step the rest depends on; stops here if it fails.
must() { check "$@" || finish; }

# ---- images ------------------------------------------------------------------------

build_one() { # IMAGE DOCKERFILE CONTEXT: builds, logs to run/docker/, prints one line
    local img=$1 file=$2 ctx=$3 t=$SECONDS log="$LOGDIR/build-${1%%:*}.log"
    # shellcheck disable=SC2086 # TRINE_DOCKER_BUILD_FLAGS is a list of flags
    if docker build ${TRINE_DOCKER_BUILD_FLAGS:-} -f "$file" -t "$img" "$ctx" >"$log" 2>&1; then
        echo "demo: built $img in $((SECONDS - t)) s ($(docker image inspect -f '{{.Size}}' "$img" |
            awk '{printf "%.0f MB", $1/1e6}'))"
    else
        echo "demo: building $img FAILED (log: $log)"
        tail -n 30 "$log" >&2
        return 1
    fi
}
build_images() {
    # Without the buildx plugin, docker build falls back to the legacy builder (fine).
    docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0
    scripts/docker-base.sh || return 1
    # Both at once: Prometheus's is mostly download and unpacking, trine's mostly the compiler.
    build_one trine-prometheus:dev deploy/prometheus/Dockerfile deploy/prometheus &
    local prom=$! rc=0
    build_one trine:dev deploy/Dockerfile . || rc=1
    wait $prom || rc=1
    return $rc
}

# ---- helpers over the running cluster ------------------------------------------------

cid() { dc ps -q "$1" 2>/dev/null | head -1; } # running container of a service
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1" 2>/dev/null; }
CLI="" # a running node container the CLI runs in
use_cli_of() { CLI=$(cid "node-$1"); }
trine() { docker exec "$CLI" trine "$@"; }
http() { docker exec "$CLI" trine-http "node-$1:7101" "$2"; } # node path
show() { # run the CLI, showing the command and its output; status in $rc
    echo "\$ trine $*"
    trine "$@"
    rc=$?
}
# json FILE EXPR: evaluates a Python expression over the JSON in FILE (bound to d).
json() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
tmp=$(mktemp -d)

# Which partition a key is in: put it twice and see which partition's commit index
# moved on its primary (the cluster is otherwise idle). Sets PART, PRIMARY, REPLICAS.
find_partition() {
    local key=$1 val=$2 attempt
    for attempt in 1 2 3; do
        trine -o json put "$key" "$val" >"$tmp/put.json" || continue
        PRIMARY=$(json "$tmp/put.json" "d['leader'] or d['served_by']")
        http "$PRIMARY" /status >"$tmp/s1.json" || continue
        trine put "$key" "$val" >/dev/null || continue
        http "$PRIMARY" /status >"$tmp/s2.json" || continue
        read -r PART REPLICAS < <(python3 - "$tmp/s1.json" "$tmp/s2.json" <<'EOF'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
before = {p["partition"]: p["commit"] for p in a["partitions"] if p["role"] == "leader"}
moved = [p for p in b["partitions"] if p["role"] == "leader" and p["commit"] > before.get(p["partition"], 1 << 62)]
if len(moved) == 1:
    print(moved[0]["partition"], ",".join(str(x["id"]) for x in moved[0]["peers"]))
EOF
        )
        [ -n "${PART:-}" ] && return 0
        sleep 1
    done
    return 1
}
# part_field NODE PART FIELD: a field of partition PART in NODE's /status
part_field() {
    http "$1" /status >"$tmp/st.json" || return 1
    json "$tmp/st.json" "[p['$3'] for p in d['partitions'] if p['partition'] == $2][0]"
}
part_hash() {
    http "$1" /hash >"$tmp/h.json" || return 1
    json "$tmp/h.json" "['hash %s at applied index %d' % (p['hash'], p['applied']) for p in d['partitions'] if p['partition'] == $2][0]"
}
# Every partition's replicas report the same applied index and content hash.
converged() {
    local i
    for i in 1 2 3 4 5; do http "$i" /hash >"$tmp/hash-$i.json" || return 1; done
    python3 - "$tmp"/hash-*.json <<'EOF'
import json, sys
parts = {}
for f in sys.argv[1:]:
    for p in json.load(open(f))["partitions"]:
        parts.setdefault(p["partition"], set()).add((p["applied"], p["hash"]))
sys.exit(0 if parts and all(len(v) == 1 for v in parts.values()) else 1)
EOF
}
prometheus_addr() { dc port prometheus 9090 2>/dev/null | tail -1; }
prometheus_up() { # number of trine targets Prometheus scrapes successfully
    python3 - "$(prometheus_addr)" <<'EOF'
import json, sys, urllib.request
try:
    d = json.load(urllib.request.urlopen("http://%s/api/v1/targets" % sys.argv[1], timeout=3))
    print(sum(1 for t in d["data"]["activeTargets"] if t["labels"].get("job") == "trine" and t["health"] == "up"))
except Exception:
    print(0)
EOF
}
wait_for() { # SECONDS CMD...: retry CMD every 0.5 s
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.5
    done
}

# ---- the end ---------------------------------------------------------------------------

finish() {
    trap - EXIT INT TERM
    if [ "$mode" = test ]; then
        if [ $fail -gt 0 ]; then
            echo "---- containers and the last log lines of each node ----"
            dc ps
            for i in 1 2 3 4 5; do
                echo "-- node-$i"
                dc logs --tail 15 "node-$i" 2>&1 | tail -n 15
            done
        fi
        dc down -v --remove-orphans >"$LOGDIR/down.log" 2>&1 || echo "demo: compose down failed (see $LOGDIR/down.log)" >&2
        rm -rf "$tmp"
        echo "docker: $pass passed, $fail failed  ($((SECONDS - T0)) s)"
    else
        rm -rf "$tmp"
        [ $fail -gt 0 ] && echo "demo: $fail step(s) did not go as expected (see above)" >&2
    fi
    [ $fail -eq 0 ]
    exit
}

# ---- main ------------------------------------------------------------------------------

if [ "$mode" = down ]; then
    dc down -v --remove-orphans
    echo "demo: removed project $project (containers, network, volumes); the images trine:dev,"
    echo "      trine-prometheus:dev and debian:bookworm-slim stay (docker rmi them to free space)"
    exit 0
fi

command -v python3 >/dev/null || die "python3 is needed"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info)"
trap finish EXIT
trap 'fail=$((fail + 1)); echo "interrupted" >&2; finish' INT TERM
if [ "$mode" = test ]; then
    export TRINE_PROMETHEUS_PUBLISH=127.0.0.1: # any free port
    stop_how=${TRINE_DEMO_STOP:-kill}
else
    stop_how=${TRINE_DEMO_STOP:-stop}
fi

must "images build" build_images

say "Starting 5 nodes, Prometheus and the demo tour (project $project)"
must "compose up: certificates made, 5 nodes healthy" dc up -d --no-build
demo_id=$(dc ps -a -q demo | head -1)
must "the demo service ran" test -n "$demo_id"
demo_rc=$(timeout 120 docker wait "$demo_id")
docker logs "$demo_id" 2>&1
tour=$(docker logs "$demo_id" 2>&1 | sed -n 's/^tour: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p')
if [ "$mode" = test ] && [ -n "$tour" ]; then # the tour's own checks count too
    pass=$((pass + ${tour% *}))
    fail=$((fail + ${tour#* }))
fi
must "the demo tour exits 0" [ "${demo_rc:-1}" = 0 ]

say "Prometheus scrapes every node"
check "Prometheus scrapes 5 of 5 nodes within 30 s" wait_for 30 eval '[ "$(prometheus_up)" = 5 ]'
note "$(prometheus_up) of 5 nodes up at http://$(prometheus_addr)/targets"

# ---- failover -------------------------------------------------------------------------
key="demo:survivor:$(date +%H%M%S)"
use_cli_of 1
say "A strong write; which node is the primary of its partition"
must "find the key's partition and primary" find_partition "$key" "written at strong before the failure"
echo "\$ trine -o json put $key 'written at strong before the failure'"
cat "$tmp/put.json"
note "key $key is in partition $PART, replicas on nodes $REPLICAS; primary: node $PRIMARY"
victim=$PRIMARY
for i in 1 2 3 4 5; do [ $i != "$victim" ] && { use_cli_of $i; break; }; done
victim_id=$(cid "node-$victim")
applied_before=$(part_field "$victim" "$PART" applied)

say "${stop_how^} the container of node $victim (the primary)"
t=$SECONDS
echo "\$ docker $stop_how <node-$victim>"
must "node-$victim $stop_how" dc "$stop_how" "node-$victim"
t_down=$(date +%s%3N)
note "down after $((SECONDS - t)) s; node $victim had applied partition $PART up to index $applied_before"

say "The partition elects a new primary; the strong write survived"
elected() { # a surviving replica of PART names a primary other than the victim
    local r l
    for r in ${REPLICAS//,/ }; do
        [ "$r" = "$victim" ] && continue
        l=$(part_field "$r" "$PART" leader 2>/dev/null) || continue
        if [ -n "$l" ] && [ "$l" != 0 ] && [ "$l" != "$victim" ]; then
            elected_node=$l
            return 0
        fi
    done
    return 1
}
elected_node=""
check "partition $PART elects a new primary within 15 s" wait_for 15 elected
note "node ${elected_node:-?} is partition $PART's primary $(($(date +%s%3N) - t_down)) ms after node $victim went down (as its replicas' /status shows)"
show get "$key"
check "strong get of the pre-failure value after the primary went down" [ $rc = 0 ]
trine -o json get "$key" >"$tmp/get.json" 2>/dev/null
value=$(json "$tmp/get.json" "d.get('value')" 2>/dev/null)
new_primary=$(json "$tmp/get.json" "d['leader'] or d['served_by']" 2>/dev/null)
check "the value survived" [ "$value" = "written at strong before the failure" ]
check "a new primary (node $new_primary), not node $victim" eval '[ -n "$new_primary" ] && [ "$new_primary" != "$victim" ]'
note "partition $PART's primary is now node $new_primary"
show put "$key" "written at strong while node $victim is down"
check "strong put while a replica is down" [ $rc = 0 ]
show --consistency all --timeout 3000 put "$key" "needs every replica"
check "an 'all' put fails with UNAVAILABLE (exit code 3) while a replica is down" [ $rc = 3 ]
note "(exit code $rc: 'all' needs every replica of the partition; nothing was written)"
echo "\$ for i in \$(seq 1 20); do trine put demo:while-down:\$i v\$i; done"
docker exec "$CLI" bash -c 'n=0; for i in $(seq 1 20); do trine put demo:while-down:$i v$i >/dev/null && n=$((n + 1)); done; echo "$n of 20 strong writes succeeded"; [ $n = 20 ]'
check "20 strong writes while node $victim is down" [ $? = 0 ]
show cluster status

say "Start node $victim again: it catches up from its peers"
t=$SECONDS
echo "\$ docker start <node-$victim>"
must "node-$victim starts" dc start "node-$victim"
check "node-$victim healthy within 30 s" wait_for 30 eval '[ "$(health "$victim_id")" = healthy ]'
note "healthy after $((SECONDS - t)) s"
target=$(part_field "$new_primary" "$PART" commit)
caught_up() {
    local a
    a=$(part_field "$victim" "$PART" applied 2>/dev/null) || return 1
    [ -n "$a" ] && [ "$a" -ge "$target" ]
}
check "node $victim applies partition $PART up to the primary's commit index within 30 s" wait_for 30 caught_up
note "node $victim: partition $PART applied index $applied_before -> $(part_field "$victim" "$PART" applied) (the primary's commit index was $target) $((SECONDS - t)) s after the start"
hv=$(part_hash "$victim" "$PART") hp=$(part_hash "$new_primary" "$PART")
note "partition $PART's content on node $victim: $hv; on node $new_primary: $hp"
check "every replica of every partition has the same applied index and content hash within 30 s" wait_for 30 converged
show --consistency all put "$key" "every replica again"
check "an 'all' put succeeds again (3/3 acks)" [ $rc = 0 ]
sleep 2 # leadership returns to each partition's preferred primary
trine -o json get "$key" >"$tmp/get.json" 2>/dev/null
note "partition $PART's primary is node $(json "$tmp/get.json" "d['leader'] or d['served_by']" 2>/dev/null) (leadership moves back to the preferred primary once it caught up)"
show cluster status

if [ "$mode" = up ]; then
    cat <<EOT

The cluster keeps running (compose project $project).
  Prometheus:   http://$(prometheus_addr)   (e.g. trine_requests_total, trine_raft_role, trine_wal_fsyncs_total)
  The CLI:      scripts/compose.sh exec node-1 trine cluster status
                scripts/compose.sh exec node-1 trine put hello world
  Fail a node:  scripts/compose.sh kill node-3; scripts/compose.sh start node-3
  Logs:         scripts/compose.sh logs -f node-2
  Remove it:    make demo-down
EOT
fi
finish
