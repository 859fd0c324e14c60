#!/usr/bin/env bash
# Makes sure `ip` (iproute2) and `nft` (nftables) are installed, for the
# tests that build a network of namespaced hosts and cut it
# (tests/it/partitions.rs). Installs Debian's packages when missing, as root;
# without root it installs nothing: those tests then skip, saying why.
# Idempotent; prints nothing on success.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if have ip && have nft; then
    exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
    exit 0
fi
"$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" iproute2 nftables
