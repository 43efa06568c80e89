#!/usr/bin/env bash
# `make fuzz`: runs every libFuzzer target for FUZZ_SECONDS each (default 60),
# seeded from tests/fuzz/corpus/<name>/; new interesting inputs are kept in
# build/fuzz/corpus/<name>/ (copy the good ones into the committed corpus).
# A crash leaves its input as build/fuzz/crash-* and fails the run.
set -u
cd "$(dirname "$0")/../.."
FUZZ_BUILD=${FUZZ_BUILD:-build/fuzz}
secs=${FUZZ_SECONDS:-60}
failed=0
ran=0
for bin in "$FUZZ_BUILD"/fuzz/fuzz_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin")
    short=${name#fuzz_}
    work=$FUZZ_BUILD/corpus/$short
    mkdir -p "$work"
    seeds=()
    [ -d "tests/fuzz/corpus/$short" ] && seeds=("tests/fuzz/corpus/$short")
    echo "== $name for ${secs}s"
    if "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$FUZZ_BUILD/" "$work" "${seeds[@]}" >"$FUZZ_BUILD/$name.log" 2>&1; then
        grep -E '^stat::number_of_executed_units|^Done' "$FUZZ_BUILD/$name.log" | tail -2
    else
        failed=$((failed + 1))
        echo "$name FAILED; last lines of $FUZZ_BUILD/$name.log:"
        tail -n 30 "$FUZZ_BUILD/$name.log"
    fi
    ran=$((ran + 1))
done
echo "fuzz: $ran targets, $failed failed"
[ $failed -eq 0 ] && [ $ran -gt 0 ]
