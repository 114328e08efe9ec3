#!/usr/bin/env bash
# Shows that the soak and its checker catch a real bug: builds Tandem with one deliberate break
# (integration-tests/chaos/breaks/BREAK.patch applied to a copy of HEAD, in a target folder of its own
# so the real build stays untouched), runs the chaos smoke on it, and succeeds only when the run FAILS
# with the independent checker's verdict naming what the break did.
#
#   integration-tests/chaos/broken-build.sh [BREAK] [SEED] [FAULTS]    (make chaos-broken)
#
# BREAK (default reack-current-version): the sequencer acknowledges a resubmitted op (a client
# resending after a gateway kill or a timeout) at the document's current version instead of the
# version it was committed as: a dedupe that answers wrongly. Seen on seed 20261206: the checker's
# `kafka_events` found 59 `reacknowledged` records naming another version than the log. The copy's
# target folder is cached in ~/.cache/tandem/target-broken.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
break_name="${1:-reack-current-version}"
seed="${2:-20261206}"
faults="${3:-30}"
patch="$here/breaks/$break_name.patch"
[ -f "$patch" ] || { echo "broken-build: no break named $break_name ($patch)" >&2; exit 2; }

work="$(mktemp -d)"
trap 'git -C "$root" worktree remove --force "$work/src" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$root" worktree add --detach "$work/src" HEAD >/dev/null
git -C "$work/src" apply "$patch"
echo "broken-build: $break_name applied to $(git -C "$root" rev-parse --short HEAD) in $work/src" >&2

export CARGO_TARGET_DIR="${TANDEM_BROKEN_TARGET_DIR:-$HOME/.cache/tandem/target-broken}"
(cd "$work/src" && cargo build --locked --workspace --all-features --bins)
"$root/deploy/kafka.sh" install >/dev/null

out="$root/.tandem/chaos/broken-$break_name-seed-$seed"
rm -rf "$out"
set +e
(cd "$work/src" && "$CARGO_TARGET_DIR/debug/tandem-chaos" --faults "$faults" --seed "$seed" --out "$out" \
    --make-target chaos-broken)
status=$?
set -e
result="$out/result.json"
if [ "$status" -eq 0 ]; then
    echo "broken-build: FAILED: the run with $break_name passed; the soak did not catch the break" >&2
    exit 1
fi
if [ ! -f "$result" ]; then
    echo "broken-build: FAILED: the run ended with status $status but the checker wrote no verdict ($result)" >&2
    exit 1
fi
py="$("$here/venv.sh")"
"$py" - "$result" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))
failed = {name: check for name, check in result.get("checks", {}).items() if not check.get("ok", True)}
print(f"broken-build: checker verdict ok={result.get('ok')}", file=sys.stderr)
for name, check in failed.items():
    print(f"  {name}: {check['count']} violations of {check['checked']} {check['by_kind']}", file=sys.stderr)
    for example in check["examples"][:2]:
        print(f"    e.g. {json.dumps(example)}", file=sys.stderr)
if "error" in result:
    print(f"  error: {result['error']}", file=sys.stderr)
sys.exit(0 if (result.get("ok") is False and failed) else 1)
PY
echo "broken-build: caught: the independent checker failed the broken build, as it must" >&2
