#!/usr/bin/env bash
# Makes sure the Docker base image the deploy/ Dockerfiles start FROM exists.
#
#   scripts/docker-base.sh [--tag debian:bookworm-slim] [--mirror URL] [--rebuild]
#
# 1. The tag is present locally: nothing to do.
# 2. `docker pull` works (a normal machine): use Docker's official image.
# 3. No registry reachable: build an equivalent image from Debian's own
#    packages with `debootstrap --variant=minbase bookworm`, trimmed like the
#    official slim image (no docs, man pages or locales; apt keeps no caches),
#    and `docker import` it under the same tag. The root file system is kept
#    as a tarball in $TRINE_DOCKER_CACHE (default ~/.cache/trine/docker), so
#    after `docker rmi` the import takes seconds; --rebuild ignores both.
# Needs root (or sudo) for debootstrap; installs debootstrap if missing.
set -euo pipefail
tag=debian:bookworm-slim
mirror=${TRINE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
rebuild=0
cache=${TRINE_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trine/docker}
while [ $# -gt 0 ]; do
    case $1 in
    --tag) tag=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --rebuild) rebuild=1; shift ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "docker-base: unknown argument $1" >&2; exit 2 ;;
    esac
done
say() { echo "docker-base: $*" >&2; }

if [ $rebuild = 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
    say "$tag present"
    exit 0
fi
if [ $rebuild = 0 ] && timeout 60 docker pull -q "$tag" >/dev/null 2>&1; then
    say "$tag pulled"
    exit 0
fi

suite=${tag#*:}
suite=${suite%%-*} # bookworm-slim -> bookworm
tarball=$cache/$suite-slim-rootfs.tar
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

if [ $rebuild = 1 ] || [ ! -s "$tarball" ]; then
    TRINE_DEPS_ONLY=debootstrap "$(dirname "$0")/install-deps.sh"
    root=$(mktemp -d "${TMPDIR:-/tmp}/trine-rootfs.XXXXXX")
    trap '$SUDO rm -rf "$root"' EXIT
    say "no registry: building $tag with debootstrap from $mirror (about a minute)"
    t0=$(date +%s)
    mkdir -p "$cache/debs"
    $SUDO debootstrap --variant=minbase --cache-dir="$cache/debs" "$suite" "$root" "$mirror" \
        >"$cache/debootstrap.log" 2>&1 || {
        tail -n 20 "$cache/debootstrap.log" >&2
        say "debootstrap failed (log: $cache/debootstrap.log)"
        exit 1
    }
    # What the official slim image does (github.com/debuerreotype/debuerreotype):
    # dpkg skips docs/man/locales, apt keeps no caches and no translations.
    $SUDO tee "$root/etc/dpkg/dpkg.cfg.d/docker" >/dev/null <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
force-unsafe-io
EOF
    $SUDO tee "$root/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::GzipIndexes "true";
Acquire::Languages "none";
APT::Install-Recommends "false";
Apt::AutoRemove::SuggestsImportant "false";
EOF
    $SUDO rm -f "$root/etc/apt/sources.list"
    $SUDO tee "$root/etc/apt/sources.list.d/debian.sources" >/dev/null <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$root/usr/sbin/policy-rc.d" >/dev/null
    $SUDO chmod 755 "$root/usr/sbin/policy-rc.d"
    $SUDO find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    $SUDO find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    $SUDO rm -rf "$root"/usr/share/{man,groff,info,lintian,linda,locale}/* \
        "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/* \
        "$root"/tmp/* "$root"/var/tmp/*
    : | $SUDO tee "$root/etc/resolv.conf" "$root/etc/hostname" >/dev/null
    mkdir -p "$cache"
    $SUDO tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
    $SUDO chown "$(id -u):$(id -g)" "$tarball.tmp"
    mv "$tarball.tmp" "$tarball"
    say "root file system built in $(($(date +%s) - t0)) s, cached in $tarball"
fi

docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    -m "debootstrap --variant=minbase $suite (scripts/docker-base.sh)" \
    "$tarball" "$tag" >/dev/null
say "$tag imported ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
