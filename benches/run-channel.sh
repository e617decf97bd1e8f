#!/usr/bin/env bash
# The sidecar channel against the gRPC paths on this machine (issue 13's CPU target), RUNS times,
# each against a fresh server over a synthetic table held whole in the RAM tier:
#
#   bash benches/run-channel.sh [DATA_DIR] [RUNS]
#
# Environment: ROWS (2000000), BATCH (256,4096,65536), DURATION (5s), PORT (50072), MAPPED (1:
# the server shares the table, --share-memory, and the bench times the mapped path too). Needs
# target/release/{engram-store,engram-bench} (cargo build --release -p engram-store -p
# engram-store-bench). Each run's CSV (path,batch,p50_us,p99_us,rows_per_s) goes to DATA_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-/tmp/engram-channel}
RUNS=${2:-3}
ROWS=${ROWS:-2000000}
BATCH=${BATCH:-256,4096,65536}
DURATION=${DURATION:-5s}
PORT=${PORT:-50072}
BIN=target/release
. benches/server-runs.sh
[ -d "$DATA/ch" ] || "$BIN/engram-store" synth --name ch --rows "$ROWS" --dim 80 --dtype bf16 \
  --data "$DATA" --seed 7
SHARE=() MAPPED_FLAG=()
if [ "${MAPPED:-0}" = 1 ]; then SHARE=(--share-memory) MAPPED_FLAG=(--mapped); fi
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq 1 "$RUNS"); do
  start_server "$DATA/server-$run.log" --data "$DATA" --listen "127.0.0.1:$PORT" \
    --ram-cache 1GiB --local-socket "$DATA/local.sock" --watch-interval 0 "${SHARE[@]}"
  echo "== run $run (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  "$BIN/engram-bench" channel --addr "127.0.0.1:$PORT" --table ch --batch "$BATCH" \
    --duration "$DURATION" --csv "$DATA/channel-$run.csv" "${MAPPED_FLAG[@]}" || true
  stop_server
done
