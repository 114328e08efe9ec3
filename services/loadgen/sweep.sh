#!/usr/bin/env bash
# Sweeps the Kafka settings the cluster's latency depends on, with the load generator: for every
# combination of partitions, producer linger and consumer fetch wait, a fresh cluster (run.sh) runs
# one preset, and a Markdown table of the results is printed (and written to DIR/sweep.md).
#
#   services/loadgen/sweep.sh [--out DIR] -- PRESET [LOADGEN FLAGS]
#   PARTITIONS="4 16" LINGER_MS="0 5" FETCH_WAIT_MS="1 5 20" services/loadgen/sweep.sh -- typing --duration 15
#
# Defaults: PARTITIONS="16", LINGER_MS="0 2 5", FETCH_WAIT_MS="1 5 20", RUNS=1. Each combination
# is a fresh broker, database and services, so no run inherits another's topics.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) out="${2:?}"; shift 2 ;;
        --) shift; break ;;
        *) echo "usage: $0 [--out DIR] -- PRESET [LOADGEN FLAGS]" >&2; exit 64 ;;
    esac
done
[[ $# -ge 1 ]] || { echo "usage: $0 [--out DIR] -- PRESET [LOADGEN FLAGS]" >&2; exit 64; }
out="${out:-$(mktemp -d /tmp/tandem-sweep.XXXXXX)}"
mkdir -p "$out"
runs="${RUNS:-1}"

table="$out/sweep.md"
{
    echo "\`services/loadgen/sweep.sh -- $*\`, $runs run(s) per row (medians), $(date -u +%Y-%m-%d)"
    echo
    echo "| partitions | linger ms | fetch wait ms | ack p50 | ack p99 | remote p50 | remote p99 | committed ops/s | broker append ms | commit ms | publish ms | kafka cpu % |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
} >"$table"

for partitions in ${PARTITIONS:-16}; do
    for linger in ${LINGER_MS:-0 2 5}; do
        for wait in ${FETCH_WAIT_MS:-1 5 20}; do
            dir="$out/p$partitions-l$linger-w$wait"
            echo "sweep.sh: partitions $partitions, linger $linger ms, fetch wait $wait ms → $dir" >&2
            TANDEM_PARTITIONS="$partitions" TANDEM_KAFKA_LINGER_MS="$linger" TANDEM_KAFKA_FETCH_WAIT_MS="$wait" \
                "$root/services/loadgen/run.sh" cluster --runs "$runs" --out "$dir" -- "$@" >"$dir.log" 2>&1 || true
            report="$dir/run-$runs.json"
            if [[ ! -f "$report" ]]; then
                echo "| $partitions | $linger | $wait | no report: see $dir.log |||||||||" >>"$table"
                continue
            fi
            # Medians over the runs of this row.
            row="$(python3 - "$dir" "$runs" <<'PY'
import json, statistics, sys
d, runs = sys.argv[1], int(sys.argv[2])
rs = [json.load(open(f"{d}/run-{i}.json")) for i in range(1, runs + 1)]
med = lambda f: statistics.median(f(r) for r in rs)
kafka = [p["cpu_mean_pct"] for r in rs for p in r.get("processes", []) if p["name"] == "kafka"]
cells = [
    med(lambda r: r["ack_latency_ms"]["p50"]), med(lambda r: r["ack_latency_ms"]["p99"]),
    med(lambda r: r["remote_latency_ms"]["p50"]), med(lambda r: r["remote_latency_ms"]["p99"]),
]
print(" | ".join(f"{c:.1f}" for c in cells) + f" | {med(lambda r: r['rates']['committed_ops']):.0f}"
      + f" | {{stages}} | {statistics.median(kafka) if kafka else 0:.0f}")
PY
)" || row="runs incomplete: see $dir.log | | | | | {stages} | |"
            stages="$(sed -E 's/.*broker append ([^)]*)\), commit ([^,]*), publish (.*)/\1 | \2 | \3/' "$dir/stages.txt" 2>/dev/null || echo "- | - | -")"
            echo "| $partitions | $linger | $wait | ${row/\{stages\}/$stages} |" >>"$table"
        done
    done
done
cat "$table"
