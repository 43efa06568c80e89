#!/usr/bin/env bash
# bad_input.sh - hostile and broken clients against a running node (node 1 of
# 3): plaintext and random bytes on the TLS port, a TCP connection that never
# starts TLS, a client certificate from another CA and none at all, an
# oversize key and value (TOO_LARGE), frames over --max-frame and of 4 GiB,
# a frame declaring a 2^32-element array (and map, and a 4 GiB key), 100000
# nested arrays, unknown and peer-only message types (a raft_msg from a
# client must not reach Raft), a zero-length frame, a frame cut short, and
# clients that pipeline requests and never read the replies. Each must get a
# clear error or a disconnect; a steady client keeps being served during and
# after (lib/bad_input.py); the node's RSS grows by at most 200 MiB. The
# boundary is checked too: a value of exactly --max-value (1 MiB) must be
# accepted.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

# ASan's quarantine would hold up to 256 MiB of freed memory and blur the RSS bound.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=16"
MAX_FRAME=$((16 << 20))
# A put+get round of the steady client, worst case (ASan makes the node ~3x slower).
LATENCY_MAX_S=5
case $BUILD in */san) LATENCY_MAX_S=12 ;; esac
cl_start 3 --max-frame $MAX_FRAME
settle "leaders settle after start"
scripts/gen-certs.sh --dir "$CL_DIR/other-ca" --nodes 1 >/dev/null

python3 tests/integration/lib/bad_input.py "$(node_ep 1)" "$(node_http 1)" "$CL_CERTS" \
    "$CL_DIR/other-ca" "$(node_pid 1)" $MAX_FRAME 200 "$LATENCY_MAX_S" | tee "$CL_DIR/bad_input.out" ||
    fail "some bad input was not handled (see FAIL lines above)"
node_alive 1 || fail "node 1 died"
grep -q '^FAIL' "$CL_DIR/bad_input.out" && fail "FAIL lines above"

# After it all: a normal client through the CLI, and node 1's own view.
cli put after-bad-input fine >/dev/null || fail "put after the bad input"
v=$(cli get after-bad-input 2>/dev/null) || fail "get after the bad input"
[ "$v" = fine ] || fail "get after the bad input returned '$v'"
r=$($TT get "$(node_ep 1)" "$CL_CERTS" after-bad-input strong)
grep -q '"value": "fine"' <<<"$r" || fail "node 1 does not serve after the bad input: $r"
settle "leaders settle"
say "node 1 log: $(grep -c '"level":"warn"' "$(node_log 1)") warnings, e.g.:"
grep '"level":"warn"' "$(node_log 1)" | sed 's/.*"msg":"\(.*\)"}$/  \1/' | sort | uniq -c |
    sort -rn | head -n 12
