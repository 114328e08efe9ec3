#!/usr/bin/env bash
# Installs what building and testing Tandem needs on a fresh machine, and nothing that is already
# there: a C compiler (SQLite is compiled from source), the Rust toolchain's clippy and rustfmt,
# cargo-nextest, and Node.js >= 20.10 (the JavaScript client's tests use its WebSocket).
# With --build-only, only what `make run` needs.
set -euo pipefail

build_only=false
[[ "${1:-}" == "--build-only" ]] && build_only=true

say() { printf 'install-deps: %s\n' "$*"; }
apt_updated=false
apt_install() {
    if ! command -v apt-get >/dev/null; then
        say "cannot install $* (no apt-get); install it and run again"; exit 1
    fi
    local sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
    if ! $apt_updated; then $sudo apt-get update -qq; apt_updated=true; fi
    say "installing $*"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

if ! command -v cargo >/dev/null; then
    say "cargo is missing: install Rust (https://rustup.rs, toolchain >= 1.85) and run again"; exit 1
fi
command -v cc >/dev/null || apt_install build-essential
$build_only && exit 0

if ! cargo clippy --version >/dev/null 2>&1 || ! cargo fmt --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null; then
        rustup component add clippy rustfmt
    else
        say "cargo clippy and cargo fmt are needed (rustup component add clippy rustfmt)"; exit 1
    fi
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest from crates.io (a few minutes, once)"
    cargo install --locked cargo-nextest
fi

node_ok() {
    command -v node >/dev/null || return 1
    node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=10)?0:1)'
}
if ! node_ok; then
    apt_install nodejs
    node_ok || { say "Node.js >= 20.10 is needed for the JavaScript client tests; found $(node --version 2>/dev/null || echo none)"; exit 1; }
fi
