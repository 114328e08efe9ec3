#!/usr/bin/env bash
# Ensures a PostgreSQL server answers on 127.0.0.1:5432 and lets local connections in without a
# password, for the Postgres store's tests (libs/store/tests/postgres.rs) and local clusters.
# Idempotent, and it never stops or restarts a server that is already running:
#   - a server already answers: nothing to do;
#   - a Debian cluster is installed but stopped: allow trust auth on loopback, start it;
#   - nothing installed: install Debian's postgresql, allow trust auth on loopback, start it.
# Then it waits until the server accepts connections.
#
# FOR LOCAL DEVELOPMENT AND CI ONLY: trust authentication lets any local user connect as any role,
# including the superuser, without a password. Never run this on a shared or production host.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HOST=127.0.0.1
PORT=5432
sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"

ready() { command -v pg_isready >/dev/null && pg_isready -q -h "$HOST" -p "$PORT"; }

wait_ready() {
    for _ in $(seq 1 60); do
        ready && return 0
        sleep 0.5
    done
    say "postgres did not answer on $HOST:$PORT within 30 s (see /var/log/postgresql/)"; exit 1
}

# The Debian cluster listening on $PORT ("<version> <name>"), if one is installed.
cluster() {
    command -v pg_lsclusters >/dev/null || return 0
    pg_lsclusters --no-header 2>/dev/null | awk -v port="$PORT" '$3 == port { print $1, $2; exit }'
}

# Lets local TCP connections in without a password (see the warning at the top). The new lines go
# first, since pg_hba.conf is read top-down and the first matching line wins.
trust_loopback() {
    local version=$1 name=$2 hba
    hba="/etc/postgresql/$version/$name/pg_hba.conf"
    if $sudo grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then return 0; fi
    say "allowing trust authentication on 127.0.0.1 and ::1 in $hba (local development only)"
    $sudo cp "$hba" "$hba.before-tandem"
    {
        echo "# Added by Tandem's deploy/postgres.sh: local development and CI only."
        echo "host all all 127.0.0.1/32 trust"
        echo "host all all ::1/128 trust"
        $sudo cat "$hba.before-tandem"
    } | $sudo tee "$hba" >/dev/null
}

# The tests connect as postgres without a password unless TANDEM_TEST_POSTGRES says otherwise: warn
# early, with the fix, when a server that was already there does not let them in.
check_login() {
    [[ -n "${TANDEM_TEST_POSTGRES:-}" ]] && return 0
    command -v psql >/dev/null || return 0
    if ! psql -w -h "$HOST" -p "$PORT" -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
        say "warning: postgres on $HOST:$PORT refuses user postgres without a password; add" \
            "'host all all 127.0.0.1/32 trust' to its pg_hba.conf, or set TANDEM_TEST_POSTGRES to a URL that logs in"
    fi
}

if ready; then
    say "postgres already answers on $HOST:$PORT"
    check_login
    exit 0
fi

read -r version name <<<"$(cluster)" || true
if [[ -z "${version:-}" ]]; then
    apt_install postgresql
    # The package creates and starts a cluster where it can; look it up again.
    read -r version name <<<"$(cluster)" || true
    if [[ -z "${version:-}" ]]; then
        say "postgresql is installed but no cluster listens on port $PORT (see pg_lsclusters)"; exit 1
    fi
    trust_loopback "$version" "$name"
    # The package may have started the cluster with the previous pg_hba.conf: reload it (a
    # server this script just installed, so nobody else's).
    if $sudo pg_ctlcluster --skip-systemctl-redirect "$version" "$name" status >/dev/null 2>&1; then
        $sudo pg_ctlcluster --skip-systemctl-redirect "$version" "$name" reload
    fi
fi

if ! $sudo pg_ctlcluster --skip-systemctl-redirect "$version" "$name" status >/dev/null 2>&1; then
    # A stopped cluster (a machine image ships PostgreSQL installed but not running): let the
    # tests in before starting it, as for a fresh install.
    trust_loopback "$version" "$name"
    say "starting postgres cluster $version/$name"
    $sudo pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start
fi
wait_ready
say "postgres answers on $HOST:$PORT"
check_login
