#!/usr/bin/env bash
# Session 10's device calls (BENCHMARKS.md 10g), as they ran: `OUT_FINAL=$OUT bash session10.sh
# CALL` from the repository root on the GPU machine, binaries and wheels carried in .device-bin
# and .whl. CALL 1: the GPU tests, then A/Bs of arm (d)'s decode gather as variants of (d) in
# the same process and rounds (--d-variant) on both shapes; 2 and 3: every arm in rounds, with
# the new defaults (the mapped gather on 16 programs, the prefill lookahead issued after the last
# Engram layer's segment is queued) and (d) on the old grid (66 programs) and on 8 as variants.
# From call 3 on, each round starts one arm further on (so no arm always follows (e), whose
# idle GPU gives the next arm a faster start). Calls 2 and 3 share tables from /dev/shm (HUGE_SHM=0: call 1's huge pages mapped no faster).
set -u
R=/tmp/res; mkdir -p $R
run() { # name shape arms limit, extra flags
  local name=$1 shape=$2 arms=$3 limit=$4; shift 4
  OUT=$R/$name TESTS=0 HUGE_SHM=${HUGE_SHM:-1} bash benches/e2e/h200_device_run.sh $shape $arms \
    $limit --transport mapped "$@" > $R/$name.main.log 2>&1
  grep "median of\|exit\|tier counters\|VRAM tier holds\|mapped the\|checks:\|huge pages" $R/$name.main.log
  for f in $R/$name/e2e/offload-*.json $R/$name/e2e/offload-*.svg; do
    [ -f "$f" ] && cp "$f" "$OUT_FINAL/$name-$(basename $f)"; done
  cp $R/$name.main.log $OUT_FINAL/ 2>/dev/null
}
VARIANTS=(--d-variant staged:stage_min_tokens=64 --d-variant p16:mapped_programs=16)
VARIANTS2=(--d-variant p66:mapped_programs=66 --d-variant p8:mapped_programs=8)
case ${1:?call 1-3} in
  1)
    OUT=$R TESTS=1 GPUTIER=0 bash benches/e2e/h200_device_run.sh dense-4b none 0 > $R/tests.log 2>&1
    cp $R/tests.log $R/pytest.log "$OUT_FINAL"/ 2>/dev/null
    tail -4 $R/tests.log
    run ab4b dense-4b bcd 200 --rounds 4 --decode-steps 128 --prefill-chunks 8 "${VARIANTS[@]}"
    run ab8b dense-8b bcd 200 --rounds 4 --decode-steps 128 --prefill-chunks 8 "${VARIANTS[@]}" ;;
  2)
    HUGE_SHM=0 run full4b dense-4b abcde ${LIMIT4:-330} --rounds 3 --decode-steps 128 \
      --prefill-chunks 8 "${VARIANTS2[@]}" ;;
  3)  # and the region test of the idle-reaper fix; then decode alone, the grid A/B in 5 rounds
    python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:$PWD/client/python ENGRAM_STORE_GPU_BIN=$PWD/.device-bin/engram-store \
      timeout 120 python3 -m pytest -q -rs client/python/tests/test_cuda_regions.py \
      > $R/pytest-regions.log 2>&1; echo "regions pytest rc=$?"; tail -3 $R/pytest-regions.log
    cp $R/pytest-regions.log "$OUT_FINAL"/
    HUGE_SHM=0 run full8b dense-8b abcde ${LIMIT8:-310} --rounds 3 --decode-steps 128 \
      --prefill-chunks 8 "${VARIANTS2[@]}"
    HUGE_SHM=0 run grid4b dense-4b bcd 190 --rounds 5 --decode-steps 128 --prefill-chunks 0 \
      "${VARIANTS2[@]}" --d-variant p32:mapped_programs=32 ;;
  4)  # (d) ran slower than its variants in every run: is it the first reader of each round's
      # rows, whose recorded ids the server then takes into its VRAM tier? Recording off. Then
      # dense-8b's prefill, which call 3's time limit cut.
    HUGE_SHM=0 run norec4b dense-4b bcd 165 --rounds 5 --decode-steps 128 --prefill-chunks 0 \
      --mapped-record-every 0 --d-variant p8:mapped_programs=8
    HUGE_SHM=0 run pre8b dense-8b abcde 150 --rounds 3 --prefill-chunks 8 --decode-batches "" ;;
esac
