#!/usr/bin/env bash
# Device calls for issue 14, prepared in session 16 (which had no device time left) and run in
# session 17 (BENCHMARKS.md 10m), as they ran:
# `OUT_FINAL=$OUT bash benches/results/h200-2026-12-02e/scripts/session16.sh CALL` from the repository
# root on the GPU machine, with .device-bin (engram-store --features cuda at a1e6ad6: no Rust
# changed since), .whl and bench-data carried. `run` is session 11's (sourced; --transport mapped).
# Session 17 ran calls 1, 3 and 4 as below; call 2 after the split and fetched GPU tests again
# (call 1's split test had counted the tier's misses before a refresh: fixed in the test), as
#   pip install --target /tmp/site .whl/*.whl; PYTHONPATH=/tmp/site:client/python ... pytest -q \
#     client/python/tests/test_torch_mapped.py -k "split_gathers or fetched_gathers"
# and a fifth call: `python3 benches/e2e/tiered_kernel_cost.py --rows 1536,6144` at 6ca6f29
# (the tiered kernel's host rows read with a scale load per value, an option since removed),
# and a sixth, dense-4b decode 256 under CUDA MPS (failed at its first step, see 10m):
#   export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
#   nvidia-cuda-mps-control -d; source <session11.sh> none; run mps4b dense-4b bcd 240 \
#     --rounds 6 --decode-steps 128 --prefill-chunks 0 --decode-batches 256 \
#     --store-warm-tokens 5000000 --d-variant sp:mapped_split_misses=1
#   echo quit | nvidia-cuda-mps-control
#   1: the mapped backend's GPU tests (the split and fetched gathers' first GPU runs), then the
#      tiered kernel alone as CUDA-graph replays at the harness's sizes, the split and the
#      fetched paths beside the one kernel;
#   2, 3: dense-4b, dense-8b decode, (d) against its split (sp) and fetched (fm) variants, (b)
#      and (c) in the same rounds; on dense-4b every arm's kernels per step under torch.profiler
#      afterwards ($OUT_FINAL/prof-sp4b; not on dense-8b, whose rounds come near the limit);
#   4: the shared tables on huge pages (HUGE_SHM=1) against /dev/shm, dense-4b decode.
set -u
source "$(dirname "$0")/../../h200-2026-12-01h/scripts/session11.sh" none
DEC=(--rounds 6 --decode-steps 128 --prefill-chunks 0 --store-warm-tokens 5000000)
SP=(--d-variant sp:mapped_split_misses=1 --d-variant fm:mapped_fetch_misses=1)
site() {
  python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/site .whl/*.whl
}
case ${1:?call 1-4} in
  1)
    site
    PYTHONPATH=/tmp/site:$PWD/client/python ENGRAM_STORE_BIN=$PWD/.device-bin/engram-store \
      ENGRAM_STORE_GPU_BIN=$PWD/.device-bin/engram-store timeout 200 python3 -m pytest -q -rs \
      client/python/tests/test_torch_mapped.py > $R/pytest.log 2>&1; echo "pytest rc=$?"
    tail -5 $R/pytest.log; cp $R/pytest.log "$OUT_FINAL"/
    PYTHONPATH=/tmp/site:$PWD/client/python timeout 300 python3 benches/e2e/tiered_kernel_cost.py \
      --rows 1536,6144 2>&1 | tee "$OUT_FINAL"/tiered_kernel_cost.log ;;
  2)
    ENGRAM_OFFLOAD_KERNEL_PROFILE=$OUT_FINAL/prof-sp4b run sp4b dense-4b bcd 420 "${DEC[@]}" "${SP[@]}" ;;
  3)
    run sp8b dense-8b bcd 420 "${DEC[@]}" "${SP[@]}" ;;
  4)  # run() sets HUGE_SHM=0; this one mounts the huge-page tmpfs
    OUT=$R/huge4b TESTS=0 HUGE_SHM=1 bash benches/e2e/h200_device_run.sh dense-4b bcd 420 \
      --transport mapped "${DEC[@]}" "${SP[@]}" > $R/huge4b.main.log 2>&1
    grep "median of\|exit\|mapped the\|checks:" $R/huge4b.main.log
    cp $R/huge4b.main.log $R/huge4b/e2e/offload-*.json "$OUT_FINAL"/ 2>/dev/null ;;
esac
