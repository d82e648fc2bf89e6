#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The whole Skileez test suite, as CI runs it (.ci/run):
#   deps (PostgreSQL + NATS up), cargo fmt --check, clippy -D warnings, cargo test.
# Prints one timing line per step; exits non-zero if any step failed. After a
# failed deps step it stops; after fmt or clippy failing it goes on, so that
# one run reports every problem. Extra arguments go to `cargo test`.
#
#   bash deploy/local/test.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/../.."

say() { printf '[test] %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  say "ERROR: cargo not found on PATH. The Rust toolchain (rustup, cargo, rustc) is a precondition:" >&2
  say "  install it, open a new shell (or source ~/.cargo/env), rerun." >&2
  exit 1
fi
for component in fmt clippy; do
  if ! cargo "$component" --version >/dev/null 2>&1; then
    say "ERROR: 'cargo $component' is missing. Run: rustup component add rustfmt clippy" >&2
    exit 1
  fi
done

# Microseconds since the epoch (EPOCHREALTIME's separator follows the locale).
now_us() { echo "${EPOCHREALTIME//[.,]/}"; }
# elapsed MICROSECONDS -> "7.3s" or "2m05.1s"
elapsed() {
  local ds=$(($1 / 100000))
  if [ "$ds" -ge 600 ]; then
    printf '%dm%02d.%ds' $((ds / 600)) $((ds % 600 / 10)) $((ds % 10))
  else
    printf '%d.%ds' $((ds / 10)) $((ds % 10))
  fi
}
t0="$(now_us)"

summary=()
failed=()
# step NAME CMD...: runs CMD, prints its time, records a failure.
step() {
  local name="$1" start rc=0 took
  shift
  say "==> $name: $*"
  start="$(now_us)"
  "$@" || rc=$?
  took="$(elapsed $(($(now_us) - start)))"
  if [ "$rc" -eq 0 ]; then
    summary+=("$name: ok in $took")
  else
    summary+=("$name: FAILED (exit $rc) in $took")
    failed+=("$name")
  fi
  say "<== ${summary[-1]}"
  return "$rc"
}

finish() {
  say "---- summary (total $(elapsed $(($(now_us) - t0))))"
  local line
  for line in "${summary[@]}"; do say "$line"; done
  if [ "${#failed[@]}" -gt 0 ]; then
    say "FAILED: ${failed[*]}"
    exit 1
  fi
  say "all steps passed"
}

say "$(cargo --version); $(rustc --version)"
step deps bash "$here/deps.sh" || finish
# shellcheck source=env.sh
source "$here/env.sh" # DATABASE_URL, SKILEEZ_TEST_DATABASE_URL, NATS_URL, SKILEEZ_NATS_SERVER_BIN, CARGO_TARGET_DIR, ...
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
say "SKILEEZ_TEST_DATABASE_URL=$SKILEEZ_TEST_DATABASE_URL NATS_URL=$NATS_URL SKILEEZ_NATS_SERVER_BIN=$SKILEEZ_NATS_SERVER_BIN CARGO_TARGET_DIR=$CARGO_TARGET_DIR"

step fmt cargo fmt --all -- --check || true
step clippy cargo clippy --workspace --all-targets --locked -- -D warnings || true
step test cargo test --workspace --locked "$@" || true
finish
