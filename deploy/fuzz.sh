#!/usr/bin/env bash
# Fuzzes the code that reads untrusted input: WebSocket frames, operations in JSON, and the OT
# algebra itself (the targets are in fuzz/, see fuzz/README.md).
#
#   deploy/fuzz.sh run [SECONDS]   fuzz each target for SECONDS (default 60)
#   deploy/fuzz.sh smoke           about 12 s per target, for CI
#
# Installs cargo-fuzz when it is missing. Uses the nightly toolchain when rustup has one, otherwise
# stable with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly-only flags). Builds into its own target
# directory, $TANDEM_FUZZ_CACHE/fuzz-target ($TANDEM_FUZZ_CACHE defaults to ~/.cache/tandem). Each
# target starts from its seed corpus in fuzz/corpus/<target> (kept in git, small), with the libFuzzer
# dictionary fuzz/dict/<target>.dict when there is one, and grows its own
# in $TANDEM_FUZZ_CACHE/fuzz-corpus/<target> (not in git). Ends with a table of executions and
# crashes; exits non-zero when a target crashed, naming the crash file and how to replay it.
#
# Settings: TANDEM_FUZZ_TARGETS (space-separated subset), TANDEM_FUZZ_SANITIZER (address or none;
# default address), TANDEM_FUZZ_SMOKE_SECONDS (12).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=deploy/lib.sh
source "$root/deploy/lib.sh"

usage() { sed -n '5,6s/^# \{0,3\}//p' "$0" >&2; exit 2; }

mode=${1:-}
case $mode in
    run) seconds=${2:-60} ;;
    smoke) seconds=${TANDEM_FUZZ_SMOKE_SECONDS:-12} ;;
    *) usage ;;
esac
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { say "SECONDS must be a positive integer, got '$seconds'"; exit 2; }

fuzz_dir=$root/fuzz
read -r -a targets <<<"${TANDEM_FUZZ_TARGETS:-ws_message op_parse apply_transform}"
cache=${TANDEM_FUZZ_CACHE:-$HOME/.cache/tandem}
target_dir=$cache/fuzz-target
logs=$cache/fuzz-logs
mkdir -p "$target_dir" "$logs"

if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
fi

# The toolchain: nightly when rustup has one, else stable with the nightly flags unlocked.
# AddressSanitizer works on both (checked with stable 1.95): it needs no instrumented std.
toolchain=()
if command -v rustup >/dev/null && rustup toolchain list | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi
sanitizer=${TANDEM_FUZZ_SANITIZER:-address}
say "toolchain: $(rustc "${toolchain[@]}" --version)${RUSTC_BOOTSTRAP:+ (RUSTC_BOOTSTRAP=1)}, sanitizer: $sanitizer"

# Release build with debug assertions and overflow checks (-a): arithmetic overflow is a crash.
flags=(--fuzz-dir "$fuzz_dir" --target-dir "$target_dir" --debug-assertions --sanitizer "$sanitizer")

build_start=$(date +%s)
say "building ${targets[*]}"
for target in "${targets[@]}"; do
    cargo "${toolchain[@]}" fuzz build "${flags[@]}" "$target"
done
build_seconds=$(($(date +%s) - build_start))

declare -A ran execs rate crashed found
failed=()
crash_files=()
for target in "${targets[@]}"; do
    seeds=$fuzz_dir/corpus/$target
    corpus=$cache/fuzz-corpus/$target
    log=$logs/$target.log
    mkdir -p "$seeds" "$corpus"
    say "fuzzing $target for ${seconds}s (log: $log)"
    start=$(date +%s.%N)
    options=(-max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048)
    [[ -f $fuzz_dir/dict/$target.dict ]] && options+=(-dict="$fuzz_dir/dict/$target.dict")
    # New inputs go to the first corpus directory, the cache; the seeds are only read.
    status=0
    cargo "${toolchain[@]}" fuzz run "${flags[@]}" "$target" "$corpus" "$seeds" -- "${options[@]}" \
        >"$log" 2>&1 || status=$?
    ran[$target]=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", e - s }')
    final_stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
    execs[$target]=$(final_stat number_of_executed_units)
    rate[$target]=$(final_stat average_exec_per_sec)
    found[$target]=$(final_stat new_units_added)
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    if ((status != 0)) || [[ -n $artifact ]]; then
        # No final stats: libFuzzer never ran (a build or start-up failure), which is no crash count.
        if [[ -n ${execs[$target]} ]]; then crashed[$target]=1; else crashed[$target]=error; fi
        failed+=("$target")
        say "$target CRASHED (exit $status); last lines of $log:"
        grep -v '^#[0-9]' "$log" | tail -n 40 >&2
        if [[ -n $artifact ]]; then
            [[ $artifact = /* ]] || artifact=$fuzz_dir/$artifact
            crash_files+=("$artifact")
            say "crash input: $artifact"
            say "replay: (cd $root && cargo ${toolchain[*]} fuzz run ${flags[*]} $target $artifact)"
        fi
    else
        crashed[$target]=0
    fi
done

echo
printf '%-16s %8s %14s %10s %10s %8s\n' target seconds executions "exec/s" "new units" crashes
for target in "${targets[@]}"; do
    printf '%-16s %8s %14s %10s %10s %8s\n' "$target" "${ran[$target]}" "${execs[$target]:-?}" \
        "${rate[$target]:-?}" "${found[$target]:-?}" "${crashed[$target]}"
done
echo "build: ${build_seconds}s; corpora: $cache/fuzz-corpus; logs: $logs"

if ((${#failed[@]} > 0)); then
    say "crashed: ${failed[*]}"
    for file in "${crash_files[@]}"; do echo "crash file: $file"; done
    exit 1
fi
