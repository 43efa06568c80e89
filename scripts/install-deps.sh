#!/usr/bin/env bash
# Installs the Debian packages Trine builds and tests with, only those missing.
# Why each one is chosen: docs/architecture.md, "Dependencies".
#   TRINE_DEPS_OPTIONAL=0 skips the tools only lint/fuzz need.
#   TRINE_DEPS_EXTRA="pkg ..." adds packages a script needs (bench-compare.sh:
#   etcd and Redis); TRINE_DEPS_ONLY="pkg ..." installs just those
#   (docker-base.sh: debootstrap).
set -euo pipefail

required=(
  build-essential pkg-config python3 openssl
  libevent-dev        # event loop, bufferevents over OpenSSL
  libmsgpack-dev      # msgpack-c: wire and WAL payload encoding
  libleveldb-dev      # the state machine's storage engine
  libssl-dev          # mutual TLS, OpenSSL 3
  libcmocka-dev       # unit tests
  libxxhash-dev       # XXH3 for ring tokens and key hashing
  libisal-dev         # ISA-L: hardware CRC-32C for WAL records
  faketime fiu-utils iproute2 iptables  # tests/fault: clock jumps, failed fsync, netns partitions
)
optional=(
  clang libfuzzer-14-dev libclang-rt-14-dev   # fuzz targets, sanitizers
  clang-tidy cppcheck clang-format            # make lint / make format
)

want=("${required[@]}")
[ "${TRINE_DEPS_OPTIONAL:-1}" = 1 ] && want+=("${optional[@]}")
# shellcheck disable=SC2206 # a space-separated package list
[ -n "${TRINE_DEPS_ONLY:-}" ] && want=(${TRINE_DEPS_ONLY})
# shellcheck disable=SC2206 # a space-separated package list
[ -n "${TRINE_DEPS_EXTRA:-}" ] && want+=(${TRINE_DEPS_EXTRA})

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
