#!/usr/bin/env bash
# Runs every suite of `make test` and ends with the line "N passed, N failed".
#
# Suites, in order: unit (cmocka, one binary per module), raft (simulation +
# scenarios), fuzz (a short libFuzzer run per target), integration and fault
# scripts. Each suite's output goes to $BUILD/test-logs/<name>.log; a failing
# suite's tail is printed. Environment: BUILD, BINDIR, FUZZ_BUILD,
# FUZZ_SHORT_SECONDS (default 10), SIM_SEEDS (default 2000), TRINE_SEED.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/rel}
BINDIR=${BINDIR:-bin}
FUZZ_BUILD=${FUZZ_BUILD:-build/fuzz}
export BUILD BINDIR
LOGS=$BUILD/test-logs
mkdir -p "$LOGS"

passed=0
failed=0
failures=()

report() { # name passed failed seconds
    local name=$1 p=$2 f=$3 secs=$4
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$f" -gt 0 ]; then
        failures+=("$name")
        printf 'FAIL %-28s %4d passed %3d failed  %4ss\n' "$name" "$p" "$f" "$secs"
        echo "---- last lines of $LOGS/$name.log ----"
        tail -n 40 "$LOGS/$name.log"
        echo "----"
    else
        printf 'ok   %-28s %4d passed %3d failed  %4ss\n' "$name" "$p" "$f" "$secs"
    fi
}

# A cmocka binary: counts come from its "[  PASSED  ] N" / "[  FAILED  ] N" lines.
cmocka_suite() {
    local name=$1 bin=$2 log="$LOGS/$1.log" t0=$SECONDS
    timeout 900 "$bin" >"$log" 2>&1
    local rc=$?
    local p f
    p=$(sed -n 's/^.*\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
    f=$(sed -n 's/^.*\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
    p=${p:-0}
    f=${f:-0}
    # A crash or timeout before cmocka's summary is one failure.
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    report "$name" "$p" "$f" $((SECONDS - t0))
}

# Any other command: one test, judged by its exit status.
cmd_suite() {
    local name=$1 limit=$2
    shift 2
    local log="$LOGS/$name.log" t0=$SECONDS
    timeout "$limit" "$@" >"$log" 2>&1
    local rc=$?
    [ $rc -eq 124 ] && echo "TIMEOUT after ${limit}s" >>"$log"
    if [ $rc -eq 0 ]; then report "$name" 1 0 $((SECONDS - t0)); else report "$name" 0 1 $((SECONDS - t0)); fi
}

echo "== unit"
for bin in "$BUILD"/tests/test_*; do
    [ -x "$bin" ] && cmocka_suite "$(basename "$bin")" "$bin"
done

echo "== raft"
for bin in "$BUILD"/tests/raft_*; do
    [ -x "$bin" ] || continue
    case $(basename "$bin") in
    raft_sim) cmd_suite raft_sim 600 "$bin" --seeds "${SIM_SEEDS:-2000}" ;;
    raft_bench) ;; # a benchmark, not a test
    *) cmocka_suite "$(basename "$bin")" "$bin" ;;
    esac
done

echo "== fuzz (short)"
for bin in "$FUZZ_BUILD"/fuzz/fuzz_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin")
    corpus=tests/fuzz/corpus/${name#fuzz_}
    work=$(mktemp -d)
    cmd_suite "$name" 300 "$bin" -max_total_time="${FUZZ_SHORT_SECONDS:-10}" -rss_limit_mb=2048 \
        -print_final_stats=1 "$work" $([ -d "$corpus" ] && echo "$corpus")
    rm -rf "$work"
done

echo "== integration"
for t in tests/integration/*.sh tests/fault/short*.sh; do
    [ -x "$t" ] || continue
    name=$(basename "$t" .sh)
    cmd_suite "$name" 900 "$t"
done

[ ${#failures[@]} -gt 0 ] && echo "failed suites: ${failures[*]} (logs in $LOGS)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
