#!/usr/bin/env bash
# The next device calls for issue 14, prepared in session 17 (BENCHMARKS.md 10m left them
# undone): `OUT_FINAL=$OUT bash benches/results/h200-next/scripts/session18.sh CALL` from the
# repository root on the GPU machine, with .device-bin (engram-store --features cuda at a1e6ad6;
# no Rust changed since), .whl (grpcio, protobuf) and bench-data carried. `run` is session 11's
# (sourced; --transport mapped). When these calls have run, move this folder to
# benches/results/h200-<date>/ with their outputs.
#   1: dense-4b decode 256 without MPS, then the same under CUDA MPS (the store and the worker
#      MPS clients; 10m's MPS run failed on the harness's uninitialized hash context, fixed in
#      c30ca27), (d) and sp against (b) and (c) in the same rounds, ~230 s each;
#   2: the same under MPS on dense-8b.
set -u
source "$(dirname "$0")/../../h200-2026-12-01h/scripts/session11.sh" none
DEC=(--rounds 6 --decode-steps 128 --prefill-chunks 0 --decode-batches 256
     --store-warm-tokens 5000000 --d-variant sp:mapped_split_misses=1)
mps() {  # runs "$@" with the MPS control daemon up, and stops it after
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
  nvidia-cuda-mps-control -d && echo "MPS control daemon started"
  "$@"
  echo quit | nvidia-cuda-mps-control
  cp $CUDA_MPS_LOG_DIRECTORY/control.log "$OUT_FINAL"/mps-control.log 2>/dev/null
}
case ${1:?call 1-2} in
  1) run ref4b dense-4b bcd 250 "${DEC[@]}"; mps run mps4b dense-4b bcd 250 "${DEC[@]}" ;;
  2) mps run mps8b dense-8b bcd 300 "${DEC[@]}" ;;
esac
