#!/usr/bin/env bash
# Bounded fuzzing (CI and `make fuzz-ci`): builds the cargo-fuzz targets and
# runs each for FUZZ_SECONDS (default 60) from the committed corpus in
# fuzz/corpus/TARGET. New inputs go to a scratch corpus under fuzz/target, so
# a CI run never changes the repository; `FUZZ_MERGE=1` minimises them into
# the committed corpus instead (then commit fuzz/corpus).
# Prints one `FUZZ target=... seconds=... execs=... corpus=...` line per
# target; exits non-zero on any crash (a panic or failed assertion), out-of-memory or timeout.
# Needs only crates.io: cargo-fuzz is installed with `cargo install --locked`,
# and stable Rust accepts cargo-fuzz's -Z flags with RUSTC_BOOTSTRAP=1 (no
# sanitizer: -Zsanitizer needs a nightly standard library).
set -euo pipefail
cd "$(dirname "$0")"
secs=${FUZZ_SECONDS:-60}
targets=(config envelope sysfs scheduled spot rebalance unlock)
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
fuzz=(--sanitizer none -O)
cargo fuzz build "${fuzz[@]}"
for t in "${targets[@]}"; do
  scratch=target/scratch-corpus/$t
  mkdir -p "$scratch"
  log=target/fuzz-$t.log
  if ! cargo fuzz run "${fuzz[@]}" "$t" "$scratch" "corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz-ci: $t failed; the input is in fuzz/artifacts/$t" >&2
    exit 1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  echo "FUZZ target=$t seconds=$secs execs=${execs:-?} corpus=$(ls "corpus/$t" | wc -l)+$(ls "$scratch" | wc -l)"
  if [[ ${FUZZ_MERGE:-} == 1 ]]; then
    # Keep what adds coverage (edges, not hit counts), under hash names.
    cargo fuzz run "${fuzz[@]}" "$t" "corpus/$t" "$scratch" -- -merge=1 -use_counters=0 >/dev/null 2>&1
  fi
done
