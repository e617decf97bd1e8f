#!/usr/bin/env bash
# The project's one test command (README "Tests"): every Rust test in the workspace, then the
# Python client's tests against a live server when Python is available. Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test --workspace"
cargo test --workspace --all-targets

if [ -d client/python/tests ] && command -v python3 >/dev/null 2>&1; then
  echo "== python client tests"
  cargo build -p engram-store
  python3 -m pip install -q "./client/python[dev]" >/dev/null
  ENGRAM_STORE_BIN="$PWD/target/debug/engram-store" python3 -m pytest -q client/python/tests
fi
