#!/usr/bin/env bash
# Makes sure headless Chromium and chromedriver are installed, for the
# console's browser test (tests/it/console.rs). Installs Debian's `chromium`
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

"$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" chromium chromium-driver

if ! { chromium_ok && driver_ok; }; then
    echo "ensure-chromium: chromium or chromedriver still missing after apt-get install" >&2
    exit 1
fi
