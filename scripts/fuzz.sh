#!/usr/bin/env bash
# Runs every cargo-fuzz target under store/fuzz for SECONDS each (default 60): the table and
# ingest header parsers, and request messages through the gRPC edge into a real engine. Installs
# cargo-fuzz if missing. cargo-fuzz needs nightly flags (-Zsanitizer); the pinned stable
# toolchain takes them with RUSTC_BOOTSTRAP=1. Exits non-zero on the first crash (the input is
# left in store/fuzz/artifacts/).
set -euo pipefail
cd "$(dirname "$0")/../store"
SECONDS_EACH=${1:-60}
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1
# Unoptimized, with the address sanitizer: builds in about 3 minutes here instead of 11 for a
# release build (FUZZ_RELEASE=1 for that), and runs fast enough for a minute of fuzzing.
build=--dev
[ "${FUZZ_RELEASE:-0}" = 1 ] && build=
mkdir -p ../target/fuzz-logs
for target in $(cargo fuzz list); do
  echo "== fuzz $target for ${SECONDS_EACH}s"
  mkdir -p "fuzz/corpus/$target"
  log="../target/fuzz-logs/$target.log"
  if ! cargo fuzz run $build "$target" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=4096 \
      >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz target $target failed (a crash leaves its input in store/fuzz/artifacts/$target/)"
    exit 1
  fi
  grep -E '^#[0-9]+\s+DONE|^Done [0-9]+ runs' "$log" | tail -n 2
done
