#!/usr/bin/env bash
# The next device calls for issue 14, prepared in session 18 (BENCHMARKS.md 10n left them
# undone: the device time ran out). From the repository root on the GPU machine, with
# .device-bin (engram-store --features cuda at a1e6ad6; no Rust changed since), .whl (grpcio,
# protobuf) and bench-data carried:
#   mkdir -p /tmp/o; OUT_FINAL=/tmp/o bash benches/results/h200-2026-12-03/scripts/session19.sh N; \
#     tar czf $OUT/callN.tgz -C /tmp/o .
# (the device returns at most 8 files a call; a call runs at most 600 s, hence three).
# Session 19 ran call 1 (pytest.log, tiered_kernel_cost.log, ipc_tier_cost.log here): memory
# opened over CUDA IPC was the whole story (172 us against 9.4 for the same gather), so calls 2-3
# were dropped; ipc_vmm.log is ipc_tier_cost.py with the cuMemCreate ways added (the same
# command, run alone). Calls 4-5 measure the fix (the tier shared as cuMemCreate allocations
# handed over as file descriptors), with the store built at the fix's commit.
#
# The question (10n): in the harness, with every row of both tables in the VRAM tier, the
# tiered gather took 274 us a layer inline on every SM, against 9 us for (b)'s gather and 15.5
# us for the same kernel alone over a tier of that size (its ids replayed, so in L2). Either the
# worker's kernel does not find the rows the store's tier holds (and reads them over PCIe), or
# it is that slow on rows not in L2, or on memory the store shares by CUDA IPC.
#   1: the new GPU test of count_hits; the kernel alone with fresh ids each launch (is it slow
#      off L2?), and over a tier another process opened over CUDA IPC (ipc_tier_cost.py: torch
#      memory, cuMemAlloc copies, and those copies from a second process);
#   2: every row in VRAM, decode 256, with (d:ch) counting the rows its gathers read from the
#      VRAM tier (does the worker find them?), (d:igch) the same inline;
#   3: the default quarter-of-the-tables tier, the same counting variant: (d)'s real hit rate
#      (vram_hit_estimate.py's offline 62-63% was never measured in the worker).
# Reading calls 1-2: (d:ch)'s count far below the rows gathered (and the log's "as the worker maps
# it" line: slots tagged, keys in the active index) -> the worker misses rows the tier holds: a
# bug between the store's publish and the worker's mapping. Near every row, and the kernel alone
# with fresh ids fast (~20 us) -> the tier's memory as the worker maps it is slow: ipc_tier_cost
# says whether CUDA IPC itself is (its "ipc" lines against "raw" and "torch"); alone with fresh
# ids slow too (~270 us) -> the kernel's chain of loads off L2, for any memory.
set -u
source "$(dirname "$0")/../../h200-2026-12-01h/scripts/session11.sh" none
source <(sed -n '/^clocked()/,/^}/p' "$(dirname "$0")/../../h200-2026-12-02f/scripts/session18.sh")
EVERY=(--store-warm-every-row --store-gpu-budget 16000000000)
DEC=(--rounds 4 --decode-steps 128 --prefill-chunks 0 --decode-batches 256
     --store-warm-tokens 5000000 --d-variant ch:mapped_count_hits=1)
GPUTESTS() {  # the GPU tests of the sharing path against the carried server (and gpu_tier)
  python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/site .whl/*.whl
  [ -x .device-bin/gpu_tier ] && { timeout 100 .device-bin/gpu_tier --test-threads 1 \
    > "$OUT_FINAL"/gpu_tier.log 2>&1; echo "gpu_tier rc=$?"; tail -3 "$OUT_FINAL"/gpu_tier.log; }
  PYTHONPATH=/tmp/site:$PWD/client/python ENGRAM_STORE_BIN=$PWD/.device-bin/engram-store \
    ENGRAM_STORE_GPU_BIN=$PWD/.device-bin/engram-store timeout 150 python3 -m pytest -q -rs \
    client/python/tests/test_torch_mapped.py client/python/tests/test_vmm.py \
    > "$OUT_FINAL"/pytest.log 2>&1
  echo "pytest rc=$?"; tail -3 "$OUT_FINAL"/pytest.log
}
case ${1:?call 1-5} in
  1)
    python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:$PWD/client/python ENGRAM_STORE_BIN=$PWD/.device-bin/engram-store \
      ENGRAM_STORE_GPU_BIN=$PWD/.device-bin/engram-store timeout 90 python3 -m pytest -q -rs \
      client/python/tests/test_torch_mapped.py -k counted > "$OUT_FINAL"/pytest.log 2>&1
    echo "pytest rc=$?"; tail -3 "$OUT_FINAL"/pytest.log
    PYTHONPATH=/tmp/site timeout 120 python3 benches/e2e/tiered_kernel_cost.py --rows 6144 \
      --hot 24000000 --table-rows 24003916 --runs 3 2>&1 | tee "$OUT_FINAL"/tiered_kernel_cost.log
    PYTHONPATH=/tmp/site timeout 150 python3 benches/e2e/ipc_tier_cost.py --rows 6144 \
      --hot 24000000 2>&1 | tee "$OUT_FINAL"/ipc_tier_cost.log ;;
  2) clocked ev4b run ev4b dense-4b bcd 280 "${DEC[@]}" "${EVERY[@]}" \
      --d-variant igch:inline_min_tokens=1,mapped_programs=4096,mapped_count_hits=1 ;;
  3) clocked q4b run q4b dense-4b bcd 250 "${DEC[@]}" ;;
  4) GPUTESTS; clocked q4b run q4b dense-4b bcd 250 "${DEC[@]}" ;;
  5) run q8b dense-8b bcd 230 "${DEC[@]}"
     run all4b dense-4b bcd 230 --rounds 3 --decode-steps 128 --prefill-chunks 6 \
       --decode-batches 64 --store-warm-tokens 5000000 ;;
esac
grep -h "VRAM tier\|median of" "$OUT_FINAL"/*.main.log 2>/dev/null | cut -c1-300
