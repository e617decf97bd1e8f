#!/usr/bin/env bash
# engram-bench overload against a release server with a bound on rows in flight, N times (the
# median is what BENCHMARKS.md quotes): writes a synthetic table once, starts the server, warms
# every row into RAM, runs the benchmark, stops the server with SIGTERM (its drain is logged).
#
#   bash benches/run-overload.sh [DATA_DIR] [RUNS]
#
# Environment: ROWS (2000000), BATCH (4096), BOUND (rows in flight, 8192), FACTOR (4),
# DURATION (10s), PORT (50071), ANSWER_BUDGET (64MiB), RAM (--ram-cache, 512MiB: the table
# fits and is prefetched whole; 0: every row read from disk with O_DIRECT), DIST (zipf:0.8).
# Needs target/release/{engram-store,engram-bench} (cargo build --release -p engram-store -p
# engram-store-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-/tmp/engram-overload}
RUNS=${2:-3}
ROWS=${ROWS:-2000000}
BATCH=${BATCH:-4096}
BOUND=${BOUND:-8192}
FACTOR=${FACTOR:-4}
DURATION=${DURATION:-10s}
PORT=${PORT:-50071}
ANSWER_BUDGET=${ANSWER_BUDGET:-64MiB}
RAM=${RAM:-512MiB}
DIST=${DIST:-zipf:0.8}
PREFETCH=--prefetch-all
[ "$RAM" = 0 ] && PREFETCH=
BIN=target/release
. benches/server-runs.sh
[ -d "$DATA/ovl" ] || "$BIN/engram-store" synth --name ovl --rows "$ROWS" --dim 80 --dtype bf16 \
  --data "$DATA" --seed 7
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq 1 "$RUNS"); do
  start_server "$DATA/server-$run.log" --data "$DATA" --listen "127.0.0.1:$PORT" \
    --ram-cache "$RAM" --max-rows-in-flight "$BOUND" --answer-budget "$ANSWER_BUDGET" \
    --watch-interval 0
  echo "== run $run (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  "$BIN/engram-bench" overload --addr "127.0.0.1:$PORT" --table ovl --batch "$BATCH" \
    --load-factor "$FACTOR" --duration "$DURATION" --warmup 3s $PREFETCH --dist "$DIST" \
    --sustainable-concurrency $((BOUND / BATCH)) --verify-seed 7 || true
  stop_server
  grep -E "draining|drained|stopped" "$DATA/server-$run.log" || true
done
