#!/usr/bin/env bash
# Session 14's device calls (BENCHMARKS.md 10k), as they ran: `OUT_FINAL=$OUT bash session14.sh
# CALL` from the repository root on the GPU machine, with .device-bin (engram-store --features
# cuda, gpu_tier, gpu_serving at 5172385), .whl and bench-data (the whole English trace) carried.
# `run` is session 11's (sourced). Decode only, 6 rounds x 128 steps, the store arms warmed from
# every held-out token; the warm now waits out a refresh under way (rows_entering).
set -u
source "$(dirname "$0")/../../h200-2026-12-01h/scripts/session11.sh" none
DEC=(--rounds 6 --decode-steps 128 --prefill-chunks 0 --store-warm-tokens 5000000)
# per-layer grids (layer 1's gather wide and early, layer 14's narrow and out of the model's
# way) and layer 14's gather queued after layer 1's rows are read (stagger)
V=(--d-variant f32l4:mapped_programs=32,mapped_late_programs=4
   --d-variant f16l4:mapped_late_programs=4 --d-variant st:stagger_gathers=1
   --d-variant f32st:mapped_programs=32,stagger_gathers=1)
case ${1:?call 1-5} in
  1)  # the GPU tests (gpu_tier: rows_entering while a refresh is under way; the mapped
      # backend's test incl. table_programs), then the whole tables in (d)'s VRAM tier (14 GB
      # budget for 12.7 GB of rows; session 13's call 4 again, now that the warm waits for it)
    OUT=$R TESTS=1 bash benches/e2e/h200_device_run.sh dense-4b none 0 > $R/tests.log 2>&1
    grep "rc=\|passed\|failed" $R/tests.log
    cp $R/tests.log $R/pytest.log $R/gpu_tier.log "$OUT_FINAL"/ 2>/dev/null
    run full4b dense-4b bcd 330 --rounds 5 --decode-steps 128 --prefill-chunks 0 \
      --store-warm-tokens 5000000 --store-gpu-budget 14000000000 ;;
  2) run grid4b dense-4b bcd 420 "${DEC[@]}" "${V[@]}" ;;
  3) run grid8b dense-8b bcd 450 "${DEC[@]}" "${V[@]}" ;;
  4)  # where (d)'s loss against (b) goes with no PCIe read left: the whole tables in the VRAM
      # tier (call 1, both shapes) and a variant gathering on the model's stream before the
      # Engram layer (inline, as (b) does) beside the default side stream
    FULL=(--rounds 6 --decode-steps 128 --prefill-chunks 0 --store-warm-tokens 5000000
          --store-gpu-budget 14000000000 --d-variant in:inline_min_tokens=1)
    run full4bi dense-4b bcd 270 "${FULL[@]}"
    run full8bi dense-8b bcd 280 "${FULL[@]}" ;;
  5)  # call 4's inline gather ran on the side stream's grid (16 programs: 290 us for a decode
      # 256 layer's rows, all in VRAM, against (b)'s 12 us on every SM). Inline on every SM
      # (and 8 rows a block, twice the programs), the VRAM tier at its default size
    run inl4b dense-4b bcd 300 "${DEC[@]}" \
      --d-variant ig:inline_min_tokens=1,mapped_programs=4096 \
      --d-variant igb8:inline_min_tokens=1,mapped_programs=4096,mapped_block_rows=8 ;;
esac
