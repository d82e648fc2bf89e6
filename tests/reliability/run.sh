#!/usr/bin/env bash
# The reliability suite (issue #10): every scenario in tests/scenarios,
# each with a whole system of its own (private PostgreSQL, NATS, SMTP, the
# three services as processes) on free loopback ports.
#
#   bash tests/reliability/run.sh [small|full] [test name filter]
#
# small (the default) is what `cargo test --workspace` runs in CI, a few
# minutes in all; full is by hand: two-minute loads at twice the rate and a
# ten-minute soak, one scenario at a time (RELIABILITY_THREADS to change).
# Needs what deploy/local/deps.sh installs (nats-server 2.10+, aiosmtpd) and
# PostgreSQL 15's binaries (SKILEEZ_PG_BIN_DIR, default
# /usr/lib/postgresql/15/bin); never touches the shared PostgreSQL or NATS.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/../.."
size="${1:-small}"
filter="${2:-}"
case "$size" in
  small) threads="${RELIABILITY_THREADS:-2}" ;;
  full) threads="${RELIABILITY_THREADS:-1}" ;;
  *) echo "usage: $0 [small|full] [filter]" >&2; exit 2 ;;
esac

source deploy/local/env.sh
# The scenarios run the `skileez` binary itself: build it first, so that
# they never run an old one.
cargo build -p skileez --bin skileez
start=$SECONDS
SKILEEZ_RELIABILITY_SIZE="$size" cargo test -p skileez-reliability --test scenarios -- \
  --nocapture --test-threads "$threads" ${filter:+"$filter"}
echo "reliability suite ($size) passed in $((SECONDS - start)) s"
