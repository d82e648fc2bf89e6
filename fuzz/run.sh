#!/usr/bin/env bash
# Runs each fuzz target for a set time and prints one line of figures per
# target; exits non-zero if any target crashed. See fuzz/README.md.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60, every target)
#
# Environment:
#   SANITIZER=none|address   none (default) builds on the stable toolchain as
#                            it is; address adds ASan, which needs nightly
#                            flags, so it sets RUSTC_BOOTSTRAP=1.
#   SKILEEZ_FUZZ_TARGET_DIR  build directory (default
#                            ~/.cache/skileez/target-fuzz). Never the main
#                            one: these flags would rebuild it from scratch.
#
# Corpora grow in fuzz/corpus/<target>, crashes land in
# fuzz/artifacts/<target>, libFuzzer's output in fuzz/logs/<target>.log
# (all three ignored by git).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

say() { printf '[fuzz] %s\n' "$*"; }

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  say "usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]  (got seconds '$seconds')" >&2
  exit 2
fi
shift || true

sanitizer="${SANITIZER:-none}"
case "$sanitizer" in
  none) ;;
  address) export RUSTC_BOOTSTRAP=1 ;;
  *)
    say "SANITIZER must be none or address, not '$sanitizer'" >&2
    exit 2
    ;;
esac

# env.sh points CARGO_TARGET_DIR at the shared build; never reuse it here.
export CARGO_TARGET_DIR="${SKILEEZ_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/skileez/target-fuzz}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  say "cargo-fuzz is missing; installing it from crates.io"
  cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

say "building ${targets[*]} (sanitizer $sanitizer) in $CARGO_TARGET_DIR"
build_start=$SECONDS
for target in "${targets[@]}"; do
  cargo fuzz build --sanitizer "$sanitizer" "$target"
done
say "built in $((SECONDS - build_start)) s"

host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$CARGO_TARGET_DIR/$host/release"
mkdir -p logs

# Prints `stat::NAME: VALUE`'s value from a libFuzzer log.
stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -n1; }

failed=0
printf '%-22s %8s %12s %10s %8s  %s\n' target seconds execs "execs/s" corpus result
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  log="logs/$target.log"
  started=$SECONDS
  status=0
  # SKILEEZ_FUZZ_SEEDS: the target writes its seed requests there first.
  SKILEEZ_FUZZ_SEEDS="corpus/$target" "$bin_dir/$target" \
    -artifact_prefix="artifacts/$target/" \
    -max_total_time="$seconds" \
    -print_final_stats=1 \
    "corpus/$target" >"$log" 2>&1 || status=$?
  took=$((SECONDS - started))
  execs="$(stat number_of_executed_units "$log")"
  rate="$(stat average_exec_per_sec "$log")"
  corpus="$(find "corpus/$target" -type f | wc -l)"
  if [ "$status" -eq 0 ]; then
    result="ok"
  else
    failed=1
    artifact="$(sed -n 's/.*Test unit written to //p' "$log" | tail -n1)"
    result="CRASH (exit $status) ${artifact:-see $log}"
  fi
  printf '%-22s %8s %12s %10s %8s  %s\n' "$target" "$took" "${execs:-?}" "${rate:-?}" "$corpus" "$result"
done

if [ "$failed" -ne 0 ]; then
  say "a target crashed: replay with $bin_dir/<target> <artifact>; logs in fuzz/logs/"
  exit 1
fi
