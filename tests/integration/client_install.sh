#!/usr/bin/env bash
# client_install.sh - the installed client library works for an outside
# program: `make install` into a temporary prefix, build docs/example.c
# against the INSTALLED header and libraries through pkg-config (shared and
# static), check only trine_* symbols are exported, and run the example and
# the installed CLI with no server: both must start and fail cleanly with the
# documented exit code (3: cluster unreachable).
#
# Run from the repo root by tests/run.sh (BUILD, BINDIR set; unused: the
# install always builds the release flavour, whatever suite runs this).
set -euo pipefail
cd "$(dirname "$0")/../.."

tmp=$(mktemp -d "${TMPDIR:-/tmp}/trine-client-install-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
fail() { echo "client_install: FAIL: $*" >&2; exit 1; }

# A parent `make SAN=1 test` exports its flags through MAKEFLAGS; the install
# must be the plain release build.
echo "== make install PREFIX=$prefix"
if ! env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -j2 --no-print-directory SAN=0 FUZZ=0 \
    install PREFIX="$prefix" >"$tmp/install.log" 2>&1; then
    tail -n 40 "$tmp/install.log"
    fail "make install"
fi
for f in include/trine.h lib/libtrine.a lib/libtrine.so lib/libtrine.so.0 \
    lib/pkgconfig/trine.pc bin/trine; do
    [ -e "$prefix/$f" ] || fail "$f not installed"
done

echo "== exported symbols"
bad=$(nm -D --defined-only "$prefix/lib/libtrine.so" | awk '{print $3}' | grep -v '^trine_' |
    grep -v '^$' || true)
[ -z "$bad" ] || fail "libtrine.so exports non-trine_ symbols: $(echo "$bad" | head -5)"
bad=$(nm -g --defined-only "$prefix/lib/libtrine.a" 2>/dev/null | awk 'NF==3 {print $3}' |
    grep -v '^trine_' || true)
[ -z "$bad" ] || fail "libtrine.a exports non-trine_ symbols: $(echo "$bad" | head -5)"
syms=$(nm -D --defined-only "$prefix/lib/libtrine.so")
for s in trine_client_open trine_client_close trine_kv_put trine_kv_get trine_kv_scan \
    trine_cluster_status trine_strerror trine_client_errmsg; do
    grep -q " $s\$" <<<"$syms" || fail "$s not exported"
done

echo "== build docs/example.c against the installed library"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
# The public header stands alone, in strict C99 and in C++.
cc -std=c99 -pedantic -Wall -Wextra -Werror -fsyntax-only $(pkg-config --cflags trine) docs/example.c
if command -v c++ >/dev/null; then
    printf '#include <trine.h>\nint main(void) { return trine_strerror(0) == 0; }\n' >"$tmp/hdr.cc"
    c++ -Wall -Werror -fsyntax-only $(pkg-config --cflags trine) "$tmp/hdr.cc"
fi
# shellcheck disable=SC2046
cc -Wall -Wextra -Werror docs/example.c -o "$tmp/example_shared" \
    $(pkg-config --cflags --libs trine) -Wl,-rpath,"$prefix/lib"
deps=$(ldd "$tmp/example_shared")
grep -q "$prefix/lib/libtrine.so.0" <<<"$deps" ||
    fail "shared example does not use the installed libtrine.so"
# Static libtrine (its dependencies stay shared: Debian ships no static ISA-L).
# shellcheck disable=SC2046
cc -Wall -Wextra -Werror docs/example.c -o "$tmp/example_static" $(pkg-config --cflags trine) \
    $(pkg-config --static --libs trine | sed 's/-ltrine/-l:libtrine.a/')
deps=$(ldd "$tmp/example_static")
if grep -q libtrine <<<"$deps"; then fail "static example links libtrine.so"; fi

echo "== run with no server"
scripts/gen-certs.sh --dir "$tmp/certs" --nodes 1 >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export TRINE_ENDPOINTS=127.0.0.1:$port TRINE_CACERT=$tmp/certs/ca.pem \
    TRINE_CERT=$tmp/certs/client.pem TRINE_KEY=$tmp/certs/client.key
for ex in example_shared example_static; do
    set +e
    timeout 30 "$tmp/$ex" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    set -e
    cat "$tmp/err"
    [ $rc -eq 3 ] || fail "$ex exited $rc, want 3 (cluster unreachable)"
    grep -q "put failed: UNAVAILABLE" "$tmp/err" || fail "$ex: no clean UNAVAILABLE report"
    grep -q "refused" "$tmp/err" || fail "$ex: the report does not say why"
done
# Bad certificate paths: the open fails, exit 2.
set +e
TRINE_CERT=$tmp/nonexistent.pem timeout 30 "$tmp/example_shared" 2>"$tmp/err"
rc=$?
set -e
[ $rc -eq 2 ] || fail "example with a missing certificate exited $rc, want 2"
grep -q "nonexistent.pem" "$tmp/err" || fail "open error does not name the file"

# The installed CLI, same situation.
set +e
timeout 30 "$prefix/bin/trine" --timeout 300 get somekey 2>"$tmp/err"
rc=$?
set -e
cat "$tmp/err"
[ $rc -eq 3 ] || fail "trine get exited $rc, want 3"
"$prefix/bin/trine" --help >/dev/null || fail "trine --help"
echo "client_install: ok"
