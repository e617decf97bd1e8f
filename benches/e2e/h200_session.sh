#!/usr/bin/env bash
# benches/e2e/engram_offload.py on a GPU machine, in one call: the backbone shapes one after the
# other against the same tables (written by the first run under $DATA, reused by the next), each
# run under its own time limit, so one hang does not take the other (at the limit, timeout's
# SIGTERM has the harness report and write the phases that finished, exit status 1). $OUT gets,
# per shape, the JSON, the SVG chart and the log.
#
#   OUT=results [BIN=target/release/engram-store] [SHAPES="dense-4b dense-8b"] \
#       [TRACE=shared/traces/en.tokens.u32] [ENGRAM_VOCAB=1400000] [LIMIT=280] \
#       bash benches/e2e/h200_session.sh [extra engram_offload.py flags]
#
# BIN: engram-store built with --features cuda (the store arms use its VRAM tier and CUDA IPC).
# MPS=1 runs everything under the CUDA Multi-Process Service (a control daemon started here with
# its pipes under /tmp, stopped at the end; the GPU's settings are not touched), so the store's
# kernels and copies run beside the model's instead of in time slices between another process's.
# TRACE falls back to the repository's 11,661-token sample when the file is not there. The tables
# (2 x 24 x ENGRAM_VOCAB rows of 264 B, 17.7 GB by default) need twice their size on $DATA's disk
# while they are written, and their size in pinned host memory and in VRAM for arms (b) and (c).
set -u
: "${OUT:?set OUT to the directory for results}"
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/engram-store}
DATA=${DATA:-/tmp/engram-offload-data}
SHAPES=${SHAPES:-dense-4b dense-8b}
LIMIT=${LIMIT:-280}
TRACE=${TRACE:-shared/traces/en.tokens.u32}
[ -f "$TRACE" ] || TRACE=testdata/traces/en-sample.tokens.u32
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$(dirname "$DATA")"

echo "=== machine ($(date +%T))"
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,driver_version --format=csv
nproc
free -g | head -2
df -h "$(dirname "$DATA")" | tail -1
python3 -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
echo "trace: $TRACE"

if [ "${MPS:-0}" = 1 ]; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/engram-mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/engram-mps-log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if nvidia-cuda-mps-control -d; then
        echo "MPS control daemon started"
        trap 'echo quit | nvidia-cuda-mps-control; echo "MPS control daemon stopped"' EXIT
    else
        echo "MPS could not be started: running without it"
    fi
fi

status=0
for shape in $SHAPES; do
    echo "=== $shape ($(date +%T))"
    # --foreground: the time limit's SIGTERM goes to the harness alone, which stops its own
    # store servers after reporting what finished (sent to the whole process group, it killed
    # the servers under the running arms first, and the teardown's errors could hide the
    # report); -k: killed a minute later if it hangs, and its servers with it (pkill below).
    timeout --foreground -k 60 "$LIMIT" python3 benches/e2e/engram_offload.py --shape "$shape" --data "$DATA" \
        --server-bin "$BIN" --trace "$TRACE" ${ENGRAM_VOCAB:+--engram-vocab "$ENGRAM_VOCAB"} \
        --json "$OUT/offload-$shape.json" --svg "$OUT/offload-$shape.svg" "$@" \
        2>&1 | tee "$OUT/offload-$shape.log"
    rc=${PIPESTATUS[0]}
    pkill -f "engram-store serve --data $DATA" 2>/dev/null && echo "(stopped store servers it left)"
    echo "=== $shape exit $rc ($(date +%T))"
    [ "$rc" = 0 ] || status=1
done
exit "$status"
