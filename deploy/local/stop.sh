#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Stops the servers deploy/local/deps.sh started itself for the current
# PGPORT / NATS_PORT: its nats-server (pid file) and its private PostgreSQL
# cluster. Never touches a Debian cluster (e.g. 15/main) or any server it did
# not start.
#
#   bash deploy/local/stop.sh            # stop them, keep their data
#   bash deploy/local/stop.sh --purge    # stop them and delete their data and logs
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

# NATS
if pid="$(our_nats_pid)"; then
  log "stopping nats-server pid $pid (127.0.0.1:$NATS_CLIENT_PORT)"
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
  log "no nats-server started by deps.sh is running on port $NATS_CLIENT_PORT"
fi
if [ "$purge" = 1 ] && [ -d "$NATS_DIR" ]; then
  log "deleting $NATS_DIR"
  rm -rf "$NATS_DIR"
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
