#!/usr/bin/env bash
# apt-install.sh PACKAGE...: installs Debian packages with apt-get (through
# `sudo -n` when not root), updating the package lists once if a fresh
# machine has none yet. Prints nothing on success; apt's output goes to
# stderr only on failure.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if ! have apt-get; then
    echo "apt-install: apt-get is not available; install $* by other means" >&2
    exit 1
fi

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    if have sudo; then
        SUDO=(sudo -n)
    else
        echo "apt-install: installing $* needs root (or sudo)" >&2
        exit 1
    fi
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive

install() {
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "$@" >>"$log" 2>&1
}

if ! install "$@"; then
    if ! { "${SUDO[@]}" apt-get update -q >>"$log" 2>&1 && install "$@"; }; then
        cat "$log" >&2
        echo "apt-install: apt-get could not install $*" >&2
        exit 1
    fi
fi
