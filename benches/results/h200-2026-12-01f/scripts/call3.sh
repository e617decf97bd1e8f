#!/usr/bin/env bash
# Session 9, call 3: dense-4b A/Bs in rounds (side priority; VRAM tier at half the tables), then
# every arm of dense-4b in rounds.
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
run v4 dense-4b bcd 160 $AB --mapped-programs 4096 --uva-programs 4096 --side-priority -1
run v5 dense-4b bcd 140 $AB --store-gpu-budget 6340000000
run full4b dense-4b abcde 230 --rounds 3 --decode-steps 128 --prefill-chunks 8
