#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Runs Skileez locally: makes PostgreSQL and NATS reachable (deps.sh),
# starts a mail catcher, then `skileez dev`, which applies the migrations and
# starts the services. Extra arguments go to `skileez dev`.
#
#   bash deploy/local/run.sh
#
# Ports (the program's defaults): scheduling gRPC 127.0.0.1:50051
# (SKILEEZ_GRPC_ADDR), notifications gRPC 127.0.0.1:50052
# (SKILEEZ_NOTIFICATIONS_GRPC_ADDR), the browsers' WebSocket
# ws://127.0.0.1:50053/v1/live (SKILEEZ_WS_ADDR).
#
# Mail: unless SKILEEZ_SMTP_URL points elsewhere (or SKILEEZ_NOTIFICATIONS=
# false), an SMTP catcher listens on 127.0.0.1:1025 (SKILEEZ_SMTP_CATCHER_PORT)
# and writes every mail the services send to ~/.local/share/skileez/mail/ as
# <n>.eml (open it with a mail client; invites included). It keeps running
# after `skileez dev` stops; deploy/local/stop.sh stops it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/../.."
LOG_TAG=run

if ! command -v cargo >/dev/null 2>&1; then
  echo "[run] ERROR: cargo not found on PATH. The Rust toolchain (rustup, cargo, rustc) is a" >&2
  echo "[run]   precondition of this script: install it, open a new shell (or source ~/.cargo/env), rerun." >&2
  exit 1
fi

bash "$here/deps.sh"
# shellcheck source=lib.sh
source "$here/lib.sh"

# shellcheck disable=SC2016 # $1 expands in the inner bash
port_open() { timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }

# Starts the mail catcher (deploy/local/smtp_server.py) unless it runs.
start_mail_catcher() {
  local dir pid
  dir="$(smtp_catcher_dir)"
  if pid="$(smtp_catcher_pid)"; then
    log "mail catcher (pid $pid) on 127.0.0.1:$SMTP_CATCHER_PORT: mails go to $SMTP_MAIL_DIR/<n>.eml"
    return
  fi
  if port_open "$SMTP_CATCHER_PORT"; then
    warn "something else listens on 127.0.0.1:$SMTP_CATCHER_PORT: the services send their mail there, no catcher started" \
      "(set SKILEEZ_SMTP_CATCHER_PORT and SKILEEZ_SMTP_URL=smtp://127.0.0.1:<port> to use another port)"
    return
  fi
  mkdir -p "$dir" "$SMTP_MAIL_DIR"
  rm -f "$dir/smtp.pid"
  # setsid + nohup: it outlives this script, like deps.sh's servers. It
  # writes its own pid file (setsid may fork).
  nohup setsid "$SMTP_PYTHON" "$here/smtp_server.py" "$SMTP_MAIL_DIR" \
    --listen "127.0.0.1:$SMTP_CATCHER_PORT" --detached --pid-file "$dir/smtp.pid" \
    </dev/null >>"$dir/smtp.log" 2>&1 &
  local started=$! deadline=$((SECONDS + 15))
  until port_open "$SMTP_CATCHER_PORT" && smtp_catcher_pid >/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ] || { ! kill -0 "$started" 2>/dev/null && ! smtp_catcher_pid >/dev/null; }; then
      tail -n 20 "$dir/smtp.log" >&2 || true
      die "the mail catcher did not start on 127.0.0.1:$SMTP_CATCHER_PORT (log above: $dir/smtp.log)"
    fi
    sleep 0.2
  done
  log "mail catcher on 127.0.0.1:$SMTP_CATCHER_PORT (pid $(smtp_catcher_pid)): every mail is written to $SMTP_MAIL_DIR/<n>.eml"
}

if [ "${SKILEEZ_NOTIFICATIONS:-true}" != false ] &&
  [ "${SKILEEZ_SMTP_URL:-smtp://127.0.0.1:$SMTP_CATCHER_PORT}" = "smtp://127.0.0.1:$SMTP_CATCHER_PORT" ]; then
  start_mail_catcher
  export SKILEEZ_SMTP_URL="smtp://127.0.0.1:$SMTP_CATCHER_PORT"
fi
exec cargo run -p skileez -- dev "$@"
