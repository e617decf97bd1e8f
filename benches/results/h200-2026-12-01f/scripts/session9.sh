#!/usr/bin/env bash
# Session 9's device calls (BENCHMARKS.md 10f), as they ran: `OUT_FINAL=$OUT bash session9.sh
# CALL` from the repository root on the GPU machine, binaries and wheels carried in .device-bin
# and .whl. CALL: 1 and 2 (GPU tests, then the A/Bs v1-v3; call 1 stopped at the failed test),
# 3 (v4, v5, every arm of dense-4b), 4 (every arm of dense-8b, dense-4b prefill of (a), (c),
# (e), the disk).
set -u
R=/tmp/res; mkdir -p $R
run() { # name shape arms limit, extra flags
  local name=$1 shape=$2 arms=$3 limit=$4; shift 4
  OUT=$R/$name TESTS=0 bash benches/e2e/h200_device_run.sh $shape $arms $limit --transport mapped \
    "$@" > $R/$name.main.log 2>&1
  grep "median of\|exit\|tier counters\|VRAM tier holds" $R/$name.main.log
  for f in $R/$name/e2e/offload-*.json $R/$name/e2e/offload-*.svg; do
    [ -f "$f" ] && cp "$f" "$OUT_FINAL/$name-$(basename $f)"; done
  cp $R/$name.main.log $OUT_FINAL/ 2>/dev/null
}
AB="--rounds 5 --decode-steps 128 --prefill-chunks 8"
case ${1:?call 1-4} in
  1|2)
    OUT=$R TESTS=1 GPUTIER=0 bash benches/e2e/h200_device_run.sh dense-4b none 0 > $R/tests.log 2>&1
    cp $R/tests.log $R/pytest.log "$OUT_FINAL"/ 2>/dev/null
    grep -q "pytest rc=0" $R/tests.log || exit 1
    run v1 dense-4b bcd 165 $AB
    run v2 dense-4b bcd 165 $AB --mapped-programs 4096
    run v3 dense-4b bcd 165 $AB --mapped-programs 4096 --uva-programs 4096 ;;
  3)
    run v4 dense-4b bcd 160 $AB --mapped-programs 4096 --uva-programs 4096 --side-priority -1
    run v5 dense-4b bcd 140 $AB --store-gpu-budget 6340000000
    run full4b dense-4b abcde 230 --rounds 3 --decode-steps 128 --prefill-chunks 8 ;;
  4)
    run full8b dense-8b abcde 265 --rounds 3 --decode-steps 128 --prefill-chunks 8
    run pre4b dense-4b ace 165 --rounds 3 --prefill-chunks 8 --decode-batches ""
    mkdir -p $R/limits
    OUT=$R/limits TESTS=0 LIMITS=1 timeout 40 bash benches/e2e/h200_device_run.sh dense-4b none 0 \
      > $R/limits.main.log 2>&1
    cp $R/limits/limits.log "$OUT_FINAL"/ 2>/dev/null ;;
esac
