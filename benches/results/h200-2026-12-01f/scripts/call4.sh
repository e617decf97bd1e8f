#!/usr/bin/env bash
# Session 9, call 4: every arm of dense-8b in rounds; dense-4b prefill of (a), (c), (e); the disk.
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
run full8b dense-8b abcde 265 --rounds 3 --decode-steps 128 --prefill-chunks 8
run pre4b dense-4b ace 165 --rounds 3 --prefill-chunks 8 --decode-batches ""
mkdir -p $R/limits; OUT=$R/limits TESTS=0 LIMITS=1 timeout 40 bash benches/e2e/h200_device_run.sh dense-4b none 0 > $R/limits.main.log 2>&1
cp $R/limits/limits.log $OUT_FINAL/ 2>/dev/null; grep -i "iops\|reads/s" $R/limits/limits.log | head
