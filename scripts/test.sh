#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests against real
# nats-server processes on free loopback ports. Installs nats-server if needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NATS_SERVER_BIN="$(scripts/ensure-nats.sh)"
export NATS_SERVER_BIN
# Headless Chromium and chromedriver, for the console's browser test.
scripts/ensure-chromium.sh
echo "using $("$NATS_SERVER_BIN" --version)"

# Build everything once (the adapter binary the tests spawn included).
cargo build --workspace --all-targets --locked
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
