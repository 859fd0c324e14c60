#!/usr/bin/env bash
# Prints two lines: the path of the pinned Node.js binary
# (scripts/ensure-node.sh) and of the pinned OpenClaw's openclaw.mjs
# (OPENCLAW_VERSION in scripts/versions), installing them first if needed:
# openclaw from the npm registry into .tools/openclaw-<version>/ in this
# repository, once (about 650 MB). tests/it/openclaw.rs runs this before it
# starts a gateway; scripts/test.sh runs it once before the tests.
#
# The install is scripts/npm-install.sh's. Install scripts are
# skipped: the gateway needs none, and skipping them makes
# every npm version install the same tree.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=versions
source "$ROOT/scripts/versions"
NODE="$("$ROOT/scripts/ensure-node.sh")"
DIR="$ROOT/.tools/openclaw-$OPENCLAW_VERSION"
MJS="$DIR/node_modules/openclaw/openclaw.mjs"
# npm runs under the pinned Node, through PATH
export PATH="$(dirname "$NODE"):$PATH"

installed() { [[ "$(node "$MJS" --version 2>/dev/null || true)" == "OpenClaw $OPENCLAW_VERSION"* ]]; }

installed || "$ROOT/scripts/npm-install.sh" "$DIR" "openclaw@$OPENCLAW_VERSION" --ignore-scripts
installed || { echo "ensure-openclaw: openclaw $OPENCLAW_VERSION did not install" >&2; exit 1; }
echo "$NODE"
echo "$MJS"
