#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Stops the servers deploy/local/deps.sh started itself for the current
# PGPORT / NATS_PORT: its nats-server (pid file), without NATS_PORT also its
# fallback nats-server (NATS_FALLBACK_PORT, 4223), and its private PostgreSQL
# cluster; and the mail catcher run.sh started (pid file). Never touches a
# Debian cluster (e.g. 15/main), Debian's nats-server, or any server it did
# not start. The NATS URL deps.sh recorded (nats.url) stays; the next deps.sh
# run decides afresh and starts its own again where needed.
#
#   bash deploy/local/stop.sh            # stop them, keep their data
#   bash deploy/local/stop.sh --purge    # stop them and delete their data, logs and caught mail
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_TAG=stop
# shellcheck source=lib.sh
source "$here/lib.sh"

purge=0
case "${1:-}" in
  --purge) purge=1 ;;
  "") ;;
  *) die "unknown argument: $1" "Usage: bash deploy/local/stop.sh [--purge]" ;;
esac

# stop_our_nats PORT: stops the nats-server deps.sh started on PORT, if any.
stop_our_nats() {
  local pid dir
  dir="$(nats_dir "$1")"
  if pid="$(our_nats_pid "$1")"; then
    log "stopping nats-server pid $pid (127.0.0.1:$1)"
    kill -TERM "$pid"
    for _ in $(seq 1 40); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
      warn "nats-server pid $pid ignored SIGTERM for 10s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  else
    log "no nats-server started by deps.sh is running on port $1"
  fi
  if [ "$purge" = 1 ] && [ -d "$dir" ]; then
    log "deleting $dir"
    rm -rf "$dir"
  fi
}

# NATS: the port's server, and without NATS_PORT also the fallback one
# (deps.sh's own current NATS beside an older one on port 4222).
stop_our_nats "$NATS_CLIENT_PORT"
if [ -z "${NATS_PORT:-}" ] && [ "$NATS_FALLBACK_CLIENT_PORT" != "$NATS_CLIENT_PORT" ]; then
  stop_our_nats "$NATS_FALLBACK_CLIENT_PORT"
fi

# The mail catcher run.sh started (the mails it caught stay, unless --purge).
if pid="$(smtp_catcher_pid)"; then
  log "stopping the mail catcher pid $pid (127.0.0.1:$SMTP_CATCHER_PORT)"
  kill -TERM "$pid" 2>/dev/null || true
else
  log "no mail catcher started by run.sh is running"
fi
if [ "$purge" = 1 ] && [ -d "$SMTP_MAIL_DIR" ]; then
  log "deleting $SMTP_MAIL_DIR"
  rm -rf "$SMTP_MAIL_DIR"
fi

# Private PostgreSQL cluster
if base="$(private_pg_base)" && [ -s "$base/data/PG_VERSION" ]; then
  bindir="$(pg_bindir)" || die "found no pg_ctl to stop the private cluster in $base/data"
  if as_pg "$bindir/pg_ctl" -D "$base/data" status >/dev/null 2>&1; then
    log "stopping private PostgreSQL in $base/data (127.0.0.1:$PG_PORT)"
    as_pg "$bindir/pg_ctl" -D "$base/data" -m fast -w -t 60 stop >&2 ||
      die "pg_ctl stop failed (output above)" "See $base/postgresql.log."
  else
    log "private PostgreSQL in $base/data is not running"
  fi
  if [ "$purge" = 1 ]; then
    log "deleting $base"
    rm -rf "$base"
  fi
else
  log "no private PostgreSQL cluster of deps.sh for port $PG_PORT"
fi
