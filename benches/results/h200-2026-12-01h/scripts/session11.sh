#!/usr/bin/env bash
# Session 11's device calls (BENCHMARKS.md 10h), as they ran: `OUT_FINAL=$OUT bash session11.sh
# CALL` from the repository root on the GPU machine, binaries and wheels carried in .device-bin
# (this session's store: the VRAM tier patches its index by the buckets a refresh changed),
# .device-bin-old (session 10's store, which uploaded each index whole, twice a refresh) and .whl.
# CALL 1: the GPU tests, then arm (d)'s decode against (b) and (c) with the new store and with
# the old one, each its own harness run (own store) on the same tokens. (The GPU tests' lines of
# calls 1 and 4 are gathered in gpu_tests here; they printed tails of the logs a little
# differently as they ran.)
set -u
R=/tmp/res; mkdir -p $R
run() { # name shape arms limit, extra flags
  local name=$1 shape=$2 arms=$3 limit=$4; shift 4
  OUT=$R/$name TESTS=0 HUGE_SHM=0 bash benches/e2e/h200_device_run.sh $shape $arms \
    $limit --transport mapped "$@" > $R/$name.main.log 2>&1
  grep "median of\|exit\|tier counters\|VRAM tier holds\|mapped the\|checks:" $R/$name.main.log
  for f in $R/$name/e2e/offload-*.json $R/$name/e2e/offload-*.svg; do
    [ -f "$f" ] && cp "$f" "$OUT_FINAL/$name-$(basename $f)"; done
  cp $R/$name.main.log $OUT_FINAL/ 2>/dev/null
}
gpu_tests() { # limit of the regions test in s: gpu_tier, test_torch_mapped, test_cuda_regions
  OUT=$R TESTS=1 bash benches/e2e/h200_device_run.sh dense-4b none 0 > $R/tests.log 2>&1
  python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/site .whl/*.whl
  PYTHONPATH=/tmp/site:$PWD/client/python ENGRAM_STORE_GPU_BIN=$PWD/.device-bin/engram-store \
    timeout $1 python3 -m pytest -q -rs client/python/tests/test_cuda_regions.py \
    > $R/pytest-regions.log 2>&1; echo "regions pytest rc=$?"; tail -3 $R/pytest-regions.log
  cp $R/tests.log $R/pytest.log $R/gpu_tier.log $R/pytest-regions.log "$OUT_FINAL"/ 2>/dev/null
  grep "rc=\|passed\|failed" $R/tests.log
}
DECODE=(--rounds 4 --decode-steps 256 --prefill-chunks 0)
case ${1:?call 1-4} in
  1)
    gpu_tests 120
    run new4b dense-4b bcd 200 "${DECODE[@]}"
    BINDIR=.device-bin-old run old4b dense-4b bcd 200 "${DECODE[@]}" ;;
  2)  # call 1's rounds swung 2-5% from one to the next: more, shorter rounds. In each run a
      # variant of (d) whose gathers are not recorded (mapped_record_every=0): the worker's own
      # share of the recording's cost, the store's refreshes (driven by (d)'s recording) the same
      # for both. Then the store refreshing every 10 s instead of every 1 s.
    V=(--rounds 8 --decode-steps 128 --prefill-chunks 0 --d-variant nr:mapped_record_every=0)
    run rec4b dense-4b bcd 240 "${V[@]}"
    run slow4b dense-4b bcd 240 "${V[@]}" --store-gpu-refresh-ms 10000 ;;
  3)  # (d)'s step start: the backend's prefetch is ~80-170 us of host work before the model's
      # first segment is queued. A variant begins it after that segment (prefetch(after=ids
      # event)); the GPU test of prefetch(after=...) first.
    python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:$PWD/client/python ENGRAM_STORE_BIN=$PWD/.device-bin/engram-store \
      ENGRAM_STORE_GPU_BIN=$PWD/.device-bin/engram-store timeout 150 python3 -m pytest -q -rs \
      client/python/tests/test_torch_mapped.py > $R/pytest.log 2>&1; echo "pytest rc=$?"
    tail -3 $R/pytest.log; cp $R/pytest.log "$OUT_FINAL"/
    V=(--rounds 8 --decode-steps 128 --prefill-chunks 0 --d-variant late:after_first_segment=1)
    run late4b dense-4b bcd 230 "${V[@]}"
    run late8b dense-8b bcd 230 "${V[@]}" ;;
  4)  # the GPU tests again after hints went through the tier's counting thread
    gpu_tests 60 ;;
esac
