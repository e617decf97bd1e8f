#!/usr/bin/env bash
# One GPU session's measurements for issue 5, in one call on a GPU machine: the GPU tests (Rust
# and Python/torch CUDA IPC), then LookupInto over CUDA IPC against the host delivery paths on a
# synthetic table, at several batch sizes. Every step has its own time limit, so one hang does not
# take the rest. $OUT gets the tests' log, each bench's JSON and the server's stage times (at most
# 8 files come back from a device call); the server's own log stays in $LOGS.
#
#   BIN=dir-with-engram-store,engram-bench,gpu_tier,gpu_serving  TREE=repo-checkout  OUT=results \
#       bash benches/gpu/h200_session.sh [tests] [bench] [kernel]
#
# BIN holds release binaries built with --features cuda (the two test binaries from
# `cargo test --release --features engram-store-cache/cuda,engram-store/cuda --no-run`); TREE is
# a checkout whose client/python and benches/gpu are used; BASE_CLIENT optionally names another
# client/python (e.g. main's) to run the 65,536-row bench with too, for a before/after.
# ROWS, GPU_BUDGET, RAM_CACHE, BATCHES and HOT size the run.
set -u
: "${BIN:?}" "${TREE:?}" "${OUT:?}"
ROWS=${ROWS:-10000000}
# 480 MiB holds about 1.6M of the 160-byte rows: the 1M-row hot set and some room, far less than
# the table, so the 10% of ids drawn over the whole table mostly miss VRAM.
GPU_BUDGET=${GPU_BUDGET:-480MiB}
RAM_CACHE=${RAM_CACHE:-4GiB}
BATCHES=${BATCHES:-65536 16384 262144}
HOT=${HOT:-0.9} # fraction of each batch drawn from the hot set
PORT=${PORT:-50051}
STEPS=${*:-tests bench}
LOGS=${LOGS:-/tmp/engram-gpu-logs}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
py=python3

step() { echo; echo "=== $* ($(date +%T))"; }
has() { [[ " $STEPS " == *" $1 "* ]]; }

step machine
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.mem,driver_version --format=csv
nproc; free -g | head -2
$py -c 'import sys, torch, numpy, grpc, google.protobuf as pb; print(sys.version.split()[0], "torch", torch.__version__, "numpy", numpy.__version__, "grpcio", grpc.__version__, "protobuf", pb.__version__)'

if has tests; then
    step "Rust GPU tests"
    timeout 180 "$BIN/gpu_tier" --test-threads=1 --nocapture 2>&1 | tee "$OUT/tests.log"
    timeout 180 "$BIN/gpu_serving" --test-threads=1 --nocapture 2>&1 | tee -a "$OUT/tests.log"
    step "Python/torch CUDA IPC tests"
    (cd "$TREE/client/python" && PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" \
        ENGRAM_STORE_GPU_BIN="$BIN/engram-store" timeout 240 \
        $py -m pytest -rs -v -p no:cacheprovider tests/test_cuda_regions.py 2>&1) | tee -a "$OUT/tests.log"
fi

if has kernel; then
    step "kernel bench"
    timeout 120 "$BIN/engram-bench" gpu --budget 8GiB --batches 65536,262144 --iterations 50 2>&1 |
        tee "$OUT/kernel.log"
fi

if has bench; then
    step "synth $ROWS rows"
    DATA=/tmp/engram-gpu-data
    rm -rf "$DATA" "$LOGS/sections.txt"
    time timeout 180 "$BIN/engram-store" synth --name hot --rows "$ROWS" --dim 80 --dtype bf16 --data "$DATA"
    step "serve"
    RUST_LOG=warn,engram_store::gpu_stages=debug "$BIN/engram-store" serve --data "$DATA" \
        --listen "127.0.0.1:$PORT" --local-socket "$LOGS/engram.sock" --ram-cache "$RAM_CACHE" \
        --gpu-budget "$GPU_BUDGET" --buffered-io \
        >"$LOGS/server.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do grep -q " (io: " "$LOGS/server.log" && break; sleep 0.2; done
    head -5 "$LOGS/server.log"
    run_bench() { # label client-dir batch [extra args]
        local label=$1 client=$2 batch=$3; shift 3
        step "bench $label batch $batch"
        echo "$(date -u +%H:%M:%S) $label batch $batch" >>"$LOGS/sections.txt"
        PYTHONPATH="$client${PYTHONPATH:+:$PYTHONPATH}" timeout 200 $py "$TREE/benches/gpu/lookup_into_bench.py" \
            --addr "127.0.0.1:$PORT" --table hot --batch "$batch" --hot-fraction "$HOT" \
            --warmup-timeout 60 "$@" >"$OUT/bench_${label}_$batch.json"
        cat "$OUT/bench_${label}_$batch.json"
    }
    warm=--warm-ram # the first bench reads the table once, so misses of VRAM are RAM hits
    for b in $BATCHES; do
        if [ "$b" = 65536 ]; then
            run_bench branch "$TREE/client/python" "$b" $warm --runs 5
            run_bench branch2 "$TREE/client/python" "$b" --runs 5
            if [ -n "${BASE_CLIENT:-}" ]; then
                run_bench base "$BASE_CLIENT" "$b"
            fi
        else
            run_bench branch "$TREE/client/python" "$b" $warm
        fi
        warm=
    done
    kill "$server"; wait "$server" 2>/dev/null
    step "server stage times (median / p99 us per call, from the debug log)"
    $py - "$LOGS/server.log" "$LOGS/sections.txt" <<'EOF' | tee "$OUT/stages.txt"
import re, sys
import numpy as np
# Each bench's lines are those logged (UTC) from its start to the next one's.
sections = [line.split(" ", 1) for line in open(sys.argv[2]).read().splitlines()]
stages = {}
for line in open(sys.argv[1], errors="replace"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    if "gpu_stages" not in line:
        continue
    at = line.split()[0][11:19]
    section = next((name for start, name in reversed(sections) if start <= at), None)
    if section is None:
        continue
    kind = "device" if "into device" in line else "host"
    fields = dict(re.findall(r"(\w+)=(\d+)", line))
    for k, v in fields.items():
        if k.endswith("_us") or k in ("rows", "hits"):
            stages.setdefault((section, kind, k), []).append(int(v))
for (section, kind, k), v in sorted(stages.items()):
    a = np.asarray(v)
    print(f"{section:28} {kind:6} {k:20} n={a.size:5} median={np.median(a):9.0f} p99={np.percentile(a, 99):9.0f}")
EOF
fi
echo; echo "=== done ($(date +%T))"
