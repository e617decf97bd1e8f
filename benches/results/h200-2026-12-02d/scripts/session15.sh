#!/usr/bin/env bash
# Session 15's device calls (BENCHMARKS.md 10l), as they ran: `OUT_FINAL=$OUT bash session15.sh
# CALL` from the repository root on the GPU machine, with .device-bin (engram-store --features
# cuda, gpu_tier, gpu_serving at a1e6ad6), .whl and bench-data (the whole English trace) carried.
# `run` is session 11's (sourced). Decode only, 6 rounds x 128 steps, the store arms warmed from
# every held-out token. The variants: misses foreseen on the host and copied up by the copy
# engine at prefetch (pm), with layer 14's copy-up after layer 1's rows are read (pmst), and
# with the copy split over 4 threads (pm4).
set -u
source "$(dirname "$0")/../../h200-2026-12-01h/scripts/session11.sh" none
DEC=(--rounds 6 --decode-steps 128 --prefill-chunks 0 --store-warm-tokens 5000000)
V=(--d-variant pm:mapped_predict_misses=1
   --d-variant pmst:mapped_predict_misses=1,stagger_gathers=1
   --d-variant pm4:mapped_predict_misses=1,stagger_gathers=1,mapped_copy_threads=4)
case ${1:?call 1-5} in
  1)  # the mapped backend's GPU tests (the foreseen-misses test's first run), then dense-4b
    OUT=$R TESTS=1 GPUTIER=0 bash benches/e2e/h200_device_run.sh dense-4b none 0 > $R/tests.log 2>&1
    grep "rc=\|passed\|failed" $R/tests.log; tail -5 $R/pytest.log
    cp $R/tests.log $R/pytest.log "$OUT_FINAL"/ 2>/dev/null
    run pm4b dense-4b bcd 400 "${DEC[@]}" "${V[@]}" ;;
  2)  # call 1: the foreseen misses cost 17-20% (the host's copy-up late for layer 1 by 0.9-2.2
      # ms). The mapped GPU test again (its warm now waits for the hot rows' tags), the host
      # side alone on this host (foresee_cost.py), and dense-8b with the host time per
      # foreseen gather by part in the log (pm and pmst; pm4 was no better)
    python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:$PWD/client/python ENGRAM_STORE_BIN=$PWD/.device-bin/engram-store \
      ENGRAM_STORE_GPU_BIN=$PWD/.device-bin/engram-store timeout 150 python3 -m pytest -q -rs \
      client/python/tests/test_torch_mapped.py > $R/pytest.log 2>&1; echo "pytest rc=$?"
    tail -3 $R/pytest.log; cp $R/pytest.log "$OUT_FINAL"/
    PYTHONPATH=/tmp/site:$PWD/client/python timeout 120 python3 benches/e2e/foresee_cost.py \
      --batch 64,256 2>&1 | tee "$OUT_FINAL"/foresee_cost.log
    run pm8b dense-8b bcd 330 "${DEC[@]}" "${V[@]:0:4}" ;;
  3)  # the default arms again, 10 rounds each shape: (d)/(b) at decode 256 swung 0.976-0.994
      # between sessions' runs
    D10=(--rounds 10 --decode-steps 128 --prefill-chunks 0 --store-warm-tokens 5000000)
    run def4b dense-4b bcd 270 "${D10[@]}"
    run def8b dense-8b bcd 290 "${D10[@]}" ;;
  4)  # the design's lower bound (session 14 left it unmeasured): the whole tables in the VRAM
      # tier and the gather inline on every SM (as (b) gathers), beside the default (d)
    run fullig4b dense-4b bcd 330 "${DEC[@]}" --store-gpu-budget 14000000000 \
      --d-variant ig:inline_min_tokens=1,mapped_programs=4096 ;;
  5)  # call 4: inline on every SM with every row in VRAM, the tiered gather still took ~280 us
      # for a decode-256 layer (6,144 rows) against (b)'s 12 us. The kernel alone: its device
      # time by shape against the plain gather, and its registers and spills
    python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site timeout 240 python3 benches/e2e/tiered_kernel_cost.py --rows 1536,6144 2>&1 \
      | tee "$OUT_FINAL"/tiered_kernel_cost.log ;;
esac
