#!/usr/bin/env bash
# Makes sure headless Chromium and chromedriver are installed, for the
# console's browser test (tests/console.rs). Installs Debian's `chromium`
# and `chromium-driver` with apt-get when either is missing; idempotent.
# Prints nothing on success (apt's output goes to stderr only on failure).
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

chromium_ok() {
    [[ -n "${CHROMIUM:-}" && -x "${CHROMIUM}" ]] || [[ -x /usr/bin/chromium ]] || have chromium
}
driver_ok() {
    [[ -n "${CHROMEDRIVER:-}" && -x "${CHROMEDRIVER}" ]] || have chromedriver
}

if chromium_ok && driver_ok; then
    exit 0
fi

if ! have apt-get; then
    echo "ensure-chromium: chromium or chromedriver is missing and apt-get is not available;" \
        "install Chromium and chromedriver, or set CHROMIUM and CHROMEDRIVER" >&2
    exit 1
fi

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    if have sudo; then
        SUDO=(sudo -n)
    else
        echo "ensure-chromium: installing chromium needs root (or sudo)" >&2
        exit 1
    fi
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive

install() {
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends chromium chromium-driver >>"$log" 2>&1
}

# A fresh machine may not have package lists yet: update once, then retry.
if ! install; then
    if ! { "${SUDO[@]}" apt-get update -q >>"$log" 2>&1 && install; }; then
        cat "$log" >&2
        echo "ensure-chromium: apt-get could not install chromium and chromium-driver" >&2
        exit 1
    fi
fi

if ! { chromium_ok && driver_ok; }; then
    cat "$log" >&2
    echo "ensure-chromium: chromium or chromedriver still missing after apt-get install" >&2
    exit 1
fi
