#!/usr/bin/env bash
# The demo: nats-server, two adapters on two "hosts", a stand-in OpenClaw
# gateway each; alice on host A sends to bob on host B, bob is woken, and
# the measured send-to-wake times are printed. Pass --hold to keep it all
# running afterwards. Installs nats-server if needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NATS_SERVER_BIN="$(scripts/ensure-nats.sh)"
export NATS_SERVER_BIN
cargo build --release --locked -p clawbus -p clawbus-testkit --bin clawbus --bin clawbus-demo
exec target/release/clawbus-demo "$@"
