#!/usr/bin/env bash
# scripts/node-subset.sh <major>
# The lab on another Node.js version: a copy of this tree (the files git knows, committed or not)
# in the cache, `npm ci` there with that Node (better-sqlite3 compiles for its ABI), then the
# subset of the suite that differs by version: the CLI, the sandbox (hostile suite, both modes;
# the permission flags changed between 20 and 24) and one exercise of each broker.
set -euo pipefail
cd "$(dirname "$0")/.."
major="${1:?usage: scripts/node-subset.sh <22|24>}"
cache="${MSGLAB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/msglab}"
copy="$cache/lab-node$major"
rm -rf "$copy" && mkdir -p "$copy"
git ls-files -co --exclude-standard -z | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$copy"
cd "$copy"
scripts/with-node.sh "$major" npm ci --no-audit --no-fund --loglevel=error
scripts/with-node.sh "$major" node --version
MSGLAB_EXERCISES="${MSGLAB_EXERCISES:-retry-backoff,event-store-snapshots,priority-queue,transactional-producer}" \
  scripts/with-node.sh "$major" npx vitest run test/cli.test.ts test/hostile.test.ts test/self-check.test.ts src/host
