#!/usr/bin/env bash
# Makes sure libfaketime's preload library is installed, for the tests that
# run an adapter under a skewed clock (tests/it/clock.rs). Installs Debian's
# `libfaketime` when it is missing; idempotent. Prints nothing on success.
set -euo pipefail

# The tests find the library through dpkg, as this does.
library_ok() {
    dpkg -L libfaketime 2>/dev/null | grep -q '/libfaketime\.so\.1$'
}

if library_ok; then
    exit 0
fi
"$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" libfaketime
if ! library_ok; then
    echo "ensure-faketime: libfaketime.so.1 still missing after apt-get install" >&2
    exit 1
fi
