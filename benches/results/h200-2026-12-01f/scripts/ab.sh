#!/usr/bin/env bash
# Call 1 of session 9: GPU tests (range guard), then dense-4b bcd in rounds, three variants.
set -u
R=/tmp/res; mkdir -p $R
export OUT=$R
TESTS=1 GPUTIER=0 ARMS=none bash benches/e2e/h200_device_run.sh dense-4b none 0 > $R/tests.log 2>&1
cat $R/tests.log | tail -30
if ! grep -q "pytest rc=0" $R/tests.log; then cp $R/*.log $OUT_FINAL/ 2>/dev/null; exit 1; fi
run() { # name, extra flags
  local name=$1; shift
  OUT=$R/$name TESTS=0 bash benches/e2e/h200_device_run.sh dense-4b bcd 165 --transport mapped \
    --rounds 5 --decode-steps 128 --prefill-chunks 8 "$@" > $R/$name.main.log 2>&1
  grep "median of\|exit" $R/$name.main.log
  cp $R/$name/e2e/offload-dense-4b.json $OUT_FINAL/$name.json 2>/dev/null
  cp $R/$name.main.log $OUT_FINAL/ 2>/dev/null
}
mkdir -p $R/v1 $R/v2 $R/v3
run v1
run v2 --mapped-programs 4096
run v3 --mapped-programs 4096 --uva-programs 4096
cp $R/tests.log $R/pytest.log $OUT_FINAL/ 2>/dev/null
