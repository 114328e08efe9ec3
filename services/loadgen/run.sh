#!/usr/bin/env bash
# Runs tandem-loadgen against a Tandem it starts for the purpose, several times, and prints the
# medians; everything it started is stopped (and its database dropped) however it ends.
#
#   services/loadgen/run.sh cluster    [--runs N] [--out DIR] -- PRESET [LOADGEN FLAGS]
#   services/loadgen/run.sh standalone [--runs N] [--out DIR] -- PRESET [LOADGEN FLAGS]
#
# e.g. services/loadgen/run.sh cluster --runs 3 -- typing --docs 20 --clients 2 --rate 5 --duration 30
#      services/loadgen/run.sh standalone --runs 1 -- stalled-readers --readers 1000
#
# PRESET is one of typing, hot-doc, max, connections, replay, stalled-readers, history, api (see README.md
# beside this script; history needs the cluster: it gets the database as TANDEM_POSTGRES_URL).
# Every process started here is watched (--watch NAME=PID: CPU and RSS in the report).
#
# cluster:    an Apache Kafka broker on an empty data folder (deploy/kafka.sh start; watched as
#             `kafka`, its log kept as logs/kafka.log, its data removed at the end), a fresh database
#             on the PostgreSQL server at 127.0.0.1:5432 (trust auth, user postgres; deploy/postgres.sh
#             provides one; watched as `postgres`, with its backends), 2 sequencers and 2 gateways on free loopback ports; the load generator
#             gets both gateways (--url twice), so the clients of a document sit on different gateways.
# standalone: tandem-standalone on a free port with a fresh data folder.
#
# Release binaries are built first (set TANDEM_NO_BUILD=1 to skip). One system serves all the runs;
# each run writes its own documents. Reports (JSON and HTML), logs and the summary go to DIR (default:
# a new folder under /tmp, printed). The open-file limit is raised to the hard limit for everything
# started here, for the connections preset. Environment: TANDEM_PARTITIONS (16), TANDEM_POSTGRES
# (postgres://postgres@127.0.0.1:5432), TANDEM_SERVICE_LOG (warn).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tandem/target}"
bin="$CARGO_TARGET_DIR/release"
postgres="${TANDEM_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
partitions="${TANDEM_PARTITIONS:-16}"
export TANDEM_LOG="${TANDEM_SERVICE_LOG:-warn}"
# A load test measures the server, not its abuse limits (unless they are set): every simulated
# client connects from this machine (the per-address connection limit would refuse the connections
# and stalled-readers presets past 1,000), and replay and max send an op per round trip, which on
# loopback can exceed the per-connection op rate.
export TANDEM_MAX_CONNECTIONS_PER_IP="${TANDEM_MAX_CONNECTIONS_PER_IP:-100000}"
export TANDEM_OPS_PER_SECOND="${TANDEM_OPS_PER_SECOND:-100000}"
export TANDEM_OPS_BURST="${TANDEM_OPS_BURST:-200000}"

say() { printf 'run.sh: %s\n' "$*" >&2; }
usage() {
    echo "usage: $0 cluster|standalone [--runs N] [--out DIR] -- PRESET [LOADGEN FLAGS]" >&2
    exit 64
}

[[ $# -ge 1 ]] || usage
mode="$1"; shift
[[ "$mode" == cluster || "$mode" == standalone ]] || usage
runs=3
out=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) runs="${2:?}"; shift 2 ;;
        --out) out="${2:?}"; shift 2 ;;
        --) shift; break ;;
        *) usage ;;
    esac
done
[[ $# -ge 1 && "$runs" =~ ^[1-9][0-9]*$ ]] || usage
out="${out:-$(mktemp -d "/tmp/tandem-loadgen-$mode.XXXXXX")}"
mkdir -p "$out/logs"

# --- cleanup: only what this script started, by pid; the database it created -----------------------
pids=()
database=""
data_dir=""
kafka_dir=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    # The broker last (the sequencers leave its consumer group as they stop); it is not a child of
    # this script but of deploy/kafka.sh, which stops it by the pid it recorded in its folder.
    if [[ -n "$kafka_dir" ]]; then
        bash "$root/deploy/kafka.sh" stop "$kafka_dir" >/dev/null 2>&1 || say "could not stop the broker of $kafka_dir"
        cp "$kafka_dir/broker.log" "$out/logs/kafka.log" 2>/dev/null || true
    fi
    if [[ -n "$database" ]]; then
        psql -X -q -d "$postgres/postgres" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 ||
            say "could not drop database $database"
    fi
    [[ -n "$data_dir" ]] && rm -rf "$data_dir"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts NAME (args follow) in the background, logging to $out/logs/NAME.{out,log}; it is watched.
watch=()
start() {
    local name="$1"; shift
    "$@" >"$out/logs/$name.out" 2>"$out/logs/$name.log" &
    pids+=("$!")
    watch+=(--watch "$name=$!")
}

# Waits until NAME prints MARKER and echoes what follows it up to the next '/' or space.
address_of() {
    local name="$1" marker="$2" pid="${pids[-1]}"
    for _ in $(seq 1 600); do
        local line
        line="$(grep -m1 -F "$marker" "$out/logs/$name.out" 2>/dev/null || true)"
        if [[ -n "$line" ]]; then
            line="${line#*"$marker"}"
            echo "${line%%[/ ]*}"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { say "$name exited; see $out/logs/$name.log"; tail -n 20 "$out/logs/$name.log" >&2; exit 1; }
        sleep 0.1
    done
    say "$name did not print '$marker' within 60 s"; exit 1
}

# Prints --insecure-no-auth if BINARY has that flag: the load generator sends no token unless
# TANDEM_TOKEN is set, so without one the edge under test must run without authentication.
no_auth() {
    if [[ -z "${TANDEM_TOKEN:-}" ]] && "$1" --help 2>/dev/null | grep -q -- '--insecure-no-auth'; then
        echo --insecure-no-auth
    fi
}

# A port nothing listens on, below the kernel's ephemeral range (32768 and up), where the source
# port of some connection on this machine could otherwise make the bind fail.
free_port() {
    local port
    for _ in $(seq 1 100); do
        port=$((10000 + RANDOM % 22000))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return 0; }
    done
    say "no free port found"; exit 1
}

ulimit -n "$(ulimit -Hn)" 2>/dev/null || say "could not raise the open-file limit"

# --- build ------------------------------------------------------------------------------------------
if [[ -z "${TANDEM_NO_BUILD:-}" ]]; then
    say "building release binaries"
    (
        cd "$root"
        cargo build --release -p tandem-loadgen
        if [[ "$mode" == cluster ]]; then
            cargo build --release --features service -p tandem-sequencer -p tandem-gateway
        else
            cargo build --release -p tandem-standalone
        fi
    ) >"$out/logs/build.log" 2>&1 || { tail -n 30 "$out/logs/build.log" >&2; say "build failed"; exit 1; }
fi

# --- start the system under test ----------------------------------------------------------------------
urls=()
metrics_urls=()
if [[ "$mode" == cluster ]]; then
    # A fresh folder, so the figures start from an empty broker. deploy/kafka.sh start returns once the
    # broker answers and prints its address last.
    data_dir="$(mktemp -d /tmp/tandem-loadgen-data.XXXXXX)"
    kafka_dir="$data_dir/kafka"
    broker_port="$(free_port)"
    controller_port="$(free_port)"
    while [[ "$controller_port" == "$broker_port" ]]; do controller_port="$(free_port)"; done
    bash "$root/deploy/kafka.sh" start "$kafka_dir" --port "$broker_port" --controller-port "$controller_port" \
        >"$out/logs/kafka.out" || { cat "$out/logs/kafka.out" >&2; say "the broker did not start"; exit 1; }
    broker="$(tail -n 1 "$out/logs/kafka.out")"
    watch+=(--watch "kafka=$(cat "$kafka_dir/broker.pid")")
    # The PostgreSQL server's CPU is in its backends: watched with its children, when it is this
    # machine's (not started here, so it is only sampled; other databases' work counts too).
    if [[ "$postgres" == *"@127.0.0.1:"* || "$postgres" == *"@localhost:"* ]]; then
        watch+=(--watch "postgres=listen:${postgres##*:}+")
    fi
    database="tandem_loadgen_$$_$RANDOM"
    psql -X -q -v ON_ERROR_STOP=1 -d "$postgres/postgres" -c "CREATE DATABASE $database" >/dev/null
    common=(--brokers "$broker" --postgres-url "$postgres/$database" --partitions "$partitions")
    # The history preset writes its document into this database.
    export TANDEM_POSTGRES_URL="$postgres/$database"
    # Gateways authenticate to the sequencers with a token made for this run (in the environment, which
    # the services inherit; not on their command lines).
    TANDEM_SERVICE_TOKEN="loadgen-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
    export TANDEM_SERVICE_TOKEN
    sequencers=()
    for i in 0 1; do
        metrics_port="$(free_port)"
        start "sequencer-$i" "$bin/tandem-sequencer" --grpc-listen 127.0.0.1:0 "${common[@]}" --instance "sequencer-$i" \
            --metrics-listen "127.0.0.1:$metrics_port"
        metrics_urls+=("sequencer-$i=http://127.0.0.1:$metrics_port/metrics")
        address="$(address_of "sequencer-$i" "grpc listening on ")"
        sequencers+=("http://$address")
    done
    for i in 0 1; do
        # shellcheck disable=SC2046 # no_auth prints one word or nothing
        start "gateway-$i" "$bin/tandem-gateway" --listen 127.0.0.1:0 "${common[@]}" --instance "gateway-$i" \
            --sequencer "$(IFS=,; echo "${sequencers[*]}")" $(no_auth "$bin/tandem-gateway")
        address="$(address_of "gateway-$i" "listening on http://")"
        urls+=(--url "ws://$address/v1/ws")
        metrics_urls+=("gateway-$i=http://$address/metrics")
    done
else
    data_dir="$(mktemp -d /tmp/tandem-loadgen-data.XXXXXX)"
    # shellcheck disable=SC2046 # no_auth prints one word or nothing
    start standalone "$bin/tandem-standalone" --listen 127.0.0.1:0 --data-dir "$data_dir/store" \
        $(no_auth "$bin/tandem-standalone")
    address="$(address_of standalone "listening on http://")"
    urls+=(--url "ws://$address/v1/ws")
fi
say "$mode up: ${urls[*]}"

# --- run -----------------------------------------------------------------------------------------------
preset="$1"; shift
reports=()
status=0
for i in $(seq 1 "$runs"); do
    say "run $i of $runs: tandem-loadgen $preset ${urls[*]} $* --json $out/run-$i.json --html $out/run-$i.html"
    "$bin/tandem-loadgen" "$preset" "${urls[@]}" "${watch[@]}" "$@" --json "$out/run-$i.json" \
        --html "$out/run-$i.html" --label "$mode" | tee "$out/run-$i.txt" || status=$?
    [[ -f "$out/run-$i.json" ]] && reports+=("$out/run-$i.json")
done
if [[ ${#reports[@]} -gt 0 ]]; then
    "$bin/tandem-loadgen" summarize "${reports[@]}" | tee "$out/summary.md"
fi
# Where an op's time goes in the cluster, from the services' own histograms over all the runs:
# the broker's share (appending to tandem.ops, publishing to tandem.events) against Postgres's and
# the rest. Means in milliseconds; each line of metrics-NAME.txt has the full summaries.
stage_mean() { # FILE METRIC: sum/count of a Prometheus summary, in ms
    awk -v m="$2" '$1 == m"_sum" {s += $2} $1 == m"_count" {c += $2} END {if (c > 0) printf "%.2f", 1000 * s / c; else printf "-"}' "$1"
}
if [[ ${#metrics_urls[@]} -gt 0 ]]; then
    for entry in "${metrics_urls[@]}"; do
        curl -fsS --max-time 5 "${entry#*=}" >"$out/metrics-${entry%%=*}.txt" 2>/dev/null || true
    done
    cat "$out"/metrics-sequencer-*.txt >"$out/metrics-sequencers.all" 2>/dev/null || true
    cat "$out"/metrics-gateway-*.txt >"$out/metrics-gateways.all" 2>/dev/null || true
    printf 'stages (mean ms; submit per op, append per gRPC request, commit per batch, publish per publish): gateway submit %s (broker append %s), commit %s, publish %s\n' \
        "$(stage_mean "$out/metrics-gateways.all" tandem_gateway_submit_seconds)" \
        "$(stage_mean "$out/metrics-sequencers.all" tandem_sequencer_ingress_append_seconds)" \
        "$(stage_mean "$out/metrics-sequencers.all" tandem_sequencer_commit_seconds)" \
        "$(stage_mean "$out/metrics-sequencers.all" tandem_sequencer_publish_seconds)" | tee "$out/stages.txt"
fi
say "reports, logs and summary in $out"
exit "$status"
