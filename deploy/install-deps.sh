#!/usr/bin/env bash
# Installs what building and testing Tandem needs on a fresh machine, and nothing that is already
# there: a C compiler (SQLite is compiled from source), the Rust toolchain's clippy and rustfmt,
# cargo-nextest, and Node.js >= 20.10 (the JavaScript client's tests use its WebSocket).
# With --build-only, only what `make run` needs.
set -euo pipefail

build_only=false
[[ "${1:-}" == "--build-only" ]] && build_only=true

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

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

ensure_node
