#!/usr/bin/env bash
# Instructions per op on the hot path, counted exactly (callgrind), for comparing builds where CPU
# time is too noisy: tandem-standalone runs under valgrind's callgrind with counting off; a fixed
# workload (instructions/drive.mjs: one writer sending OPS one-character inserts, each after the
# previous ack, so each op is one commit, and READERS connections receiving every version) connects,
# counting is switched on, the ops run, the counters are dumped. Prints the user-space instructions
# per op of the whole server (kernel work, syscalls and fsync included only as far as their user-space
# side) and the functions with the most inclusive instructions.
#
#   services/loadgen/instructions.sh [--ops N] [--readers R] [--out DIR]     (defaults 2000, 4)
#
# valgrind comes from Debian's packages (installed when missing), Node.js drives the load.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=deploy/lib.sh
source "$root/deploy/lib.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tandem/target}"
ops=2000
readers=4
out=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --ops) ops="${2:?}"; shift 2 ;;
        --readers) readers="${2:?}"; shift 2 ;;
        --out) out="${2:?}"; shift 2 ;;
        *) echo "usage: $0 [--ops N] [--readers R] [--out DIR]" >&2; exit 64 ;;
    esac
done
out="${out:-$(mktemp -d /tmp/tandem-instructions.XXXXXX)}"
mkdir -p "$out"
command -v valgrind >/dev/null || apt_install valgrind
ensure_node
[[ -n "${TANDEM_NO_BUILD:-}${TANDEM_STANDALONE_BIN:-}" ]] || cargo build --release --locked -p tandem-standalone >&2
# TANDEM_STANDALONE_BIN counts another build (e.g. a copy kept from before a change).
bin="${TANDEM_STANDALONE_BIN:-$CARGO_TARGET_DIR/release/tandem-standalone}"

server=""
driver=""
cleanup() {
    [[ -n "$driver" ]] && kill "$driver" 2>/dev/null || true
    [[ -n "$server" ]] && { kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
    rm -rf "$out/data"
    if [[ -n "${fifo:-}" ]]; then rm -f "$fifo"; fi
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
# One thread of valgrind runs all of the server's threads, serialised: the count does not depend on
# scheduling, only on the work. Instrumentation starts switched off (the start-up is not the hot path, and runs faster so).
TANDEM_LOG=warn TANDEM_OPS_PER_SECOND=1000000 TANDEM_OPS_BURST=2000000 \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/callgrind.out.%p" \
    "$bin" --listen "127.0.0.1:$port" --data-dir "$out/data" --insecure-no-auth >"$out/server.log" 2>&1 &
server=$!
for _ in $(seq 1 600); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

fifo="$out/go"
mkfifo "$fifo"
node --experimental-websocket "$root/services/loadgen/instructions/drive.mjs" \
    "ws://127.0.0.1:$port/v1/ws" "$ops" "$readers" <"$fifo" >"$out/driver.log" 2>&1 &
driver=$!
exec 3>"$fifo"
for _ in $(seq 1 600); do grep -q ready "$out/driver.log" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$out/driver.log" || { cat "$out/driver.log" >&2; echo "the driver did not connect" >&2; exit 1; }
callgrind_control --instr=on "$server" >/dev/null
echo go >&3
wait "$driver" || { cat "$out/driver.log" >&2; exit 1; }
driver=""
callgrind_control --dump "$server" >/dev/null
callgrind_control --instr=off "$server" >/dev/null
kill -TERM "$server"; wait "$server" 2>/dev/null || true
server=""

# The dump made while counting: the file with the most instructions.
best="" best_ir=0
for f in "$out"/callgrind.out.*; do
    ir="$(awk '/^summary:/ {print $2}' "$f" | head -n 1)"
    [[ -n "$ir" && "$ir" -gt "$best_ir" ]] && { best="$f"; best_ir="$ir"; }
done
[[ -n "$best" ]] || { echo "no callgrind dump in $out" >&2; exit 1; }
printf 'instructions per op: %s (%s instructions, %s ops, %s readers; callgrind, user space only)\n' \
    "$((best_ir / ops))" "$best_ir" "$ops" "$readers"
callgrind_annotate --inclusive=yes "$best" 2>/dev/null | sed -n '/^Ir/,$p' | head -n 40 >"$out/top.txt" || true
echo "top functions (inclusive): $out/top.txt"
