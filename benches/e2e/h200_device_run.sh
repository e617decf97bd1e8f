#!/usr/bin/env bash
# One call on a GPU machine that has no Rust toolchain (the `device` machine of BENCHMARKS.md
# section 10): binaries built on the dev machine and carried in $BINDIR, Python wheels newer
# than the machine's in $WHEELS. In order, each part switched by an environment variable:
#   TESTS=1 (default): the VRAM tier's GPU tests ($BINDIR/gpu_tier, GPUTIER=0 skips them) and
#     client/python/tests/test_torch_mapped.py (PYTEST=0 skips it) against the carried server;
#   PROFILE=1: benches/e2e/mapped_profile.py (decode kernels and host time, the backend's
#     prefetch by function, a prefill chunk's gathers per kernel shape), PROFILE_STEPS steps;
#   the offload harness (benches/e2e/h200_session.sh) on SHAPES with ARMS (ARMS=none: not),
#     and with AB_STAGGER=1 the same again with --stagger-gathers, into $OUT/e2e-stagger;
#   LIMITS=1: raw io_uring random-read IOPS on a table file and loopback TCP (engram-bench
#     limits), the disk (arm e) is measured against.
#   HUGE_SHM=1: the store shares its tables (arm (d), --transport mapped) from a tmpfs with huge
#     pages mounted here (/tmp/engram-hugeshm, HUGE_SHM_SIZE, default 40G; unmounted at the end)
#     instead of /dev/shm: the worker page-locks 2-MiB pages instead of 4-KiB ones (mapping the
#     tables took 33-36 s with /dev/shm). Falls back to /dev/shm if the mount fails.
#
#   [BINDIR=.device-bin] [WHEELS=.whl] [TRACE=bench-data/en.tokens.u32] [ENGRAM_VOCAB=1000000] \
#     OUT=dir bash benches/e2e/h200_device_run.sh SHAPES ARMS LIMIT [extra harness flags]
#
# e.g. (section 10e): TESTS=0 bash benches/e2e/h200_device_run.sh "dense-4b dense-8b" bcd 250 \
#   --transport mapped --rounds 5 --decode-steps 192 --prefill-chunks 10.
# $BINDIR holds engram-store (--features cuda), and optionally gpu_tier
# (cargo test --release -p engram-store-cache --features cuda --test gpu_tier --no-run) and
# engram-bench. Tables are written to /tmp/eo once and reused.
set -u
: "${OUT:?set OUT to the directory for results}"
SHAPES=${1:-dense-4b}; ARMS=${2:-acd}; LIMIT=${3:-250}; shift 3 || true
BINDIR=${BINDIR:-.device-bin}; WHEELS=${WHEELS:-.whl}
TRACE=${TRACE:-bench-data/en.tokens.u32}; ENGRAM_VOCAB=${ENGRAM_VOCAB:-1000000}
cd "$(dirname "$0")/../.."
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/site "$WHEELS"/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD/client/python
date +%T
df -h /dev/shm /tmp | cat; free -g | head -2
mkdir -p target/release && cp "$BINDIR/engram-store" target/release/
if [ "${TESTS:-1}" = 1 ]; then
  if [ "${GPUTIER:-1}" = 1 ] && [ -x "$BINDIR/gpu_tier" ]; then
    timeout 150 "$BINDIR/gpu_tier" > "$OUT/gpu_tier.log" 2>&1; echo "gpu_tier rc=$?"
    tail -3 "$OUT/gpu_tier.log"
  fi
  if [ "${PYTEST:-1}" = 1 ]; then
    ENGRAM_STORE_BIN=$PWD/$BINDIR/engram-store ENGRAM_STORE_GPU_BIN=$PWD/$BINDIR/engram-store \
      timeout 200 python3 -m pytest -q -rs client/python/tests/test_torch_mapped.py \
      > "$OUT/pytest.log" 2>&1; echo "pytest rc=$?"; tail -25 "$OUT/pytest.log"
  fi
fi
date +%T
if [ "${PROFILE:-0}" = 1 ]; then
  timeout 240 python3 benches/e2e/mapped_profile.py --data /tmp/eo --server-bin "$BINDIR/engram-store" \
    --trace "$TRACE" --engram-vocab "$ENGRAM_VOCAB" --decode-steps "${PROFILE_STEPS:-48}" 2>&1 \
    | tee "$OUT/profile.log"
fi
SHARE=()
if [ "${HUGE_SHM:-0}" = 1 ]; then
  mkdir -p /tmp/engram-hugeshm
  if mount -t tmpfs -o "huge=always,size=${HUGE_SHM_SIZE:-40G}" tmpfs /tmp/engram-hugeshm; then
    trap 'umount /tmp/engram-hugeshm' EXIT
    SHARE=(--share-dir /tmp/engram-hugeshm)
    echo "tables shared from a tmpfs with huge pages: /tmp/engram-hugeshm"
  else
    echo "HUGE_SHM: the mount failed; sharing from /dev/shm"
  fi
fi
harness() {  # $1: output directory; the rest: extra flags
  local out=$1; shift
  mkdir -p "$out/server-logs"
  ENGRAM_OFFLOAD_SERVER_LOGS=$out/server-logs DATA=/tmp/eo ENGRAM_VOCAB=$ENGRAM_VOCAB TRACE=$TRACE \
    BIN=$BINDIR/engram-store OUT=$out SHAPES="$SHAPES" LIMIT=$LIMIT \
    bash benches/e2e/h200_session.sh --arms "$ARMS" "${SHARE[@]}" "$@"
}
if [ "$ARMS" != none ]; then
  harness "$OUT/e2e" "$@"
  [ "${AB_STAGGER:-0}" = 1 ] && harness "$OUT/e2e-stagger" "$@" --stagger-gathers
fi
if [ "${LIMITS:-0}" = 1 ] && [ -x "$BINDIR/engram-bench" ]; then
  for f in $(find /tmp/eo -type f -size +1G | head -1); do
    for qd in 64 256; do
      timeout 60 "$BINDIR/engram-bench" limits --file "$f" --queue-depth $qd --seconds 5 2>&1 \
        | tee -a "$OUT/limits.log"
    done
  done
  df -h /tmp | tee -a "$OUT/limits.log"; lsblk 2>/dev/null | tee -a "$OUT/limits.log"
fi
date +%T
