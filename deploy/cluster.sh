#!/usr/bin/env bash
# A distributed Tandem on loopback, for trying the distributed mode by hand: PostgreSQL, an Apache
# Kafka broker (deploy/kafka.sh), 2 sequencers, 2 gateways and the analytics consumer of the events
# topic (docs/ANALYTICS.md), each service in the background with a pidfile and a log in
# .tandem/cluster/ of this clone (the broker's, with its data, in .tandem/cluster/kafka/).
#
#   deploy/cluster.sh up       install what is missing, build, start everything, print the URLs
#   deploy/cluster.sh down     stop what `up` started (only the processes in the pidfiles)
#   deploy/cluster.sh status   list what runs
#
# Ports (loopback only), each overridable from the environment:
#   TANDEM_BROKER_PORT=9092        TANDEM_BROKER_CONTROLLER_PORT=9093  (Kafka: clients, KRaft)
#   TANDEM_SEQUENCER_A_PORT=50051  TANDEM_SEQUENCER_B_PORT=50052   (gRPC)
#   TANDEM_GATEWAY_A_PORT=8081     TANDEM_GATEWAY_B_PORT=8082      (HTTP and WebSocket)
#   TANDEM_ANALYTICS_PORT=9464                                     (analytics /metrics, /healthz, /readyz)
# Kafka partitions: TANDEM_CLUSTER_PARTITIONS=16.
# The event log is database TANDEM_CLUSTER_DATABASE (default `tandem`) of the PostgreSQL server on
# 127.0.0.1:5432 that deploy/postgres.sh provides; `down` never stops or changes that server. The
# analytics consumer keeps its tables (analytics_*) in the same database and reads tandem.events in
# its own consumer group, tandem-analytics.
# The broker keeps its data in .tandem/cluster/kafka/, so its topics and their records survive
# `down`/`up`, as the documents in Postgres do. The topics keep the partition count they were created
# with: to change TANDEM_CLUSTER_PARTITIONS, `down` and remove .tandem/cluster/kafka/ (an empty broker
# at the next `up`).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="$root/.tandem/cluster"
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/tandem/target}"
sequencer_bin="$target_dir/release/tandem-sequencer"
gateway_bin="$target_dir/release/tandem-gateway"
analytics_bin="$target_dir/release/tandem-analytics"

broker_port="${TANDEM_BROKER_PORT:-9092}"
controller_port="${TANDEM_BROKER_CONTROLLER_PORT:-9093}"
kafka_dir="$state/kafka"
sequencer_a_port="${TANDEM_SEQUENCER_A_PORT:-50051}"
sequencer_b_port="${TANDEM_SEQUENCER_B_PORT:-50052}"
gateway_a_port="${TANDEM_GATEWAY_A_PORT:-8081}"
gateway_b_port="${TANDEM_GATEWAY_B_PORT:-8082}"
analytics_port="${TANDEM_ANALYTICS_PORT:-9464}"
database="${TANDEM_CLUSTER_DATABASE:-tandem}"
partitions="${TANDEM_CLUSTER_PARTITIONS:-16}"
pg_host=127.0.0.1
pg_port=5432
postgres_url="postgres://postgres@${pg_host}:${pg_port}/${database}"
ready_timeout=60 # seconds each service may take to print its ready line

# Stop order: gateways first (they use the sequencers), with the analytics consumer (it uses nothing
# but the broker and Postgres); the broker last (the sequencers and the analytics consumer leave
# their consumer groups when they stop).
services=(gateway-a gateway-b analytics sequencer-a sequencer-b kafka)

usage() {
    echo "usage: $0 up | down | status" >&2
    exit 64
}

port_of() {
    case "$1" in
        kafka) echo "$broker_port" ;;
        sequencer-a) echo "$sequencer_a_port" ;;
        sequencer-b) echo "$sequencer_b_port" ;;
        gateway-a) echo "$gateway_a_port" ;;
        gateway-b) echo "$gateway_b_port" ;;
        analytics) echo "$analytics_port" ;;
    esac
}

# The broker's pidfile and log are those deploy/kafka.sh keeps in its folder.
pidfile_of() { if [[ "$1" == kafka ]]; then echo "$kafka_dir/broker.pid"; else echo "$state/$1.pid"; fi; }
log_of() { if [[ "$1" == kafka ]]; then echo "$kafka_dir/broker.log"; else echo "$state/$1.log"; fi; }

# Every port `up` binds, one a line: WHAT PORT VARIABLE (the environment variable that sets it).
port_table() {
    echo "kafka $broker_port TANDEM_BROKER_PORT"
    echo "kafka-controller $controller_port TANDEM_BROKER_CONTROLLER_PORT"
    echo "sequencer-a $sequencer_a_port TANDEM_SEQUENCER_A_PORT"
    echo "sequencer-b $sequencer_b_port TANDEM_SEQUENCER_B_PORT"
    echo "gateway-a $gateway_a_port TANDEM_GATEWAY_A_PORT"
    echo "gateway-b $gateway_b_port TANDEM_GATEWAY_B_PORT"
    echo "analytics $analytics_port TANDEM_ANALYTICS_PORT"
}

# The pid recorded for SERVICE, if its pidfile holds a number.
recorded_pid() {
    local pidfile pid
    pidfile="$(pidfile_of "$1")"
    [[ -f "$pidfile" ]] || return 1
    pid="$(head -n 1 "$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    echo "$pid"
}

# Whether PID is alive and is the program `up` started as SERVICE: a pid the kernel recycled for
# another program is never ours.
is_ours() {
    local service=$1 pid=$2 argv
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    mapfile -d '' -t argv <"/proc/$pid/cmdline" 2>/dev/null || return 1
    [[ ${#argv[@]} -gt 0 ]] || return 1
    case "$service" in
        kafka)
            # The JVM deploy/kafka.sh started on this folder's broker configuration.
            [[ "${argv[0]}" == java || "${argv[0]}" == */java ]] &&
                [[ " ${argv[*]} " == *" kafka.Kafka $kafka_dir/server.properties "* ]]
            ;;
        sequencer-*)
            [[ "${argv[0]}" == */tandem-sequencer && " ${argv[*]} " == *" --instance $service "* ]]
            ;;
        gateway-*)
            [[ "${argv[0]}" == */tandem-gateway && " ${argv[*]} " == *" --instance $service "* ]]
            ;;
        analytics)
            [[ "${argv[0]}" == */tandem-analytics && " ${argv[*]} " == *" --instance $service "* ]]
            ;;
        *) return 1 ;;
    esac
}

# The pid of SERVICE if it runs from this folder's pidfile.
running_pid() {
    local pid
    pid="$(recorded_pid "$1")" || return 1
    is_ours "$1" "$pid" || return 1
    echo "$pid"
}

# Whether something accepts connections on 127.0.0.1:PORT.
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Who listens on PORT, when ss can tell.
port_owner() {
    command -v ss >/dev/null || return 0
    ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(.*)' | head -n 1 || true
}

check_port() {
    local service=$1 port=$2
    [[ "$port" =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) || {
        say "port of $service is not a port number: '$port'"; exit 1
    }
}

# Sends SIGTERM to SERVICE's recorded process if it is ours, SIGKILL after 25 s (a gateway drains its
# clients for --drain-grace-seconds, 10 by default, before it exits); removes the pidfile.
# The broker is stopped by deploy/kafka.sh (a controlled shutdown, SIGKILL after 30 s).
stop_service() {
    local service=$1 pid pidfile
    pidfile="$(pidfile_of "$service")"
    [[ -f "$pidfile" ]] || return 0
    if [[ "$service" == kafka ]] && pid="$(running_pid kafka)"; then
        "$root/deploy/kafka.sh" stop "$kafka_dir"
    elif pid="$(running_pid "$service")"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 250); do
            is_ours "$service" "$pid" || break
            sleep 0.1
        done
        if is_ours "$service" "$pid"; then
            say "$service (pid $pid) still runs 25 s after SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for _ in $(seq 1 20); do
                is_ours "$service" "$pid" || break
                sleep 0.1
            done
        fi
        say "stopped $service (pid $pid)"
    else
        say "$service is not running (stale pidfile removed)"
    fi
    rm -f "$pidfile"
}

# Stops the services of one group at once (SIGTERM to all, then waits for each).
stop_group() {
    local service pids=()
    for service in "$@"; do
        stop_service "$service" &
        pids+=($!)
    done
    local pid
    for pid in "${pids[@]}"; do wait "$pid" || true; done
}

down() {
    if ! compgen -G "$state/*.pid" >/dev/null && [[ ! -f "$(pidfile_of kafka)" ]]; then
        say "no cluster from $root is running (no pidfiles in $state)"
        return 0
    fi
    stop_group gateway-a gateway-b analytics
    stop_group sequencer-a sequencer-b
    stop_group kafka
    say "cluster stopped (logs kept in $state; PostgreSQL on $pg_host:$pg_port left as it was)"
}

status() {
    local service pid any=false
    for service in kafka sequencer-a sequencer-b gateway-a gateway-b analytics; do
        if pid="$(running_pid "$service")"; then
            any=true
            case "$service" in
                gateway-*) printf '%-12s running  pid %-8s http://127.0.0.1:%s/\n' "$service" "$pid" "$(port_of "$service")" ;;
                analytics) printf '%-12s running  pid %-8s http://127.0.0.1:%s/metrics (group tandem-analytics)\n' "$service" "$pid" "$(port_of "$service")" ;;
                kafka)
                    # The ports the broker was started with (deploy/kafka.sh records them).
                    local ports=("$broker_port" "$controller_port")
                    [[ -f "$kafka_dir/ports" ]] && read -r -a ports <"$kafka_dir/ports"
                    printf '%-12s running  pid %-8s 127.0.0.1:%s (controller %s; data %s)\n' "$service" "$pid" \
                        "${ports[0]}" "${ports[1]:-?}" "$kafka_dir/data" ;;
                *) printf '%-12s running  pid %-8s 127.0.0.1:%s\n' "$service" "$pid" "$(port_of "$service")" ;;
            esac
        elif [[ -f "$(pidfile_of "$service")" ]]; then
            printf '%-12s stopped  (stale pidfile; log %s)\n' "$service" "$(log_of "$service")"
        else
            printf '%-12s not started\n' "$service"
        fi
    done
    if $any; then echo "logs: $state/"; fi
}

# Starts SERVICE (a sequencer, a gateway or the analytics consumer) in the background and waits for
# READY in its output.
start_service() {
    local service=$1 ready=$2 bin=$3
    shift 3
    local pidfile log pid
    pidfile="$(pidfile_of "$service")"
    log="$(log_of "$service")"
    TANDEM_LOG="${TANDEM_LOG:-info}" nohup "$bin" "$@" --instance "$service" >"$log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$pidfile"
    for _ in $(seq 1 $((ready_timeout * 10))); do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "$service exited at start; the end of its log ($log):"
            tail -n 20 "$log" >&2
            return 1
        fi
        if grep -q -- "$ready" "$log"; then
            say "$service ready: $(grep -m 1 -- "$ready" "$log" | sed 's/\x1b\[[0-9;]*m//g') (pid $pid)"
            return 0
        fi
        sleep 0.1
    done
    say "$service did not print '$ready' within $ready_timeout s; the end of its log ($log):"
    tail -n 20 "$log" >&2
    return 1
}

# Database DATABASE on the local server, created when missing.
ensure_database() {
    [[ "$database" =~ ^[a-z_][a-z0-9_]*$ ]] || { say "bad database name '$database'"; exit 1; }
    local psql=(psql -X -w -h "$pg_host" -p "$pg_port" -U postgres -d postgres -v ON_ERROR_STOP=1 -Atq)
    if [[ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$database'")" == 1 ]]; then
        say "database $database exists"
    else
        "${psql[@]}" -c "CREATE DATABASE $database"
        say "created database $database"
    fi
}

up() {
    # Refuse early, before installing or building anything.
    local service port pid running=()
    for service in "${services[@]}"; do
        if pid="$(running_pid "$service")"; then running+=("$service (pid $pid)"); fi
    done
    if ((${#running[@]} > 0)); then
        say "a cluster from $root is already running: ${running[*]}; stop it with 'make cluster-down'"
        exit 1
    fi
    [[ "$partitions" =~ ^[1-9][0-9]*$ ]] || { say "TANDEM_CLUSTER_PARTITIONS must be a positive number, not '$partitions'"; exit 1; }
    local seen=" " what variable
    while read -r what port variable; do
        check_port "$what" "$port"
        if [[ "$seen" == *" $port "* ]]; then say "port $port is given to two services"; exit 1; fi
        seen+="$port "
        if port_taken "$port"; then
            say "port $port (for $what) is taken by another program $(port_owner "$port"); free it or set $variable"
            exit 1
        fi
    done < <(port_table)

    "$root/deploy/install-deps.sh" --build-only
    "$root/deploy/postgres.sh"
    "$root/deploy/kafka.sh" install >/dev/null
    say "building tandem-sequencer, tandem-gateway and tandem-analytics (release; CARGO_TARGET_DIR=$target_dir)"
    (cd "$root" && CARGO_TARGET_DIR="$target_dir" cargo build --release --locked \
        --features tandem-sequencer/service,tandem-gateway/service \
        -p tandem-sequencer -p tandem-gateway -p tandem-analytics)
    ensure_database

    mkdir -p "$state"
    # Stale pidfiles only: none of them is a running service (checked above).
    rm -f "$state"/*.pid "$(pidfile_of kafka)"
    # From here on, a failure (or Ctrl-C) stops whatever this run started.
    starting=true
    trap 'exit 130' INT TERM
    trap 'rc=$?; if $starting; then say "start failed: stopping what was started"; down >&2; fi; exit $rc' EXIT
    # The ports again: the build may have taken minutes.
    while read -r what port variable; do
        if port_taken "$port"; then
            say "port $port (for $what) was taken while building $(port_owner "$port")"; exit 1
        fi
    done < <(port_table)
    # On the data of the last `up`, if any: a restart of the same broker. Prints its address last.
    "$root/deploy/kafka.sh" start "$kafka_dir" --port "$broker_port" --controller-port "$controller_port"
    # Gateways authenticate to the sequencers with a shared token, made once per cluster folder and
    # passed in the environment (a command line is readable by every user of the machine).
    if [[ ! -s "$state/service-token" ]]; then
        (umask 077; od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$state/service-token")
    fi
    TANDEM_SERVICE_TOKEN="$(cat "$state/service-token")"
    export TANDEM_SERVICE_TOKEN
    local common=(--brokers "127.0.0.1:$broker_port" --postgres-url "$postgres_url" --partitions "$partitions")
    # One at a time, each ready before the next (as the integration tests' clusters start).
    start_service sequencer-a "grpc listening on " "$sequencer_bin" \
        --grpc-listen "127.0.0.1:$sequencer_a_port" "${common[@]}"
    start_service sequencer-b "grpc listening on " "$sequencer_bin" \
        --grpc-listen "127.0.0.1:$sequencer_b_port" "${common[@]}"
    local sequencers="http://127.0.0.1:$sequencer_a_port,http://127.0.0.1:$sequencer_b_port"
    start_service gateway-a "listening on http://" "$gateway_bin" \
        --listen "127.0.0.1:$gateway_a_port" --sequencer "$sequencers" "${common[@]}" --insecure-no-auth
    start_service gateway-b "listening on http://" "$gateway_bin" \
        --listen "127.0.0.1:$gateway_b_port" --sequencer "$sequencers" "${common[@]}" --insecure-no-auth
    # Its own consumer group on tandem.events (never the sequencers'); `--partitions` is accepted
    # and unused (it reads the partitions the topic has).
    start_service analytics "http listening on " "$analytics_bin" \
        --metrics-listen "127.0.0.1:$analytics_port" --group tandem-analytics "${common[@]}"
    starting=false

    cat <<EOF

Tandem cluster running (logs and pidfiles in $state):
  gateway A: http://127.0.0.1:$gateway_a_port/?doc=welcome
  gateway B: http://127.0.0.1:$gateway_b_port/?doc=welcome
  analytics: http://127.0.0.1:$analytics_port/metrics  (/healthz, /readyz; consumer group tandem-analytics;
             tables analytics_* in database $database: docs/ANALYTICS.md has queries)
Open both and type: the two gateways edit the same document.
Stop it with: make cluster-down   (or deploy/cluster.sh down; deploy/cluster.sh status lists what runs)
EOF
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) usage ;;
esac
