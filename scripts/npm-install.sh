#!/usr/bin/env bash
# npm-install.sh DIR SPEC [NPM FLAGS...]: installs the npm package SPEC
# (name@version) into DIR, through DIR.partial moved into place, so an
# interrupted or failed install leaves no half tree. The caller holds the
# install's lock and checks the result. Everything it prints goes to stderr.
set -euo pipefail
dir="$1"
spec="$2"
shift 2
rm -rf "$dir.partial"
npm install --prefix "$dir.partial" --no-audit --no-fund --loglevel=error "$@" "$spec" >&2 || {
    rm -rf "$dir.partial"
    exit 1
}
rm -rf "$dir"
mv "$dir.partial" "$dir"
