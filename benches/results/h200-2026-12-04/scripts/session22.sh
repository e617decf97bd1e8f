#!/usr/bin/env bash
# Session 22's device calls for issue 14 (BENCHMARKS.md 10q), as they ran. From the repository
# root on the GPU machine, with .device-bin (engram-store --features cuda, stripped, and
# engram-bench.xz), .whl (grpcio 1.85.1 cp312, protobuf 7.35.1 abi3) and bench-data
# (en.tokens.u32.xz) carried; engram-bench and the trace travel xz-compressed to keep the carry
# under 64 MiB:
#   xz -d .device-bin/engram-bench.xz bench-data/en.tokens.u32.xz; chmod +x .device-bin/*
#   mkdir -p /tmp/o; OUT_FINAL=/tmp/o bash benches/results/h200-2026-12-04/scripts/session22.sh N
#   tar czf $OUT/callN.tgz -C /tmp/o .
#   1: arm (e) on dense-8b (session 20's call 2, which never got a machine), then the disk's raw
#      io_uring random-read rate on a table file (LIMITS=1, engram-bench limits);
#   2: arm (d) against (b) and (c) at decode batch 64 on dense-4b, 8 rounds: session 20's call 1
#      measured d/c 0.986 there (3 rounds), 10o 1.001-1.021; more rounds to settle it.
set -u
source "$(dirname "$0")/../../h200-2026-12-01h/scripts/session11.sh" none
case ${1:?call 1-2} in
  1) LIMITS=1 run e8b dense-8b cde 470 --rounds 3 --decode-steps 96 --prefill-chunks 6 \
       --store-warm-tokens 5000000
     cp /tmp/res/e8b/limits.log "$OUT_FINAL"/e8b-limits.log 2>/dev/null
     tail -12 "$OUT_FINAL"/e8b-limits.log ;;
  2) run d64 dense-4b bcd 420 --rounds 8 --decode-steps 128 --prefill-chunks 0 \
       --decode-batches 64 --store-warm-tokens 5000000 ;;
esac
grep -h "median of" "$OUT_FINAL"/*.main.log 2>/dev/null | cut -c1-300
# Call 3 (added after call 2 gave 0.979): (c) and (d) alone at decode 64 on dense-4b, 12 rounds
# of 256 steps (twice call 2's), with a variant of (d) that records nothing
# (mapped_record_every=0: 10h measured the worker's recording at up to a point):
#   source benches/results/h200-2026-12-01h/scripts/session11.sh none
#   run q64 dense-4b cd 420 --rounds 12 --decode-steps 256 --prefill-chunks 0 \
#     --decode-batches 64 --store-warm-tokens 5000000 --d-variant nr:mapped_record_every=0
# Call 4 (added after call 3 put the recording at ~2 points of decode 64): the recording's cost
# by how often it runs and how often the store refreshes: variants recording nothing (nr) and
# every 256th gather (r256) beside the default (every 32nd), with the store refreshing every
# second (the default, q64r) and every 10 s (q64s):
#   source benches/results/h200-2026-12-01h/scripts/session11.sh none
#   V=(--rounds 10 --decode-steps 256 --prefill-chunks 0 --decode-batches 64 \
#      --store-warm-tokens 5000000 --d-variant nr:mapped_record_every=0 \
#      --d-variant r256:mapped_record_every=256)
#   run q64r dense-4b cd 230 "${V[@]}"; run q64s dense-4b cd 230 "${V[@]}" --store-gpu-refresh-ms 10000
# Call 5 (after call 4: with the store refreshing every 10 s the recording cost nothing): every
# phase with the store refreshing every 10 s, before making that the default:
#   source benches/results/h200-2026-12-01h/scripts/session11.sh none
#   run r10 dense-4b cd 200 --rounds 3 --decode-steps 96 --prefill-chunks 6 \
#     --store-warm-tokens 5000000 --store-gpu-refresh-ms 10000
# Next (not run: device time spent): the same A/B with the refresh kept at 1 s but deferred while
# it wants few rows (serve --gpu-refresh-min-rows, new after call 5), the server's refresh sizes
# logged (RUST_LOG=engram_store_cache=debug, in the harness's server logs) to choose N:
#   run q64m dense-4b cd 230 "${V[@]}" --store-gpu-refresh-min-rows 65536
