#!/usr/bin/env bash
# The next device calls for issue 14, prepared in session 17 (BENCHMARKS.md 10m left them
# undone): `OUT_FINAL=$OUT bash benches/results/h200-2026-12-02f/scripts/session18.sh CALL` from the
# repository root on the GPU machine, with .device-bin (engram-store --features cuda at a1e6ad6;
# no Rust changed since), .whl (grpcio, protobuf) and bench-data carried. `run` is session 11's
# (sourced; --transport mapped). When these calls have run, move this folder to
# benches/results/h200-<date>/ with their outputs (done: h200-2026-12-02f).
#   1: dense-4b decode 256 without MPS, then the same under CUDA MPS (the store and the worker
#      MPS clients; 10m's MPS run failed on the harness's uninitialized hash context, fixed in
#      c30ca27), (d) and sp against (b) and (c) in the same rounds, ~230 s each;
#   2: the same under MPS on dense-8b;
#   3: arm (d) with every row in its VRAM tier (below); 4: the same under the profiler.
# The device returns at most 8 files a call: run as
#   OUT_FINAL=/tmp/o bash .../session18.sh N; tar czf $OUT/callN.tgz -C /tmp/o .
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
clocked() {  # name, then a command: runs it while the GPU's clocks, power and slowdown
  # reasons are sampled every 50 ms into $OUT_FINAL/name.clocks.csv (scripts/clocks.py lines
  # them up with the harness's rounds: the rounds swing 2-5% and nothing said why)
  local samples=$OUT_FINAL/$1.clocks.csv q=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu
  q=$q,utilization.gpu; shift
  for r in clocks_event_reasons.active clocks_throttle_reasons.active; do
    if nvidia-smi --query-gpu=$q,$r --format=csv,noheader,nounits -c 1 > /dev/null 2>&1; then
      q=$q,$r; break; fi
  done
  echo "# epoch $(date +%s.%N) local $(date '+%Y/%m/%d %H:%M:%S.%N') fields $q" > "$samples"
  nvidia-smi --query-gpu=$q --format=csv,noheader,nounits -lms 50 >> "$samples" 2>&1 &
  local pid=$!
  "$@"
  kill $pid; wait $pid 2> /dev/null
  nvidia-smi -q -d PERFORMANCE,POWER,CLOCK > "${samples%.clocks.csv}.nvidia-smi-after.txt" 2>&1
}
case ${1:?call 1-2} in
  1) clocked ref4b run ref4b dense-4b bcd 250 "${DEC[@]}"
     clocked mps4b mps run mps4b dense-4b bcd 250 "${DEC[@]}" ;;
  2) clocked mps8b mps run mps8b dense-8b bcd 300 "${DEC[@]}" ;;
  3)  # (added after call 1: MPS slowed every arm ~6%, call 2 not run) arm (d) with no misses
      # at all: a VRAM tier of 16 GB (the whole tables fit) warmed with every row, so no row
      # of the runs is read over PCIe; (d) on its 16 programs, (d:all) on every SM beside the
      # model, (d:ig) inline on the model's stream on every SM, as (b) reads its table. Whether
      # the ~1.5 points against (b) at decode 256 are the misses' PCIe reads or the tiered
      # kernel's index probes and grid.
    EV=(--rounds 6 --decode-steps 128 --prefill-chunks 0 --decode-batches 256
        --store-warm-tokens 5000000 --store-warm-every-row --store-gpu-budget 16000000000
        --d-variant all:mapped_programs=4096
        --d-variant ig:inline_min_tokens=1,mapped_programs=4096)
    clocked ev4b run ev4b dense-4b bcd 250 "${EV[@]}"
    clocked ev8b run ev8b dense-8b bcd 250 "${EV[@]}" ;;
  4)  # (added after call 3: with no misses (d) was further from (b), not nearer, and on every
      # SM further still) the same on dense-4b under the profiler after the rounds: each arm's
      # kernels and host operators (kernels-dense-4b.csv), and Chrome traces of (b), (d) and
      # (d:ig); a variant of (d) that records nothing for the store (nr)
    EV=(--rounds 4 --decode-steps 128 --prefill-chunks 0 --decode-batches 256
        --store-warm-tokens 5000000 --store-warm-every-row --store-gpu-budget 16000000000
        --d-variant ig:inline_min_tokens=1,mapped_programs=4096
        --d-variant nr:mapped_record_every=0)
    ENGRAM_OFFLOAD_KERNEL_PROFILE=$OUT_FINAL/prof-ev4b ENGRAM_OFFLOAD_KERNEL_TRACE=b,d,d:ig \
      clocked pr4b run pr4b dense-4b bcd 300 "${EV[@]}" ;;
esac
