#!/usr/bin/env bash
# Session 13's device calls (BENCHMARKS.md 10j), as they ran: `OUT_FINAL=$OUT bash session13.sh
# CALL` from the repository root on the GPU machine, with .device-bin (engram-store --features
# cuda), .whl and bench-data (the whole English trace) carried. `run` is session 11's (sourced).
# Decode only: where (d) fell short of 0.99x (b) (batch 256). Every arm begins its lookup after
# the model's first segment (the harness's default now) and the store arms are warmed from every
# held-out token.
set -u
source "$(dirname "$0")/../../h200-2026-12-01h/scripts/session11.sh" none
DEC=(--rounds 6 --decode-steps 128 --prefill-chunks 0 --store-warm-tokens 5000000)
case ${1:?call 1-4} in
  1)  # the first GPU run of the interpreter-tested kernel shapes (test_torch_mapped), then the
      # gather program's shape beside decode: fewer warps (w1, w2), more rows per block (b32,
      # b64: more PCIe loads in flight per program, so fewer SM-microseconds held), and the
      # model's stream above the gathers' with one short program per block (mp).
    OUT=$R TESTS=1 GPUTIER=0 bash benches/e2e/h200_device_run.sh dense-4b none 0 > $R/tests.log 2>&1
    grep "rc=\|passed\|failed" $R/tests.log; cp $R/tests.log $R/pytest.log "$OUT_FINAL"/
    V=(--d-variant w1:mapped_warps=1 --d-variant w2:mapped_warps=2
       --d-variant b32:mapped_block_rows=32 --d-variant b64:mapped_block_rows=64
       --d-variant mp:model_priority=-1,mapped_programs=4096)
    run shape4b dense-4b bcd 400 "${DEC[@]}" "${V[@]}" ;;
  2)  # call 1's two best (w2, b32) and both together on dense-8b's decode, then the same on
      # dense-4b's prefill (the gathers of a 4,096-token chunk run in the same kernel: a shape
      # that helps beside decode must not cost prefill)
    V=(--d-variant w2:mapped_warps=2 --d-variant b32:mapped_block_rows=32
       --d-variant w2b32:mapped_warps=2,mapped_block_rows=32)
    run shape8b dense-8b bcd 260 "${DEC[@]}" "${V[@]}"
    run pre4b dense-4b bcd 200 --rounds 4 --decode-batches "" --prefill-chunks 4 \
      --store-warm-tokens 5000000 "${V[@]}" ;;
  3)  # a VRAM tier of half the tables' bytes (3.2x call 1's 9.78M rows): how much of (d)'s
      # loss against (b) at decode 256 the PCIe misses make; w2 (call 1's best at decode 256 on
      # dense-4b, no gain on dense-8b in call 2) again beside it
    HALF=(--store-gpu-budget 6337962312)
    run half4b dense-4b bcd 250 "${DEC[@]}" "${HALF[@]}" --d-variant w2:mapped_warps=2
    run half8b dense-8b bcd 270 "${DEC[@]}" "${HALF[@]}" ;;
  4)  # the whole tables in (d)'s VRAM tier (14 GB budget for 12.7 GB of rows): (d)'s gather
      # then reads no row over PCIe; what is left of its loss against (b) is the tiered
      # kernel beside the model (the probe, the side stream) rather than the PCIe reads
    run full4b dense-4b bcd 215 --rounds 5 --decode-steps 128 --prefill-chunks 0 \
      --store-warm-tokens 5000000 --store-gpu-budget 14000000000 ;;
esac
