#!/usr/bin/env bash
# `make run`: until the cluster daemon exists (issue 4) this runs a short
# storage benchmark so a new user sees the durable path working.
set -euo pipefail
cd "$(dirname "$0")/.."
BINDIR=${BINDIR:-bin}
dir=$(mktemp -d "${TMPDIR:-/tmp}/trine-run-XXXXXX")
trap 'rm -rf "$dir"' EXIT
echo "trine: the cluster daemon is not built yet; running a 3-second storage benchmark in $dir"
for w in fsync wal; do
    "$BINDIR/trine-bench" storage --workload "$w" --appenders 16 --seconds 3 --dir "$dir"
done
