#!/usr/bin/env bash
# The Python venv of the chaos checker (check.py) and its tests, outside the clone:
# ${TANDEM_CACHE_DIR:-~/.cache/tandem}/venv-chaos. Idempotent: creates it when missing, recreates it
# when requirements.txt changed since it was made, and prints the venv's python on stdout (the only
# line printed there; progress goes to stderr).
#
#   py="$(integration-tests/chaos/venv.sh)" && "$py" integration-tests/chaos/check.py --help
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../../deploy/lib.sh"

requirements="$here/requirements.txt"
venv="${TANDEM_CACHE_DIR:-${HOME}/.cache/tandem}/venv-chaos"
stamp="$venv/.complete"
want="$(sha256sum "$requirements" | cut -c1-64)"

if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    say "creating the chaos checker's venv in $venv (PyPI)" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    # Debian's python3 makes venvs only with python3-venv installed.
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        apt_install python3-venv >&2
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$requirements" >&2
    # --no-deps installs exactly the list; pip check says whether the list is whole and coherent.
    "$venv/bin/pip" check >&2
    echo "$want" >"$stamp"
fi
echo "$venv/bin/python"
