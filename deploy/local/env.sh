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
#   CARGO_TARGET_DIR, XDG_DATA_HOME, XDG_CONFIG_HOME, XDG_CACHE_HOME
#   SKILEEZ_JWT_SECRET / SKILEEZ_JWT_SECRET_FILE (kept when already set)

: "${HOME:?HOME must be set}"

SKILEEZ_PG_PORT="${PGPORT:-5432}"
SKILEEZ_NATS_PORT="${NATS_PORT:-4222}"
SKILEEZ_NATS_MON_PORT="${NATS_MON_PORT:-$((SKILEEZ_NATS_PORT + 4000))}"
# Servers' data, logs and the nats-server venv live here (see deps.sh).
SKILEEZ_DATA_DIR="${XDG_DATA_HOME:-$HOME/.local/share}/skileez"

export DATABASE_URL="postgres://postgres@127.0.0.1:${SKILEEZ_PG_PORT}/skileez"
# Admin URL the tests use to create (and drop) their own databases.
export SKILEEZ_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:${SKILEEZ_PG_PORT}/postgres"
export NATS_URL="nats://127.0.0.1:${SKILEEZ_NATS_PORT}"
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
