#!/usr/bin/env bash
# ShareDB 7 in memory (no database, no durability): the baseline that services/loadgen/sharedb-bench.sh
# measures next to Tandem. deploy/sharedb/ holds the server (server.mjs) and its pinned npm packages.
#
#   deploy/sharedb.sh install      npm ci once per package-lock.json, into a cache outside the clone
#                                  (~/.cache/tandem/sharedb/HASH, or $TANDEM_CACHE_DIR/sharedb/HASH),
#                                  linked as deploy/sharedb/node_modules; prints the cache folder
#   deploy/sharedb.sh run PORT     installs if needed, then execs the server on 127.0.0.1:PORT (0: a
#                                  free port); it prints "sharedb listening on ws://127.0.0.1:PORT"
#                                  and stops on SIGTERM. The caller's child is node itself.
#
# Needs Node.js >= 20.10 with npm (from Debian's packages when missing). Idempotent.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/sharedb" && pwd)"
cache_root="${TANDEM_CACHE_DIR:-${HOME}/.cache/tandem}"
# Keyed by the lock file, so a fresh clone with the same lock reuses the install and a changed lock
# gets a new one.
cache="${cache_root}/sharedb/$(sha256sum "$dir/package-lock.json" | cut -c1-16)"

usage() {
    sed -n '2,12p' "$0" >&2
    exit 64
}

install() {
    # npm ci writes node_modules/.package-lock.json last: without it the install was cut short.
    if [[ ! -f "$cache/node_modules/.package-lock.json" ]]; then
        ensure_node
        mkdir -p "$cache"
        cp "$dir/package.json" "$dir/package-lock.json" "$cache/"
        say "npm ci into $cache" >&2
        (cd "$cache" && nice -n 19 npm ci --no-audit --no-fund --loglevel=error) >&2
    fi
    # ES modules resolve imports from the script's folder: link the cached packages there.
    if [[ "$(readlink "$dir/node_modules" 2>/dev/null)" != "$cache/node_modules" ]]; then
        # An older link, or a folder left by a hand-run `npm install` there (ignored by git).
        rm -rf "$dir/node_modules"
        ln -s "$cache/node_modules" "$dir/node_modules"
    fi
    echo "$cache"
}

case "${1:-}" in
    install) install ;;
    run)
        [[ $# -eq 2 ]] || usage
        install >/dev/null
        exec node "$dir/server.mjs" "$2"
        ;;
    *) usage ;;
esac
