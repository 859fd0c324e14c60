#!/usr/bin/env bash
# npm-install.sh DIR SPEC [NPM FLAGS...]: installs the npm package SPEC
# (name@version) into DIR, once. Under a file lock, since tests install in
# parallel; through DIR.partial moved into place, so an interrupted or failed
# install leaves no half tree; and DIR/.installed names what it holds, so a
# caller that waited for the lock finds the other's install. The caller
# checks the result. Everything it prints goes to stderr.
set -euo pipefail
dir="$1"
spec="$2"
shift 2
command -v npm >/dev/null || {
    echo "npm-install: npm is needed to install $spec (apt-get install npm)" >&2
    exit 1
}
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
if [[ "$(cat "$dir/.installed" 2>/dev/null || true)" == "$spec" ]]; then
    exit 0
fi
echo "installing $spec (npm) into $dir" >&2
rm -rf "$dir.partial"
npm install --prefix "$dir.partial" --no-audit --no-fund --loglevel=error "$@" "$spec" >&2 || {
    rm -rf "$dir.partial"
    exit 1
}
echo "$spec" >"$dir.partial/.installed"
rm -rf "$dir"
mv "$dir.partial" "$dir"
