#!/usr/bin/env bash
# The project's one test command (README "Tests"): every Rust test in the workspace, then the
# Python client's tests against a live server when Python is available. Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test --workspace"
cargo test --workspace --all-targets

# The VRAM tier builds everywhere (cudarc loads libcuda at run time); without a GPU its tests
# print why they skip.
echo "== cargo test --features cuda (GPU tests skip without a GPU)"
cargo test -p engram-store-cache -p engram-store -p engram-store-bench \
  --features engram-store-cache/cuda,engram-store/cuda,engram-store-bench/cuda --all-targets

if [ -d client/python/tests ] && command -v python3 >/dev/null 2>&1; then
  echo "== python client tests"
  cargo build -p engram-store
  python3 -m pip install -q "./client/python[dev]" >/dev/null
  ENGRAM_STORE_BIN="$PWD/target/debug/engram-store" python3 -m pytest -q client/python/tests
fi
