#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Runs Skileez locally: makes PostgreSQL and NATS reachable (deps.sh), then
# `skileez dev`, which applies the migrations and starts the services.
# Extra arguments go to `skileez dev`.
#
#   bash deploy/local/run.sh
#
# gRPC listens on SKILEEZ_GRPC_ADDR (the program's default: 127.0.0.1:50051).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/../.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "[run] ERROR: cargo not found on PATH. The Rust toolchain (rustup, cargo, rustc) is a" >&2
  echo "[run]   precondition of this script: install it, open a new shell (or source ~/.cargo/env), rerun." >&2
  exit 1
fi

bash "$here/deps.sh"
# shellcheck source=env.sh
source "$here/env.sh"
exec cargo run -p skileez -- dev "$@"
