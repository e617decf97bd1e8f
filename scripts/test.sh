#!/usr/bin/env bash
# The project's one test command (README "Quick start"): every Rust test of the workspace, built
# once with the `cuda` and `failpoints` features (GPU tests skip, and say why, without a GPU;
# failpoint tests inject disk and GPU faults), then the Python client's tests, in a venv of
# their own, against the binary that build made. Every suite runs even when an earlier one
# fails; a summary line per suite (passed / failed / skipped) comes at the end, and the exit
# status is non-zero if any suite failed. Run from anywhere.
#
# Environment: FEATURES (default: cuda and failpoints of every crate that has them),
# ENGRAM_TEST_VENV (default target/test-venv), ENGRAM_TEST_TORCH=1 (install torch, ~3 GB, so the
# torch backend's tests and the end-to-end smoke run run too).
set -uo pipefail
cd "$(dirname "$0")/.."

FEATURES=${FEATURES-engram-store-cache/cuda,engram-store/cuda,engram-store-bench/cuda,engram-store-cache/failpoints,engram-store/failpoints}
VENV=${ENGRAM_TEST_VENV:-target/test-venv}
LOGS=target/test-logs
mkdir -p "$LOGS"
summary=()
failed=0

note() { summary+=("$1"); }

# Counts from a saved nextest log: "N passed" / "N failed" / "N skipped" of its Summary line.
count_nextest() {
  local line passed failed skipped
  line=$(grep -E '^ +Summary \[' "$1" | tail -n 1)
  passed=$(grep -oE '[0-9]+ tests? run: [0-9]+ passed' <<<"$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')
  failed=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+' | head -n 1)
  skipped=$(grep -oE '[0-9]+ skipped' <<<"$line" | grep -oE '[0-9]+' | head -n 1)
  echo "${passed:-0} ${failed:-0} ${skipped:-0}"
}

echo "== rust: build the workspace's tests once (features: ${FEATURES:-none})"
feature_args=()
[ -n "$FEATURES" ] && feature_args=(--features "$FEATURES")
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest not found: installing it (cargo install --locked cargo-nextest)"
  cargo install --locked cargo-nextest >/dev/null 2>&1 || true
fi

if cargo nextest --version >/dev/null 2>&1; then
  # Tests print "skipping: <why>" when they cannot run here (no GPU, no io_uring); nextest
  # shows that output for passing tests too so the reason is in the log, and the count of such
  # tests is reported as skipped.
  if cargo nextest run --workspace "${feature_args[@]}" --no-fail-fast \
      --success-output final --failure-output final 2>&1 | tee "$LOGS/rust.log"; then
    rust_ok=1
  else
    rust_ok=0
  fi
  read -r passed failed_n skipped <<<"$(count_nextest "$LOGS/rust.log")"
  # A test that found nothing to run on this machine passes after printing "SKIP: <reason>".
  self_skipped=$(grep -cE '^\s*SKIP: ' "$LOGS/rust.log" || true)
  passed=$((passed - self_skipped))
  skipped=$((skipped + self_skipped))
  if [ "$rust_ok" = 1 ]; then
    note "rust:   ${passed} passed, ${failed_n} failed, ${skipped} skipped"
  else
    note "rust:   FAILED: ${passed} passed, ${failed_n} failed, ${skipped} skipped (log: $LOGS/rust.log)"
    failed=1
  fi
  grep -E '^\s*SKIP: ' "$LOGS/rust.log" | sed 's/^ *//' | sort | uniq -c | sed 's/^/        /' >"$LOGS/rust-skips.txt" || true
else
  if cargo test --workspace "${feature_args[@]}" --no-fail-fast 2>&1 | tee "$LOGS/rust.log"; then
    note "rust:   passed (cargo test; install cargo-nextest for counts)"
  else
    note "rust:   FAILED (log: $LOGS/rust.log)"
    failed=1
  fi
fi

if [ -d client/python/tests ] && command -v python3 >/dev/null 2>&1; then
  echo "== python: client tests (venv $VENV, server binary target/debug/engram-store)"
  py_ok=1
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || py_ok=0
  fi
  if [ "$py_ok" = 1 ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    # engram_store.torch and the end-to-end benchmark's CPU smoke run need torch, whose Linux
    # wheels from PyPI come with CUDA libraries (about 3 GB): installed only when asked for
    # (ENGRAM_TEST_TORCH=1, as CI does); otherwise those tests skip and say why.
    extras=dev
    [ "${ENGRAM_TEST_TORCH:-0}" = 1 ] && extras=dev,torch
    # Up to three tries (a package index can drop a connection mid-download), no wheel cache
    # (torch's CUDA wheels would otherwise take their ~5 GB twice on the disk).
    py_ok=0
    : >"$LOGS/pip.log"
    for attempt in 1 2 3; do
      if "$VENV/bin/python" -m pip install -q --no-cache-dir "./client/python[$extras]" \
        >>"$LOGS/pip.log" 2>&1; then
        py_ok=1
        break
      fi
      echo "pip install failed (try $attempt of 3); free disk: $(df -h --output=avail . | tail -n 1)" \
        | tee -a "$LOGS/pip.log"
      sleep $((attempt * 10))
    done
    if [ "$py_ok" = 0 ]; then
      echo "== the last lines pip printed ($LOGS/pip.log):"
      tail -n 40 "$LOGS/pip.log"
      df -h . /tmp
    fi
  fi
  # The Rust build above made the binary (with the same features); build it if it ran elsewhere.
  [ -x target/debug/engram-store ] || cargo build -p engram-store "${feature_args[@]}"
  if [ "$py_ok" = 1 ]; then
    ENGRAM_STORE_BIN="$PWD/target/debug/engram-store" "$VENV/bin/python" -m pytest -q -rs \
      client/python/tests 2>&1 | tee "$LOGS/python.log"
    py_status=${PIPESTATUS[0]}
    line=$(grep -E '(passed|failed|skipped|error)' "$LOGS/python.log" | tail -n 1)
    p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+'); p=${p:-0}
    f=$(grep -oE '[0-9]+ (failed|errors?)' <<<"$line" | grep -oE '[0-9]+' | paste -sd+ | bc 2>/dev/null); f=${f:-0}
    s=$(grep -oE '[0-9]+ skipped' <<<"$line" | grep -oE '[0-9]+'); s=${s:-0}
    if [ "$py_status" = 0 ]; then
      note "python: ${p} passed, ${f} failed, ${s} skipped"
    else
      note "python: FAILED: ${p} passed, ${f} failed, ${s} skipped (log: $LOGS/python.log)"
      failed=1
    fi
  else
    note "python: FAILED to set up the venv (log: $LOGS/pip.log)"
    failed=1
  fi
else
  note "python: skipped (no python3)"
fi

echo
echo "== summary"
for line in "${summary[@]}"; do echo "$line"; done
if [ -s "$LOGS/rust-skips.txt" ]; then
  echo "skipped Rust tests, by reason:"
  cat "$LOGS/rust-skips.txt"
fi
grep -E '^SKIPPED' "$LOGS/python.log" 2>/dev/null | sed 's/^/        /' || true
exit "$failed"
