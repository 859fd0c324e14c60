#!/usr/bin/env bash
# pip-install.sh DIR SPEC: installs the PyPI package SPEC into DIR, a
# virtualenv, or (without the venv module, as on Debian without
# python3-venv) a plain folder. Everything it prints goes to stderr.
set -euo pipefail
dir="$1"
spec="$2"
echo "installing $spec (PyPI) into $dir" >&2
rm -rf "$dir"
if python3 -m venv "$dir" >&2 2>/dev/null; then
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$spec" >&2
else
    python3 -m pip install --quiet --disable-pip-version-check --target "$dir" "$spec" >&2
fi
