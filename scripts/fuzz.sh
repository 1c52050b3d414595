#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for SECONDS each (default 60) and prints, per
# target, the inputs executed and the crashes found. Needs the nightly toolchain; installs
# cargo-fuzz from crates.io when missing; GANGLION_FUZZ_TARGETS="a b" runs only those. Seeds
# come from fuzz/corpus (committed); what the fuzzer learns goes to a scratch corpus outside
# the repo, crashes to fuzz/artifacts/<target>.
set -euo pipefail
seconds=${1:-60}
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/ganglion/fuzz-target}
work=${GANGLION_FUZZ_WORK:-$HOME/.cache/ganglion/fuzz-corpus}
# One build for the targets and the seed writer: the targets link the whole `ganglion` crate
# (llama.cpp, candle, mistralrs), built with the sanitizer (about half an hour on 2 cores the
# first time), at the versions the main build uses (cargo adds the fuzzing crates to them).
[ -f Cargo.lock ] || cp ../Cargo.lock Cargo.lock
cargo +nightly fuzz build
host=$(rustc +nightly -vV | sed -n 's/^host: //p')
ASAN_OPTIONS=detect_leaks=0 "$CARGO_TARGET_DIR/$host/release/seeds"
status=0
for target in ${GANGLION_FUZZ_TARGETS:-$(ls fuzz_targets | sed 's/\.rs$//')}; do
  mkdir -p "$work/$target" "artifacts/$target"
  log=$(mktemp)
  if ! cargo +nightly fuzz run "$target" "$work/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=4096 >"$log" 2>&1; then
    status=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{print $2}' | tail -1)
  crashes=$(find "artifacts/$target" -type f -newer "$log" | wc -l)   # found by this run
  echo "$target: ${execs:-0} inputs in ${seconds} s, $crashes crashes (log: $log)"
done
exit $status
