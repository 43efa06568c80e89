#!/usr/bin/env bash
# Generates a development CA plus node and client certificates for mutual TLS.
#
#   scripts/gen-certs.sh [--dir DIR] [--nodes N] [--hosts h1,h2,...] [--force]
#
# DIR (default run/certs) gets:
#   ca.pem ca.key                 the dev CA (EC P-256, 10 years)
#   node-<i>.pem node-<i>.key     CN=node-<i>, SAN DNS:node-<i>, DNS:localhost,
#                                 IP:127.0.0.1 (+ the --hosts names), usable as
#                                 TLS server and client (peers dial each other)
#   client.pem client.key         CN=client, client auth only
# A node's identity is its CN "node-<id>": peers check it against the id they
# expect, so a certificate cannot stand in for another node. Existing files are
# kept unless --force. These are for development: keys are unencrypted.
set -euo pipefail
dir=run/certs
nodes=5
hosts=""
force=0
while [ $# -gt 0 ]; do
    case $1 in
    --dir) dir=$2; shift 2 ;;
    --nodes) nodes=$2; shift 2 ;;
    --hosts) hosts=$2; shift 2 ;;
    --force) force=1; shift ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gen-certs: unknown argument $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$dir"
cd "$dir"
umask 077

if [ $force = 1 ] || [ ! -f ca.pem ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
        -out ca.pem -days 3650 -subj "/CN=trine-dev-ca" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    force=1 # a new CA invalidates every old leaf
fi

leaf() { # name san extendedKeyUsage
    local name=$1 san=$2 eku=$3
    [ $force = 0 ] && [ -f "$name.pem" ] && return 0
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$name.key" \
        -out "$name.csr" -subj "/CN=$name" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=%s\n%s' \
        "$eku" "${san:+subjectAltName=$san}" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
        -extfile "$name.ext" -out "$name.pem" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

for i in $(seq 1 "$nodes"); do
    san="DNS:node-$i,DNS:localhost,IP:127.0.0.1"
    for h in ${hosts//,/ }; do
        if [[ $h =~ ^[0-9.]+$ ]]; then san="$san,IP:$h"; else san="$san,DNS:$h"; fi
    done
    leaf "node-$i" "$san" "serverAuth,clientAuth"
done
leaf client "" "clientAuth"
chmod 644 ./*.pem
echo "gen-certs: CA, $nodes node certificates and a client certificate in $(pwd)"
