#!/usr/bin/env bash
# Runs Docker Compose on deploy/docker-compose.yml, whichever flavour is here:
# the `docker compose` plugin (v2) or the standalone `docker-compose` (v1.29).
#
#   scripts/compose.sh [compose arguments]     e.g. ps, logs node-2, exec node-1 trine cluster status
#
# Project name: $TRINE_COMPOSE_PROJECT (default trine-demo, the one `make demo`
# starts; `make test-docker` uses trine-test).
set -euo pipefail
cd "$(dirname "$0")/.."
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
else
    echo "compose: neither 'docker compose' nor 'docker-compose' is installed" >&2
    echo "  (Debian: apt-get install docker-compose)" >&2
    exit 2
fi
exec "${compose[@]}" -p "${TRINE_COMPOSE_PROJECT:-trine-demo}" -f deploy/docker-compose.yml "$@"
