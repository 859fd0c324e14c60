#!/usr/bin/env bash
# Runs every test: unit tests, integration tests against real nats-server
# processes on free loopback ports, the tests against the real OpenClaw
# gateway (tests/it/openclaw.rs), and the OpenClaw channel plugin's tests.
# Installs nats-server, Node and OpenClaw (versions in scripts/versions)
# under .tools/ if needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NATS_SERVER_BIN="$(scripts/ensure-nats.sh)"
export NATS_SERVER_BIN
# Headless Chromium and chromedriver, for the console's browser test.
scripts/ensure-chromium.sh
# libfaketime, for the tests of an adapter whose clock is off.
scripts/ensure-faketime.sh
# iproute2 and nftables, for the network fault tests (they need root, and
# skip with a message without it; CLAWBUS_REQUIRE_NETNS=1 makes them fail
# instead, as CI does).
scripts/ensure-netns.sh
echo "using $("$NATS_SERVER_BIN" --version)"

# The pinned Node, for the OpenClaw channel plugin's tests and the gateway.
NODE_BIN="$(scripts/ensure-node.sh)"
echo "using node $("$NODE_BIN" --version)"
# The real OpenClaw gateway, for tests/it/openclaw.rs: installed once here, before
# the tests start (they install it themselves too, under a lock, when run on
# their own). Where it cannot be installed those tests say why and skip;
# CLAWBUS_REQUIRE_OPENCLAW=1 makes them fail instead, as CI does.
if openclaw="$(scripts/ensure-openclaw.sh)"; then
    echo "using $("$NODE_BIN" "$(tail -n 1 <<<"$openclaw")" --version)"
else
    echo "cannot install OpenClaw: tests/it/openclaw.rs will skip, or fail with CLAWBUS_REQUIRE_OPENCLAW=1" >&2
fi

# Build everything once (the adapter binary the tests spawn included).
cargo build --workspace --all-targets --locked
rc=0
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast || rc=$?
else
    cargo test --workspace --locked --no-fail-fast || rc=$?
fi

# The channel plugin (deploy/openclaw/plugin): unit tests, and its follower
# and client against a real adapter (the debug build above) and nats-server.
echo "channel plugin tests (node --test deploy/openclaw/plugin/test/*.test.js)"
CLAWBUS_BIN="$PWD/target/debug/clawbus" "$NODE_BIN" --test deploy/openclaw/plugin/test/*.test.js || rc=$?
exit "$rc"
