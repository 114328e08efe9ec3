#!/usr/bin/env bash
# Runs the chaos checker's tests (test_check.py): makes the venv (venv.sh), makes sure PostgreSQL
# answers on 127.0.0.1:5432 (deploy/postgres.sh), and gives the tests a Kafka broker of their own
# (deploy/kafka.sh with), stopped however they end. Arguments go to pytest (e.g. -k lost -s).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="$("$here/venv.sh")"
"$root/deploy/postgres.sh" >&2
export PYTHONDONTWRITEBYTECODE=1
exec "$root/deploy/kafka.sh" with -- "$py" -m pytest -q -p no:cacheprovider "$here/test_check.py" "$@"
