#!/usr/bin/env bash
# Runs the storage benchmarks behind docs/benchmarks.md in one go, on one disk,
# and prints a Markdown table plus the three goal ratios:
#   WAL 256 B: 64 appenders / 1 appender               (goal >= 10x)
#   WAL 4 KiB, 64 appenders / fsync batched by 64     (goal >= 70 %)
#   store apply / raw leveldb WriteBatch               (goal >= 70 %)
#   scripts/bench-storage.sh [--seconds S] [--dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=5
dir=${TMPDIR:-/tmp}
while [ $# -gt 0 ]; do
    case $1 in
    --seconds) secs=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    *) echo "usage: $0 [--seconds S] [--dir DIR]" >&2; exit 2 ;;
    esac
done
B=${BINDIR:-bin}/trine-bench
run() { "$B" storage --json --seconds "$secs" --dir "$dir" "$@"; }
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

declare -A R
R[wal1]=$(run --workload wal --appenders 1 --record-size 256)
R[wal64]=$(run --workload wal --appenders 64 --record-size 256)
R[fsync4k]=$(run --workload fsync --appenders 64 --record-size 4096)
R[wal4k]=$(run --workload wal --appenders 64 --record-size 4096)
R[leveldb]=$(run --workload leveldb --record-size 256)
R[apply]=$(run --workload apply --record-size 256)
R[snapshot]=$(run --workload snapshot --record-size 256)
R[recovery]=$(run --workload recovery --record-size 256)

echo "| run | workload | appenders | record B | ops/s | MB/s | fsyncs/s | p50 us | p99 us | p999 us |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for k in wal1 wal64 fsync4k wal4k leveldb apply snapshot recovery; do
    j=${R[$k]}
    printf '| %s | %s | %s | %s | %.0f | %.1f | %.0f | %s | %s | %s |\n' "$k" \
        "$(field "$j" workload)" "$(field "$j" appenders)" "$(field "$j" record_bytes)" \
        "$(field "$j" ops_per_s)" "$(field "$j" mb_per_s)" "$(field "$j" fsyncs_per_s)" \
        "$(field "$j" p50_us)" "$(field "$j" p99_us)" "$(field "$j" p999_us)"
done
python3 - "${R[wal1]}" "${R[wal64]}" "${R[fsync4k]}" "${R[wal4k]}" "${R[leveldb]}" "${R[apply]}" <<'PY'
import json, sys
w1, w64, f4, w4, ldb, ap = (json.loads(a)["ops_per_s"] for a in sys.argv[1:])
print()
print(f"- WAL 256 B, 64 appenders vs 1: {w64 / w1:.1f}x (goal >= 10x)")
print(f"- WAL 4 KiB, 64 appenders vs fsync batched by 64: {100 * w4 / f4:.0f} % (goal >= 70 %)")
print(f"- store apply vs raw leveldb: {100 * ap / ldb:.0f} % (goal >= 70 %)")
PY
