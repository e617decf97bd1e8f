#!/usr/bin/env bash
# Session 12's device calls (BENCHMARKS.md 10i), as they ran: `OUT_FINAL=$OUT bash session12.sh
# CALL` from the repository root on the GPU machine, with .device-bin (this session's
# engram-store --features cuda and gpu_tier test binary), .whl and bench-data (the whole
# 4,779,282-token English trace, /work/shared/traces/en.tokens.u32) carried. run and gpu_tests
# are session 11's (sourced). Every arm begins its lookup after the model's first segment
# (--after-first-segment); the store arms are warmed from every held-out token of the trace,
# and arm (e)'s RAM tier with the warm's next band of rows (--store-warm-ram-band).
set -u
source "$(dirname "$0")/../../h200-2026-12-01h/scripts/session11.sh" none
ALL=(--after-first-segment --store-warm-tokens 5000000 --store-warm-ram-band)
case ${1:?call 1-3} in
  1)  # the GPU tests (first run of the counts a byte per row and the histogram ranking), then
      # every arm of dense-4b
    gpu_tests 60
    run all4b dense-4b abcde 470 --rounds 4 --decode-steps 96 --prefill-chunks 6 "${ALL[@]}" ;;
  2)
    run all8b dense-8b abcde 520 --rounds 4 --decode-steps 96 --prefill-chunks 6 "${ALL[@]}" ;;
  3)  # layer 1's table given twice its bytes' share of the VRAM tier (serve --gpu-weight, new):
      # its rows are needed one layer after the step's ids, layer 14's after 13. The store's GPU
      # tests first (gpu_serving, with the new one sizing each table's tier by its weight; it
      # runs the binary at the path it was built with).
    mkdir -p /work/main/target/release && cp .device-bin/engram-store /work/main/target/release/
    timeout 120 .device-bin/gpu_serving > $R/gpu_serving.log 2>&1; echo "gpu_serving rc=$?"
    grep "test result\|FAILED\|panicked" $R/gpu_serving.log; cp $R/gpu_serving.log "$OUT_FINAL"/
    W=(--rounds 6 --decode-steps 128 --prefill-chunks 0 --after-first-segment
       --store-warm-tokens 5000000 --store-gpu-weight 1=2)
    run w4b dense-4b bcd 230 "${W[@]}"
    run w8b dense-8b bcd 230 "${W[@]}" ;;
  4)  # the gather's grid, now with balanced rounds: 8 and 32 programs against the default 16
      # (an eighth of the SMs), decode alone, no weights
    V=(--rounds 6 --decode-steps 128 --prefill-chunks 0 --after-first-segment
       --store-warm-tokens 5000000 --d-variant p8:mapped_programs=8
       --d-variant p32:mapped_programs=32)
    run grid4b dense-4b bcd 300 "${V[@]}" ;;
esac
