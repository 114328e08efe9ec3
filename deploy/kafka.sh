#!/usr/bin/env bash
# Apache Kafka for development, tests and benchmarks: one combined KRaft broker + controller on
# loopback, from the jars on Maven Central (the project's machines reach Maven Central, not the
# Apache download site), pinned by version and checked against deploy/kafka-jars.sha256.
#
#   deploy/kafka.sh install                 fetch and check the jars once; prints their folder
#   deploy/kafka.sh start DIR [OPTIONS]     a broker in the background, data in DIR; waits until it
#                                           answers a metadata request; prints 127.0.0.1:PORT
#   deploy/kafka.sh run DIR [OPTIONS]       the same in the foreground (exec: the caller's child is
#                                           the JVM itself, so a test can kill -9 and restart it)
#   deploy/kafka.sh stop DIR                stops the broker `start` recorded in DIR (SIGTERM, then
#                                           SIGKILL after 30 s)
#   deploy/kafka.sh ready PORT [SECONDS]    waits until 127.0.0.1:PORT answers a metadata request
#   deploy/kafka.sh with -- COMMAND…        runs COMMAND with a broker of its own in a temporary
#                                           folder, its address in TANDEM_TEST_BROKERS; the broker
#                                           is stopped however COMMAND ends
#
# OPTIONS: --port P, --controller-port C (default: free ports; a DIR started before keeps its
# ports, so a restart finds the same data at the same address), --set KEY=VALUE (a broker
# property, repeatable). TANDEM_KAFKA_HEAP sets the JVM heap (default "-Xms256m -Xmx512m").
#
# A DIR that was formatted before is started on its data as it is: that is a broker restart. Needs
# Java 17 or later and, to install, Maven (both from Debian's packages when missing). No Python.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

kafka_version="4.1.1"
# kafka_2.13 logs through SLF4J 1.7 and ships no binding; log4j's matches its log4j-core.
log4j_version="2.24.3"
dependency_plugin="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
cache_root="${TANDEM_CACHE_DIR:-${HOME}/.cache/tandem}"
home="${cache_root}/kafka-${kafka_version}"
libs="${home}/libs"
jar_list="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kafka-jars.sha256"

usage() {
    sed -n '2,22p' "$0" >&2
    exit 64
}

# The jars are there, exactly those of the list, each with its hash.
jars_ok() {
    [[ -d "$libs" ]] || return 1
    diff -q <(cd "$libs" && ls -1 -- *.jar | sort) <(awk '{print $2}' "$jar_list" | sort) >/dev/null || return 1
    (cd "$libs" && sha256sum --quiet --strict -c "$jar_list") >/dev/null 2>&1
}

ensure_java() {
    if ! command -v java >/dev/null; then apt_install openjdk-17-jre-headless; fi
    local major
    major="$(java -XshowSettings:properties -version 2>&1 | awk -F' = ' '/java.specification.version/ {print $2}')"
    if [[ -z "$major" || "${major%%.*}" -lt 17 ]]; then
        say "Kafka ${kafka_version} needs Java 17 or later; found ${major:-none}"; exit 1
    fi
}

install() {
    if jars_ok; then
        echo "$libs"
        return 0
    fi
    ensure_java
    command -v mvn >/dev/null || apt_install maven
    mkdir -p "$home"
    local work
    work="$(mktemp -d "${home}/install.XXXXXX")"
    trap 'rm -rf "$work"' RETURN
    cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.tandem</groupId>
  <artifactId>kafka-broker-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>${kafka_version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>${log4j_version}</version>
    </dependency>
  </dependencies>
</project>
EOF
    say "downloading Apache Kafka ${kafka_version} and its dependencies (Maven Central) into $home"
    # The local repository lives in the cache too: nothing is written to ~/.m2.
    mvn -B -q -f "$work/pom.xml" -Dmaven.repo.local="${cache_root}/m2" \
        "${dependency_plugin}:copy-dependencies" -DincludeScope=runtime -DoutputDirectory="$work/libs" >&2
    local found expected
    found="$(cd "$work/libs" && ls -1 -- *.jar | sort)"
    expected="$(awk '{print $2}' "$jar_list" | sort)"
    if [[ "$found" != "$expected" ]]; then
        say "the downloaded jars are not those of $jar_list:"
        diff <(echo "$expected") <(echo "$found") >&2 || true
        exit 1
    fi
    if ! (cd "$work/libs" && sha256sum --quiet --strict -c "$jar_list" >&2); then
        say "a downloaded jar does not have the hash in $jar_list"; exit 1
    fi
    rm -rf "$libs"
    # A rename within one folder: a concurrent start never sees half the jars.
    mv "$work/libs" "$libs"
    say "installed Apache Kafka ${kafka_version} in $libs"
    echo "$libs"
}

# Answers whether a broker on 127.0.0.1:$1 answers a Metadata request (v4, all topics) listing at
# least one broker: then it has registered with its controller and serves clients. Bash's
# /dev/tcp and od, so no client library is needed to know a broker is up.
probe() {
    local port="$1" hex
    { exec 3<>"/dev/tcp/127.0.0.1/${port}"; } 2>/dev/null || return 1
    # size 20 | api key 3 (Metadata) | version 4 | correlation id 1 | client id "probe" |
    # topics: null (all) | allow_auto_topic_creation: false
    printf '\x00\x00\x00\x14\x00\x03\x00\x04\x00\x00\x00\x01\x00\x05probe\xff\xff\xff\xff\x00' >&3
    # size | correlation id | throttle time | number of brokers
    hex="$(timeout 2 head -c 16 <&3 | od -An -v -tx1 | tr -d ' \n')" || true
    exec 3>&-
    [[ ${#hex} -eq 32 && "${hex:8:8}" == 00000001 && $((16#${hex:24:8})) -ge 1 ]]
}

ready() {
    local port="${1:-}" seconds="${2:-60}"
    [[ "$port" =~ ^[0-9]+$ ]] || usage
    local deadline=$((SECONDS + seconds))
    while ((SECONDS < deadline)); do
        probe "$port" && return 0
        sleep 0.2
    done
    return 1
}

# A port nothing listens on now, below the kernel's ephemeral range (32768+) so no outgoing
# connection's source port can take it between this check and the broker's bind.
free_port() {
    local port
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    say "no free port found"; exit 1
}

# Writes DIR/server.properties (ports kept from an earlier start) and formats DIR/data once.
prepare() {
    local dir="$1"; shift
    local port="" controller_port="" extra=()
    while (($#)); do
        case "$1" in
            --port) port="$2"; shift 2 ;;
            --controller-port) controller_port="$2"; shift 2 ;;
            --set) extra+=("$2"); shift 2 ;;
            *) usage ;;
        esac
    done
    mkdir -p "$dir"
    if [[ -f "$dir/ports" ]]; then
        read -r old_port old_controller <"$dir/ports"
        port="${port:-$old_port}"
        controller_port="${controller_port:-$old_controller}"
    fi
    port="${port:-$(free_port)}"
    while [[ -z "$controller_port" || "$controller_port" == "$port" ]]; do controller_port="$(free_port)"; done
    echo "$port $controller_port" >"$dir/ports"
    {
        echo "# Written by deploy/kafka.sh: one combined KRaft broker and controller on loopback."
        echo "process.roles=broker,controller"
        echo "node.id=1"
        echo "controller.quorum.voters=1@127.0.0.1:${controller_port}"
        echo "listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controller_port}"
        echo "advertised.listeners=PLAINTEXT://127.0.0.1:${port}"
        echo "controller.listener.names=CONTROLLER"
        echo "inter.broker.listener.name=PLAINTEXT"
        echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        echo "log.dirs=${dir}/data"
        # One node: every internal topic has one replica. Production runs three brokers with
        # replication factor 3 and min.insync.replicas 2 (docs/ARCHITECTURE.md, "Kafka").
        echo "offsets.topic.replication.factor=1"
        echo "transaction.state.log.replication.factor=1"
        echo "transaction.state.log.min.isr=1"
        echo "share.coordinator.state.topic.replication.factor=1"
        echo "share.coordinator.state.topic.min.isr=1"
        # Fewer partitions of the internal topics than the default 50: the group coordinator's
        # topic is created on the first join, and 50 partitions cost seconds on two cores.
        echo "offsets.topic.num.partitions=4"
        echo "transaction.state.log.num.partitions=4"
        # Tandem creates its topics with the partition count it needs; a typo must not make one.
        echo "auto.create.topics.enable=false"
        # A group's first join is not held back 3 s waiting for more members.
        echo "group.initial.rebalance.delay.ms=0"
        # The sequencers' failover time is their session timeout: let them ask for less than the
        # default minima (6 s classic, 45 s for the KIP-848 protocol), down to 1 s.
        echo "group.min.session.timeout.ms=1000"
        # (The KIP-848 protocol's are the broker's own settings, not the client's: 2 s, like the
        # sequencers' classic default, so the two protocols compare at the same timeout.)
        echo "group.consumer.min.session.timeout.ms=1000"
        echo "group.consumer.min.heartbeat.interval.ms=100"
        echo "group.consumer.session.timeout.ms=2000"
        echo "group.consumer.heartbeat.interval.ms=250"
        # After a crash the controller refuses the restarted broker's registration until the old
        # one's session ends (9 s by default): a restart after kill -9 would take that long.
        echo "broker.session.timeout.ms=2000"
        echo "broker.heartbeat.interval.ms=500"
        # A lighter broker for a shared two-core machine: the log cleaner's buffer (128 MiB on the
        # heap by default; only __consumer_offsets is compacted) and fewer threads than a server's.
        echo "log.cleaner.dedupe.buffer.size=16777216"
        echo "num.network.threads=2"
        echo "num.io.threads=4"
        echo "background.threads=4"
        echo "group.coordinator.threads=1"
        echo "num.recovery.threads.per.data.dir=1"
        local setting
        for setting in "${extra[@]}"; do echo "$setting"; done
    } >"$dir/server.properties"
    cat >"$dir/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
# The request logger and the state change logger repeat every request at info.
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
EOF
    if [[ ! -f "$dir/data/meta.properties" ]]; then
        # A KRaft cluster id is 16 random bytes in URL-safe base64 without padding.
        local cluster_id
        cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
        java -Xmx128m -cp "$libs/*" -Dlog4j2.configurationFile="$dir/log4j2.properties" \
            kafka.tools.StorageTool format --cluster-id="$cluster_id" --config "$dir/server.properties" \
            >"$dir/format.log" 2>&1 || { say "formatting $dir/data failed:"; tail -n 20 "$dir/format.log" >&2; exit 1; }
    fi
}

# Sets java_cmd to the broker's command line for DIR.
java_command() {
    local dir="$1" heap
    # Bounded heap: the broker shares two cores and the memory with everything a test starts.
    read -r -a heap <<<"${TANDEM_KAFKA_HEAP:--Xms256m -Xmx512m}"
    # G1 with short pauses, as Kafka's own start script sets it.
    java_cmd=(java "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
        -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$dir/log4j2.properties" "-Dkafka.logs.dir=$dir"
        -cp "$libs/*" kafka.Kafka "$dir/server.properties")
}

run() {
    local dir="${1:-}"; [[ -n "$dir" ]] || usage; shift
    install >/dev/null
    dir="$(mkdir -p "$dir" && cd "$dir" && pwd)"
    prepare "$dir" "$@"
    java_command "$dir"
    exec "${java_cmd[@]}"
}

# Whether PID is alive and is a broker of this DIR (a recycled pid of another program is not ours).
is_our_broker() {
    local pid="$1" dir="$2"
    [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "kafka.Kafka $dir/server.properties"
}

start() {
    local dir="${1:-}"; [[ -n "$dir" ]] || usage; shift
    install >/dev/null
    dir="$(mkdir -p "$dir" && cd "$dir" && pwd)"
    if [[ -f "$dir/broker.pid" ]] && is_our_broker "$(cat "$dir/broker.pid")" "$dir"; then
        say "a broker of $dir is already running (pid $(cat "$dir/broker.pid"))"; exit 1
    fi
    prepare "$dir" "$@"
    local port
    read -r port _ <"$dir/ports"
    java_command "$dir"
    nohup "${java_cmd[@]}" >>"$dir/broker.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/broker.pid"
    local deadline=$((SECONDS + 90))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "the broker exited at start; its log ($dir/broker.log):"; tail -n 30 "$dir/broker.log" >&2
            rm -f "$dir/broker.pid"; exit 1
        fi
        if probe "$port"; then
            say "Apache Kafka ${kafka_version} on 127.0.0.1:${port} (pid $pid, log $dir/broker.log)"
            echo "127.0.0.1:${port}"
            return 0
        fi
        sleep 0.2
    done
    say "the broker did not answer on 127.0.0.1:${port} within 90 s; its log ($dir/broker.log):"
    tail -n 30 "$dir/broker.log" >&2
    stop "$dir"
    exit 1
}

stop() {
    local dir="${1:-}"; [[ -n "$dir" ]] || usage
    [[ -d "$dir" ]] || { say "no folder $dir: nothing to stop"; return 0; }
    dir="$(cd "$dir" && pwd)"
    local pidfile="$dir/broker.pid"
    if [[ ! -f "$pidfile" ]]; then
        say "no $pidfile: nothing to stop"; return 0
    fi
    local pid
    pid="$(cat "$pidfile")"
    if is_our_broker "$pid" "$dir"; then
        # SIGTERM: a controlled shutdown, which flushes and closes every log cleanly.
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "the broker (pid $pid) did not stop within 30 s; killing it"
            kill -9 "$pid" 2>/dev/null || true
        fi
        say "stopped the broker of $dir (pid $pid)"
    else
        say "pid in $pidfile is not a running broker of $dir: nothing to stop"
    fi
    rm -f "$pidfile"
}

# A broker for the length of one command: make test shares one among all its tests.
with_dir=""
with() {
    [[ "${1:-}" == "--" ]] && shift
    (($#)) || usage
    local address status=0
    with_dir="$(mktemp -d "${TMPDIR:-/tmp}/tandem-kafka.XXXXXX")"
    trap 'stop "$with_dir" >/dev/null 2>&1 || true; rm -rf "$with_dir"' EXIT
    trap 'exit 130' INT TERM
    address="$(start "$with_dir" | tail -n 1)"
    TANDEM_TEST_BROKERS="$address" "$@" || status=$?
    return "$status"
}

case "${1:-}" in
    install) install ;;
    start) shift; start "$@" ;;
    run) shift; run "$@" ;;
    stop) shift; stop "$@" ;;
    ready) shift; ready "$@" ;;
    with) shift; with "$@" ;;
    *) usage ;;
esac
