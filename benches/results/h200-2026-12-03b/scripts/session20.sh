#!/usr/bin/env bash
# The next device calls for issue 14, prepared in session 19 (BENCHMARKS.md 10o: with the VRAM
# tier handed over as file descriptors, arm (d) met every target; what 10o left open is below).
# From the repository root on the GPU machine, with .device-bin (engram-store --features cuda
# and the gpu_tier test binary, both stripped), .whl (grpcio 1.85.1 cp312 and protobuf 7.35.1
# abi3 manylinux wheels) and bench-data (en.tokens.u32) carried:
#   mkdir -p /tmp/o; OUT_FINAL=/tmp/o bash benches/results/h200-next/scripts/session20.sh N; \
#     tar czf $OUT/callN.tgz -C /tmp/o .
# (at most 8 files come back a call; a call runs at most 600 s). Session 20 ran calls 1 and 3
# as written (BENCHMARKS.md 10p; their outputs in ../call1, ../call3) and call 2 with LIMITS=1
# (the disk's raw io_uring rate on a table file, engram-bench limits, after the harness). The
# working tree and the carried folders must stay under 64 MiB: engram-bench and the trace
# travelled xz-compressed and were unpacked first (`xz -d .device-bin/engram-bench.xz
# bench-data/en.tokens.u32.xz`).
#   1: the Rust gpu_tier tests as mended in session 19 (never run on a GPU since) and the
#      mapped path's Python GPU tests; then arm (e) on dense-4b after the fix (it reads through
#      LookupInto, whose writes into the worker's tensor still go through a CUDA IPC mapping the
#      server opens: compare (e)/(c) with 10i's 0.12-0.46);
#   2: arm (e) on dense-8b;
#   3: the knobs of 10f-10n measured again now that the tier is read at full speed: (d) on every
#      SM (all), inline on the model's stream (ig), the split gather (sp), at decode 256.
set -u
source "$(dirname "$0")/../../h200-2026-12-01h/scripts/session11.sh" none
source <(sed -n '/^GPUTESTS()/,/^}/p' "$(dirname "$0")/../../h200-2026-12-03/scripts/session19.sh")
E=(--rounds 3 --decode-steps 96 --prefill-chunks 6 --store-warm-tokens 5000000)
case ${1:?call 1-3} in
  1) GPUTESTS; run e4b dense-4b cde 330 "${E[@]}" ;;
  2) run e8b dense-8b cde 500 "${E[@]}" ;;
  3) run k4b dense-4b bcd 400 --rounds 4 --decode-steps 128 --prefill-chunks 0 \
       --decode-batches 256 --store-warm-tokens 5000000 --d-variant all:mapped_programs=4096 \
       --d-variant ig:inline_min_tokens=1,mapped_programs=4096 --d-variant sp:mapped_split_misses=1 ;;
esac
grep -h "median of" "$OUT_FINAL"/*.main.log 2>/dev/null | cut -c1-300
