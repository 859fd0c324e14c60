#!/usr/bin/env bash
# The fault campaign: every network fault of tests/it/partitions.rs (cut
# routes, partitions, a bridge, flapping links, paused nodes and adapters,
# a node killed during a partition, an adapter's clock ten minutes off) on
# a 3-node JetStream cluster and two adapters, each on a network namespace
# of its own, and the full store of tests/it/disk.rs, each under steady
# traffic through two adapters, for a minute each (or `--secs N`). Prints
# the table of outcomes that docs/faults.md keeps. Needs root (namespaces,
# nftables, a tmpfs mount); installs what it needs, as scripts/test.sh does.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

secs=60
while [[ $# -gt 0 ]]; do
    case "$1" in
        --secs) secs="$2"; shift 2 ;;
        *) echo "usage: scripts/chaos.sh [--secs N]" >&2; exit 2 ;;
    esac
done
if [[ "$(id -u)" != 0 ]]; then
    echo "chaos: network namespaces and nftables need root" >&2
    exit 1
fi

NATS_SERVER_BIN="$(scripts/ensure-nats.sh)"
export NATS_SERVER_BIN
scripts/ensure-netns.sh
scripts/ensure-faketime.sh
cargo build --workspace --all-targets --locked

table="$(mktemp)"
trap 'rm -f "$table"' EXIT
# One fault at a time, so that none steals the other's CPU.
CLAWBUS_FAULT_SECS="$secs" CLAWBUS_CHAOS_TABLE="$table" CLAWBUS_REQUIRE_NETNS=1 \
    cargo nextest run --locked -p clawbus --test it --test-threads 1 --no-fail-fast \
    -E 'test(/^partitions::/) | test(=disk::a_full_store_under_traffic_through_two_adapters_breaks_no_promise)' || rc=$?

echo
echo "Each fault for ${secs} s, 5 sends a second through each of two adapters (3-node R3 cluster in network namespaces, fsync always; the full store on one node)."
echo "Served again: the first send through the affected adapter (A) answered 200, counted from the fault, and from healing."
echo
echo "| fault | 200 | refused | indeterminate | lost | duplicated | unwoken | A served again (from fault) | (from heal) |"
echo "|---|---|---|---|---|---|---|---|---|"
cat "$table"
exit "${rc:-0}"
