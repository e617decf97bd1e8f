#!/usr/bin/env python3
"""Engram in the loop: a decoder with DeepSeek-V4.1 Engram tables served five ways, the Engram
paper's offload experiment (its Table 4) redone with engram-store as one of the ways.

The model (``offload_model.py``): a synthetic decoder with real geometry and random bf16 weights,
Dense-4B (Qwen3-4B's shape) or Dense-8B (Llama-3-8B's), with Engram modules at layers 1 and 14 in
V4.1's geometry (n-grams 2-4 x 8 heads: 24 rows of 264 B per token and layer, 256 fp8 e4m3 values
and 8 ue8m0 block scales, dequantized on the device) fused as the paper's module does. Its tokens
come from a real token trace (DeepSeek-V3 ids), so row accesses are Zipf as in life; row ids follow
V4.1's hashing rule (``engram_store.torch.hashing``). The tables hold random fp8 rows with
per-block scales, written once into an engram-store Engram group (``engram-store engram create``)
under ``--data`` and read back from its files for the arms that keep them themselves.

Arms, on the same tokens:

- (a) no Engram;
- (b) the tables in VRAM, gathered inline at the start of the step;
- (c) the tables in pinned host memory, gathered by a GPU kernel over UVA on a side stream started
  at the step's start (half the SMs), as vLLM's default CPU-offload path; its gather time alone
  is reported beside the layer time;
- (d) engram-store as the sidecar through ``engram_store.torch.EngramRowBackend`` (today's
  transport: gRPC ``LookupInto`` into a CUDA IPC region), the whole table in its RAM tier (read
  once before the runs) and, on a GPU, a VRAM tier of ``--store-gpu-budget``;
- (e) the same with its RAM tier at most 25% of the table, the rest read from local disk.

Before the runs of (d) and (e) (on a GPU by default, ``--store-warm-tokens``), the store is warmed
as a server that has served this traffic for hours would be: the rows of the n-grams of trace
tokens that no run reads, most frequent first, as many as its VRAM tier holds, are sent as
Prefetch hints (the tier's refresh takes them in); then arm (e)'s RAM tier is given the next most
frequent rows, as many as it holds (``--store-warm-ram-band``), as a RAM tier that has seen only
the VRAM tier's misses for hours would hold. The log and the JSON's ``store_vram`` give the rows
hinted, the tier's resident rows and its hit rate over the runs (``vram_hit_estimate.py``
estimates that rate offline). Each arm begins a step's lookup once the model's layers before the
first Engram layer are queued (``--after-first-segment``, the default).

Phases: decode at ``--decode-batches`` (sequences, one token each, over a sliding window of
``--window`` cached positions, the step replayed as CUDA graphs split at the Engram layers, whose
waits run between the graphs) and prefill in ``--prefill-chunk``-token chunks (eager; each chunk a
prompt of its own). Every step ends with its sampled tokens on the host, as an engine's does; the
store arms prefetch a prefill chunk's rows while the previous chunk runs (``--prefill-lookahead``).
Logits of (b)-(e) must be bit-identical and differ from (a)'s: the script exits 1 otherwise
(``logits_sha256``: the last timed step's logits, bf16 bits, and every timed step's sampled
tokens). The rows each Engram arm fed its layers at the last timed step must be bit-identical too
(``rows_sha256`` in the details). Arm (a) runs twice: where its two runs' logits differ (decode on
the H200; not on a CPU), the backbone is not bit-reproducible, and only the rows are compared there
(a note says so). On the H200 the cause is torch's default SDPA kernel for decode, which gives
slightly different outputs for the same inputs: with ``ENGRAM_OFFLOAD_SDPA=math`` decode is
bit-reproducible there (it was not before the graph capture fix below), but math attention is
15-30x slower in decode and its GQA copies do not leave room for arms (b)-(d) on one H200. Other
switches, not tried since that fix: ``ENGRAM_OFFLOAD_SDPA`` (flash, efficient, cudnn),
``ENGRAM_OFFLOAD_DETERMINISTIC=1`` (``torch.use_deterministic_algorithms``),
``ENGRAM_OFFLOAD_NO_REDUCED_REDUCTION=1``, ``ENGRAM_OFFLOAD_BLAS`` (cublas, cublaslt). Each set
of decode graphs, once captured, is checked against the same step run eagerly
(``GRAPH_TOLERANCE``; ``graph_check`` in the JSON): until 2026-12-01 the graph of the piece after
the first Engram layer read a freed block instead of the piece before's output, which gave decode
logits that changed run to run and arm to arm and, on dense-4b, an illegal memory access.
``ENGRAM_OFFLOAD_SERVER_LOGS=DIR`` keeps the store arms' server logs there. A step's timeline says,
per Engram layer, when its rows were in place and when the segment before the layer had run
(device events on a GPU), in microseconds from the step's start.

Output: a table beside the paper's Table 4, ``--json FILE``::

    {"arms": [{"arm": "a".."e", "phase": "decode" | "prefill", "batch": N, "tok_per_s": X,
               "logits_sha256": "..."}, ...],
     "details": [... + step_ms, wait_us, gather_us, ready_us, needed_us, loss_vs_a,
                 loss_vs_c], "layer_us": [...],
     "checks": {...}, "model": {...}, "tables": {...}, "run": {...}, "paper_table4": {...},
     "graph_check": [...], "store_vram": {"d": {...}, "e": {...}}}

(``batch``: sequences per decode step; tokens per prefill chunk), and ``--svg FILE``, a bar chart.
With ``--rounds N`` every arm is open at once and each phase runs N times over all arms in turn;
an arm's ``details`` entry is then its median round, with ``rounds_tok_per_s`` (every round) and,
beside arm (c), ``rounds_vs_c`` (each round's ratio to (c)'s of the same round) and
``median_vs_c``: on a noisy machine the ratios to quote. Each round of a phase reads tokens of its
own (no store arm re-reads rows its caches took in during the round before), every arm the same
ones in a round; ``logits_sha256`` and ``rows_sha256`` are then digests of every round's.
SIGTERM (a time limit's) stops the runs: the phases that finished are still reported and
written, and the exit status is 1.

CPU smoke run (CI): ``python benches/e2e/engram_offload.py --tiny --device cpu --json FILE``: a
tiny model through every arm; (b) and (c) keep the tables in host tensors, (d) and (e) run against
an ``engram-store`` the script starts from ``target/release/engram-store`` on a free loopback port
with its own temporary data directory (``--addr`` uses a running server instead, for (d) only).

On a GPU: ``--shape dense-4b`` or ``dense-8b``, tables of ``--engram-vocab`` rows per hash column
(x 24 columns x 264 B per layer), an ``engram-store`` built with ``--features cuda``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# Deterministic cuBLAS on several streams: logits of arms must match bit for bit. CUDA IPC (the
# store arms' output buffers) cannot share memory of torch's expandable segments.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:False")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
try:
    import engram_store  # noqa: F401
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO / "client" / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import arm_variants  # noqa: E402
import offload_report as report  # noqa: E402
from offload_model import BACKBONES, Decoder  # noqa: E402
from warm_settle import WarmSettle  # noqa: E402

from engram_store import Client  # noqa: E402
from engram_store.local_server import LocalServer, run_cli  # noqa: E402
from engram_store.table_files import TableFiles  # noqa: E402
from engram_store.torch import (  # noqa: E402
    V41_ROWS,
    ChannelTransport,
    EngramLayer,
    EngramRowBackend,
    GrpcTransport,
    MappedTransport,
    NgramHasher,
    cuda_view,
    gather_dequantize,
    v41_layout,
)

GROUP = "v41"
LOOKBACK = 3  # tokens before a position that V4.1's 4-grams reach
TABLES_MARKER = "engram-offload.json"
DEFAULT_TRACE = REPO / "testdata" / "traces" / "en-sample.tokens.u32"
DEFAULT_MAP = REPO / "testdata" / "engram" / "dsv3-compress.npy"
DEFAULT_BIN = REPO / "target" / "release" / "engram-store"
#: The keys of an entry of the JSON's "arms" (issue #14's contract).
ARM_KEYS = ("arm", "phase", "batch", "tok_per_s", "logits_sha256")
#: Most a decode step replayed from its CUDA graphs may differ from the same step run eagerly,
#: as a fraction of the largest logit (``Runner._check_graphs``). On the H200 the default SDPA
#: decode kernel is not deterministic (the same call twice differs by ~5e-4), which leaves
#: 2-3% after 36 layers (0 with ``ENGRAM_OFFLOAD_SDPA=math``); a graph reading a freed block
#: missed by 158%.
GRAPH_TOLERANCE = 0.25
#: ``--store-warm-tokens``' default on a GPU: about every token of the 1M-token trace that the
#: runs do not read (``vram_hit_estimate.py``: the more held-out tokens, the closer the tier's
#: top rows come to the runs').
WARM_TOKENS = 1 << 20


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes of a run: ``tiny`` for a CPU, ``full`` for a GPU."""

    decode_batches: tuple[int, ...]
    decode_steps: int
    decode_warmup: int
    window: int
    prefill_chunk: int
    prefill_chunks: int
    prefill_warmup: int
    engram_vocab: int


PROFILES = {
    "tiny": Profile((64, 256), 4, 2, 64, 256, 2, 1, 4000),
    # 1.4M rows per hash column: 2 tables of ~33.6M rows, 17.7 GB in all.
    # Two prefill chunks untimed: the store arms' lookahead first serves chunk 1.
    "full": Profile((64, 256), 64, 16, 1024, 4096, 4, 2, 1_400_000),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="a tiny model and tables (CPU smoke run)")
    p.add_argument("--shape", default="dense-4b", choices=["dense-4b", "dense-8b"])
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--arms", default="abcde", help="which arms, e.g. abc")
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    p.add_argument("--svg", type=Path, help="write the bar chart here")
    p.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="little-endian u32 token ids")
    p.add_argument("--compress", type=Path, default=DEFAULT_MAP, help="compression map .npy")
    p.add_argument("--decode-batches", help="comma-separated decode batch sizes")
    p.add_argument("--decode-steps", type=int, help="timed decode steps")
    p.add_argument("--decode-warmup", type=int, help="untimed decode steps first")
    p.add_argument("--window", type=int, help="cached positions a decode step attends over")
    p.add_argument("--prefill-chunk", type=int, help="tokens per prefill chunk")
    p.add_argument("--prefill-chunks", type=int, help="timed prefill chunks")
    p.add_argument("--prefill-warmup", type=int, help="untimed prefill chunks first")
    p.add_argument("--engram-vocab", type=int, help="rows per hash column (tables: ~24x that)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--data",
        type=Path,
        help="where the Engram group lives (kept; reused when "
        "it holds the same tables). Default: a temporary directory",
    )
    p.add_argument("--prepare-only", action="store_true", help="write the tables and exit")
    p.add_argument("--addr", help="a running engram-store serving --data's group, for arm (d)")
    p.add_argument(
        "--server-bin",
        type=Path,
        default=Path(os.environ.get("ENGRAM_STORE_BIN", DEFAULT_BIN)),
        help="engram-store binary for arms (d) and (e)",
    )
    p.add_argument(
        "--store-gpu-budget",
        default=None,
        help="VRAM tier of the store arms on a GPU (default: 25%% of the tables)",
    )
    p.add_argument(
        "--store-gpu-refresh-ms",
        type=int,
        default=None,
        help="the store arms' --gpu-refresh-ms: how often their VRAM tier takes in the rows now "
        "hottest, each time rewriting its index (default: the store's, 1000)",
    )
    p.add_argument(
        "--store-warm-tokens",
        type=int,
        default=None,
        help="before the runs of arms (d) and (e), hint the store the most frequent rows of this "
        "many trace tokens the runs never read, as many as its VRAM tier holds, as a server "
        f"that has served for hours holds them (default: {WARM_TOKENS} on a GPU; 0: no warm, "
        "the default on a CPU)",
    )
    p.add_argument(
        "--store-gpu-weight",
        action="append",
        default=[],
        metavar="LAYER=W",
        help="the store arms' --gpu-weight for the table of Engram layer LAYER: its share of "
        "the VRAM tier is its bytes' share times W (default 1 each; e.g. 1=2: layer 1's rows, "
        "needed one layer after the step's ids, get twice the room of layer 14's, needed after "
        "13)",
    )
    p.add_argument(
        "--store-warm-ram-band",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="arm (e), with a warm: after the VRAM tier's warm, read the warm's next most "
        "frequent rows through the store, as many as its RAM tier holds, so the RAM tier holds "
        "rows the VRAM tier does not, as after hours of traffic, when it sees only the VRAM "
        "tier's misses (default; on the H200 its RAM hits over the runs went from 0.24M to 2.6M, "
        "BENCHMARKS.md 10i)",
    )
    p.add_argument("--io-engine", default="auto", help="the store's --io-engine")
    p.add_argument(
        "--transport",
        default="channel",
        choices=["channel", "grpc", "mapped"],
        help="how arms (d) and (e) get rows: the sidecar channel, LookupInto over gRPC, or "
        "(arm (d)) mapped: the worker reads the memory the store shares itself (ShareTable; "
        "arm (e), whose table is not whole in RAM, then uses the channel)",
    )
    p.add_argument(
        "--mapped-programs",
        type=int,
        help="with --transport mapped: the gather kernel's grid cap (default: an eighth of the "
        "SMs, 16 on an H200: beside the model, a gather whose misses wait on PCIe holds fewer "
        "SMs the model's kernels want; half of them, arm (c)'s default, measured 1-2%% slower "
        "in decode, BENCHMARKS.md 10g)",
    )
    p.add_argument(
        "--mapped-late-programs",
        type=int,
        help="with --transport mapped: the grid cap of the gathers of every Engram layer after "
        "the first (MappedTransport(table_programs=...)); their rows are needed layers later, "
        "so they can hold fewer SMs for longer (default: --mapped-programs' cap for every layer)",
    )
    p.add_argument(
        "--uva-programs",
        type=int,
        help="arm (c)'s gather kernel's grid cap (default: half the SMs); give --mapped-programs "
        "the same to compare the two kernels at one grid",
    )
    p.add_argument(
        "--side-priority",
        type=int,
        default=0,
        help="CUDA priority of the side stream arms (c) and (d) gather on (lower is higher; "
        "default 0, the model's; -1: their programs start before the model's waiting ones)",
    )
    p.add_argument(
        "--mapped-ahead-programs",
        type=int,
        help="with --transport mapped: a cap on the grid of the prefill lookahead's gather, "
        "which has the whole chunk before to land (default: none, one short program per block "
        "of rows, so the gather does not hold SMs that the chunk's GEMMs wait for)",
    )
    p.add_argument(
        "--stagger-gathers",
        action="store_true",
        help="with --transport mapped: the backend queues layer 1's gather at the step's start "
        "and each later layer's when the layer before it reads its rows "
        "(EngramRowBackend(stagger_gathers=True))",
    )
    p.add_argument(
        "--share-dir",
        default="/dev/shm",
        help="with --transport mapped: the memory file system where the store keeps the tables "
        "it shares (needs their size free)",
    )
    p.add_argument("--no-graphs", action="store_true", help="decode eagerly on a GPU too")
    p.add_argument(
        "--cpu-threads",
        type=int,
        default=1,
        help="torch threads on a CPU device "
        "(default 1: more only spin against the server's threads on a small machine)",
    )
    p.add_argument(
        "--after-first-segment",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="each arm begins a step's lookup once the model's layers before the first Engram "
        "layer are queued, not before them: the device runs those layers during the lookup's "
        "host work, and a side-stream gather waits for the step's ids alone "
        "(EngramRowBackend.prefetch(after=event); the default: 1-2%% faster for (d) in decode, "
        "BENCHMARKS.md 10h). --no-after-first-segment: before them, at forward entry, as "
        "vLLM's Engram backends prefetch",
    )
    p.add_argument(
        "--model-priority",
        type=int,
        default=None,
        help="run each arm's steps on a CUDA stream of this priority (lower is higher; e.g. -1: "
        "above the side streams' gathers at --side-priority 0, so the block scheduler gives "
        "SMs to the model's kernels first). Default: the current stream",
    )
    p.add_argument(
        "--inline-min-tokens",
        type=int,
        help="with --transport mapped: steps of at least this many tokens gather on the model's "
        "stream, before its next kernels, instead of beside them "
        "(EngramRowBackend(inline_min_tokens=N); default: always beside)",
    )
    p.add_argument(
        "--stage-min-tokens",
        type=int,
        help="with --transport mapped: steps of at least this many tokens (decode 256: 256) "
        "staged as the prefill lookahead is, their misses copied up through the host and the "
        "gather run from VRAM when the layer reads its rows "
        "(EngramRowBackend(stage_min_tokens=N); default: never)",
    )
    p.add_argument(
        "--mapped-stage-ahead",
        default="inline",
        choices=["inline", "side", "off"],
        help="with --transport mapped: the prefill lookahead's misses copied up in bulk from "
        "the host file and its gather run when the rows are read (inline, the default) or on a "
        "stream beside the model as soon as they are up (side); off: one kernel reads them row "
        "by row over PCIe (MappedTransport's stage_ahead)",
    )
    p.add_argument(
        "--mapped-record-every",
        type=int,
        default=32,
        help="with --transport mapped: every this many gathers of a table its ids go to the "
        "store as a Prefetch, so its VRAM tier follows the traffic (MappedTransport's "
        "record_every; 0: never)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="every arm open at once, each phase run this many rounds of every arm in turn; an "
        "arm's figure is its median round, and each round's ratio to arm (c)'s in the same round "
        "is reported (drift on the machine hits every arm alike)",
    )
    p.add_argument(
        "--d-variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="another arm (d:NAME) on arm (d)'s store and mapping with a knob set otherwise, run "
        "in the same rounds (an A/B in one process; reported apart from the arms). Keys: "
        + ", ".join(arm_variants.VARIANT_KEYS),
    )
    p.add_argument(
        "--prefill-lookahead",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="store arms prefetch the next prefill chunk's rows during this one",
    )
    args = p.parse_args(argv)
    profile = PROFILES["tiny" if args.tiny else "full"]
    for field in dataclasses.fields(Profile):
        if getattr(args, field.name, None) is None:
            setattr(args, field.name, getattr(profile, field.name))
    if isinstance(args.decode_batches, str):
        args.decode_batches = tuple(int(b) for b in args.decode_batches.split(",") if b)
    bad = set(args.arms) - set(report.ARM_NAMES)
    if bad or not args.arms:
        p.error(f"--arms takes letters of abcde, got {args.arms!r}")
    if args.addr and not args.data:
        p.error("--addr needs --data: the directory the running server serves")
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.prefill_chunks < 0 or (args.prefill_chunks == 0 and not args.decode_batches):
        p.error(
            f"--prefill-chunks {args.prefill_chunks} with --decode-batches "
            f"{','.join(map(str, args.decode_batches))!r}: nothing would run"
        )
    try:
        args.d_variants = arm_variants.parse_variants(args.d_variant)
        args.store_gpu_weights = parse_layer_weights(args.store_gpu_weight)
    except ValueError as e:
        p.error(str(e))
    if args.d_variants and "d" not in args.arms:
        p.error("--d-variant needs arm (d) among --arms: a variant runs on (d)'s store")
    late = [("--mapped-late-programs", args.mapped_late_programs)] + [
        (f"--d-variant {v.name}: mapped_late_programs", v.settings["mapped_late_programs"])
        for v in args.d_variants
        if "mapped_late_programs" in v.settings
    ]
    for what, programs in late:
        if programs is not None and programs < 1:
            p.error(f"{what} must be at least 1, got {programs}")
    return args


def parse_layer_weights(texts: Sequence[str]) -> dict[int, float]:
    """``--store-gpu-weight LAYER=W`` flags as ``{layer: W}``; ValueError naming a bad one."""
    weights: dict[int, float] = {}
    for text in texts:
        layer, eq, value = text.partition("=")
        try:
            lid, w = int(layer), float(value)
        except ValueError:
            lid, w = -1, math.nan
        if not eq or lid < 0 or not math.isfinite(w) or w <= 0:
            raise ValueError(
                f"--store-gpu-weight {text!r}: expected LAYER=W, a layer id and a weight above 0"
            )
        if lid in weights:
            raise ValueError(f"--store-gpu-weight: layer {lid} given twice")
        weights[lid] = w
    return weights


# --- tables -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Tables:
    """The Engram group the arms read: its layout, hasher and tables."""

    data_dir: Path
    layout: dict[str, Any]
    hasher: Any
    names: list[str]
    rows: list[int]
    row_bytes: int

    @property
    def nbytes(self) -> int:
        return sum(self.rows) * self.row_bytes


def synth_rows(layer: int, start: int, count: int, seed: int, device) -> np.ndarray:
    """``count`` packed V4.1 rows from row ``start`` of layer ``layer``'s table: N(0, 1) values
    quantized to fp8 e4m3 with one power-of-two scale per 32 (the block's max maps near 448)."""
    gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + layer * 10_007 + start)
    x = torch.randn((count, V41_ROWS.scales, V41_ROWS.block), generator=gen, device=device)
    exponent = torch.ceil(torch.log2(x.abs().amax(-1).clamp_min(1e-30) / 448.0)).clamp(-60, 60)
    scaled = (x / torch.exp2(exponent).unsqueeze(-1)).clamp(-448.0, 448.0)
    codes = scaled.to(torch.float8_e4m3fn).view(torch.uint8).reshape(count, V41_ROWS.head_dim)
    scales = (exponent + 127).to(torch.uint8)
    return torch.cat([codes, scales], dim=1).cpu().numpy()


def write_weights(path: Path, layer_ids: Sequence[int], rows: Sequence[int], seed: int, device):
    """A ``.safetensors`` file with one U8 ``[rows, 264]`` tensor per layer (``layer<ID>``, as
    ``engram-store engram create --weights`` finds them), written chunk by chunk."""
    header: dict[str, Any] = {}
    offset = 0
    for lid, n in zip(layer_ids, rows, strict=True):
        header[f"layer{lid}"] = {
            "dtype": "U8",
            "shape": [n, V41_ROWS.row_bytes],
            "data_offsets": [offset, offset + n * V41_ROWS.row_bytes],
        }
        offset += n * V41_ROWS.row_bytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    chunk = 1 << 20
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for li, n in enumerate(rows):
            for start in range(0, n, chunk):
                synth_rows(li, start, min(chunk, n - start), seed, device).tofile(f)


def prepare_tables(args: argparse.Namespace, device, log) -> Tables:
    """The V4.1-geometry group under ``args.data``: made unless it is there with the same layout
    and seed."""
    cmap = np.load(args.compress, allow_pickle=False)
    layout = v41_layout(args.engram_vocab, cmap)
    hasher = NgramHasher(layout, cmap)
    names = [f"{GROUP}.layer{lid}" for lid in hasher.layer_ids]
    tables = Tables(args.data, layout, hasher, names, list(hasher.table_rows), 264)
    marker = args.data / TABLES_MARKER
    want = {"engram_vocab": args.engram_vocab, "seed": args.seed, "layout": layout}
    if marker.exists() and json.loads(marker.read_text()) == want:
        log(f"tables: reusing {args.data} ({tables.nbytes / 1e9:.2f} GB)")
        return tables
    if marker.exists() or (args.data / f"{GROUP}.engram").exists():
        for entry in [*names, f"{GROUP}.engram", TABLES_MARKER]:
            target = args.data / entry
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    args.data.mkdir(parents=True, exist_ok=True)
    if not os.access(args.server_bin, os.X_OK):
        raise FileNotFoundError(
            f"engram-store binary {args.server_bin} is missing (cargo build "
            "--release -p engram-store) and the tables are not made yet"
        )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="engram-offload-", dir=args.data.parent) as tmp:
        tmp = Path(tmp)
        (tmp / "layout.json").write_text(json.dumps(layout))
        np.save(tmp / "map.npy", cmap.astype(np.int64))
        write_weights(tmp / "weights.safetensors", hasher.layer_ids, tables.rows, args.seed, device)
        run_cli(
            args.server_bin,
            "engram",
            "create",
            "--name",
            GROUP,
            "--layout",
            tmp / "layout.json",
            "--compress",
            tmp / "map.npy",
            "--data",
            args.data,
            "--weights",
            tmp / "weights.safetensors",
        )
    marker.write_text(json.dumps(want))
    log(
        f"tables: wrote {len(names)} x ~{tables.rows[0]:,} rows ({tables.nbytes / 1e9:.2f} GB) "
        f"in {time.perf_counter() - started:.1f}s"
    )
    return tables


# --- phases and the step loop -------------------------------------------------------------------


@dataclasses.dataclass
class Phase:
    """The steps of one phase: ``tokens [steps, N, T]`` raw ids and their ``context [steps, N,
    LOOKBACK]`` (the ids just before each sequence; -1 before its start); ``positions``: where
    in the trace each token is (``tokens == trace[positions]``)."""

    kind: str
    batch: int
    tokens: np.ndarray
    context: np.ndarray
    warmup: int
    positions: np.ndarray

    @property
    def steps(self) -> int:
        return self.tokens.shape[0]

    @property
    def tokens_per_step(self) -> int:
        return self.tokens.shape[1] * self.tokens.shape[2]


def decode_phase(
    trace: np.ndarray, batch: int, steps: int, warmup: int, spread: int | None = None,
    shift: int = 0,
) -> Phase:  # fmt: skip
    """``batch`` sequences reading the trace from evenly spaced offsets over its first ``spread``
    tokens (default: all), ``shift`` tokens into each space, one token a step."""
    n = trace.size
    spread = n if spread is None else spread
    # (i * spread) // batch: sequence 4i of a batch of 256 starts where sequence i of a batch
    # of 64 does, so shifts keep their windows apart.
    offsets = np.arange(batch, dtype=np.int64) * spread // batch + LOOKBACK + shift
    pos = offsets[None, :] + np.arange(warmup + steps)[:, None]  # [S, B]
    context = trace[(pos[..., None] - LOOKBACK + np.arange(LOOKBACK)) % n]
    return Phase("decode", batch, trace[pos % n][..., None], context, warmup, (pos % n)[..., None])


def prefill_phase(
    trace: np.ndarray, chunk: int, chunks: int, warmup: int, start: int = 0
) -> Phase:
    """Consecutive ``chunk``-token windows of the trace from ``start``, each a prompt of its
    own."""
    starts = start + np.arange(warmup + chunks) * chunk
    positions = ((starts[:, None] + np.arange(chunk)) % trace.size)[:, None, :]
    context = np.full((warmup + chunks, 1, LOOKBACK), -1, dtype=np.int64)
    return Phase("prefill", chunk, trace[positions], context, warmup, positions)


def round_phases(
    trace: np.ndarray, args: argparse.Namespace, rounds: int
) -> tuple[list[list[Phase]], int]:
    """Per phase (each decode batch, then prefill), one :class:`Phase` per round, laid out so
    that no two read the same tokens while the trace is long enough: prefill's chunks take the
    trace's tail, round after round; the decode sequences are spread over the rest, each batch
    and round reading on from where the one before stopped. A store arm must not be handed, as
    the next round or phase, the tokens whose rows its caches took in during the last (the
    rounds would measure a warm re-read, not a stream). Also returns how many token positions
    are read more than once (0 but for a trace too short: then they wrap around)."""
    n = trace.size
    prefill_span = rounds * (args.prefill_warmup + args.prefill_chunks) * args.prefill_chunk
    spread = max(n - prefill_span, n // 2)
    decode_span = args.decode_warmup + args.decode_steps
    out: list[list[Phase]] = []
    shift = 0
    for b in args.decode_batches:
        out.append([])
        for _ in range(rounds):
            out[-1].append(decode_phase(trace, b, args.decode_steps, args.decode_warmup, spread,
                                        shift))  # fmt: skip
            shift += decode_span
    if args.prefill_chunks > 0:
        out.append([
            prefill_phase(trace, args.prefill_chunk, args.prefill_chunks, args.prefill_warmup,
                          spread + k * (prefill_span // rounds))
            for k in range(rounds)
        ])  # fmt: skip
    reads = np.zeros(n, dtype=np.int64)
    for phases in out:
        for phase in phases:
            np.add.at(reads, phase.positions.reshape(-1), 1)
    return out, int((reads > 1).sum())


class Source:
    """How an arm gets Engram rows into the model's staging buffers: ``begin`` at the start of a
    step, ``ready(j)`` before Engram layer ``j`` (outside any graph)."""

    with_engram = True
    device_ids = False  # wants the step's row ids hashed on the device (``Runner.ids``)
    # ``begin`` once the model's first segment is queued (``--after-first-segment``): a gather
    # on a side stream then waits for the ids alone (``Runner.ids_ready``), not that segment.
    after_first_segment = False
    # The CUDA priority of the stream the step runs on (``--model-priority``; None: the current
    # stream, as before).
    model_priority: int | None = None

    def start(self, run: Runner) -> None:
        """Before the first step of a phase."""

    def begin(self, run: Runner, step: int) -> None:
        """At the start of ``step``, once its tokens are on the device."""

    def ready(self, run: Runner, j: int) -> None:
        """Before Engram layer ``j`` reads ``run.state.rows[j]``."""

    def queued(self, run: Runner, j: int) -> None:
        """After ``ready(j)``, the model's layers before Engram layer ``j`` being queued: host work
        for later steps (not timed as the step's wait for rows)."""

    def rows_ready_us(self, marks: StepMarks) -> list[float | None]:
        """After the step: when each Engram layer's rows were in place, in microseconds since
        the step's start (None: not known)."""
        return [None] * len(marks.needed)


class NoEngram(Source):
    with_engram = False


class TableSource(Source):
    """Arms (b) and (c): a gather kernel over tables in VRAM or pinned host memory (UVA), inline
    or on a side stream that the main stream waits for before each Engram layer."""

    device_ids = True

    def __init__(
        self, tables: list, side_stream: bool, max_programs: int | None, priority: int = 0
    ):
        self.tables = tables
        self.max_programs = max_programs
        self.cuda = tables[0].is_cuda
        self.stream = None
        if side_stream and self.cuda:
            self.stream = torch.cuda.Stream(tables[0].device, priority=priority)
        # When each layer's gather ended: device events, or host times on the CPU.
        self.done = [torch.cuda.Event(enable_timing=True) for _ in tables] if self.cuda else []
        self.done_at = [0.0] * len(tables)

    def gather(self, ids, rows: list, after=None) -> None:
        """Rows of every layer for ``ids [tokens, layers, columns]`` into ``rows``, on the side
        stream if there is one (after the work queued so far on the current stream, or only
        after event ``after``)."""
        if self.stream is not None and after is not None:
            self.stream.wait_event(after)
        elif self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream())
        with (
            torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        ):
            for j, table in enumerate(self.tables):
                gather_dequantize(table, ids[:, j], rows[j], max_programs=self.max_programs)
                if self.cuda:
                    self.done[j].record()
                else:
                    self.done_at[j] = time.perf_counter()

    def begin(self, run: Runner, step: int) -> None:
        self.gather(run.ids, run.state.rows, after=run.begin_after(self))

    def ready(self, run: Runner, j: int) -> None:
        if self.stream is not None:
            torch.cuda.current_stream().wait_event(self.done[j])

    def rows_ready_us(self, marks: StepMarks) -> list[float | None]:
        if self.cuda:
            return [marks.device_us(event) for event in self.done]
        return [marks.host_us(t) for t in self.done_at]


class StoreSource(Source):
    """Arms (d) and (e): :class:`engram_store.torch.EngramRowBackend` prefetches a step's rows from
    its token ids at the step's start (and a prefill chunk's during the chunk before, with
    lookahead); ``rows`` dequantizes them into the staging buffer. With a transport that gathers
    on the device (``mapped``) it takes the step's row ids hashed on the device, as arm (c), and
    the rows land in the staging buffers, except a looked-ahead chunk's, which wait in their slot
    and are copied there."""

    def __init__(self, backend, layer_ids: Sequence[int], lookahead: bool):
        self.backend = backend
        self.layer_ids = list(layer_ids)
        self.device_ids = bool(getattr(backend.transport, "device_gather", False))
        self.lookahead = lookahead
        self.prefetched: dict[int, int] = {}
        self.slot = 0
        self.step = 0

    def _prefetch(self, phase: Phase, step: int) -> int:
        return self.backend.prefetch(token_ids=phase.tokens[step], context=phase.context[step])

    def _next_ids(self, run: Runner, step: int):
        """Row ids of ``step``, hashed on the device from its own copies of the tokens (the
        step's staging tensors belong to the step running). The copies go through page-locked
        memory without blocking: from pageable memory the host would wait for the work queued
        before them (the chunk's first segment) and launch the chunk's next layers late."""
        phase = run.phase
        n, t = phase.tokens.shape[1:]

        def upload(a: np.ndarray) -> torch.Tensor:
            host = torch.from_numpy(np.ascontiguousarray(a))
            if not run.cuda:
                return host
            return host.pin_memory().to(run.device, non_blocking=True)

        tokens = upload(phase.tokens[step].reshape(n, t))
        context = upload(phase.context[step])
        ids = run.hasher.torch_row_ids(tokens, context)
        return ids.view(n * t, ids.shape[2], ids.shape[3])

    def start(self, run: Runner) -> None:
        self.prefetched.clear()

    def begin(self, run: Runner, step: int) -> None:
        phase = run.phase
        slot = self.prefetched.pop(step, None)
        if slot is not None:
            self.slot = slot
        elif self.device_ids:  # the rows land in the staging buffers, as arm (c)'s
            self.slot = self.backend.prefetch(
                hash_ids=run.ids, out=run.state.rows, after=run.begin_after(self)
            )
        else:
            self.slot = self._prefetch(phase, step)
        self.step = step
        if not self.device_ids:
            self._look_ahead(run)

    def _look_ahead(self, run: Runner) -> None:
        """A prefill chunk's rows during the chunk before. Arm (d) mapped issues it once the
        layers up to the last Engram layer are queued (from :meth:`queued`): its hashing and
        launches are ~2 ms of host work, which issued after the first segment (until 2026-12-01,
        BENCHMARKS 10g) left the device idle, its queue empty, between that segment and the next
        one; there the device has the chunk's middle layers queued to run meanwhile, and the
        rows still have the chunk's last layers to land."""
        step, phase = self.step, run.phase
        if self.lookahead and phase.kind == "prefill" and step + 1 < phase.steps:
            if self.device_ids:
                ahead = self.backend.prefetch(hash_ids=self._next_ids(run, step + 1), ahead=True)
            else:
                ahead = self._prefetch(phase, step + 1)
            self.prefetched[step + 1] = ahead

    def ready(self, run: Runner, j: int) -> None:
        self.backend.rows(self.layer_ids[j], slot=self.slot, out=run.state.rows[j])

    def queued(self, run: Runner, j: int) -> None:
        if j == len(self.layer_ids) - 1 and self.device_ids:
            self._look_ahead(run)

    def rows_ready_us(self, marks: StepMarks) -> list[float | None]:
        out: list[float | None] = []
        for layer in self.layer_ids:
            event = self.backend.ready_event(layer, self.slot)
            if event is not None:
                out.append(marks.device_us(event))
            else:
                t = self.backend.fetched_at(layer, self.slot)
                out.append(None if t is None else marks.host_us(t))
        return out


class StepMarks:
    """Times within a step, from its start: when each Engram layer could start (the end of the
    segment before it) on the device, and helpers to place other marks on the same axis. On a
    GPU, device times come from events and host times from the host clock; the two are aligned
    at the step's start, when the device is idle (the step before ended with a sync)."""

    def __init__(self, cuda: bool, engram_layers: int):
        self.cuda = cuda
        self.t0 = 0.0
        self.start = torch.cuda.Event(enable_timing=True) if cuda else None
        self.segment_end = [torch.cuda.Event(enable_timing=True) for _ in range(engram_layers)]
        self.needed = [0.0] * engram_layers

    def begin(self) -> None:
        self.t0 = time.perf_counter()
        if self.cuda:
            self.start.record()

    def segment_done(self, j: int) -> None:
        """The segment before Engram layer ``j`` is queued (or, on the CPU, done)."""
        if self.cuda:
            self.segment_end[j].record()
        else:
            self.needed[j] = self.host_us(time.perf_counter())

    def end(self) -> None:
        """After the step's sync: the device marks are readable."""
        if self.cuda:
            self.needed = [self.device_us(e) for e in self.segment_end]

    def host_us(self, t: float) -> float:
        return (t - self.t0) * 1e6

    def device_us(self, event) -> float:
        return self.start.elapsed_time(event) * 1e3


@dataclasses.dataclass
class Measured:
    """One arm's run of one phase; the timeline is a mean over its timed steps."""

    seconds: float
    tokens: int
    wait_s: float
    logits_sha256: str
    needed_us: list[float]
    ready_us: list[float | None]
    #: The rows the last timed step's Engram layers consumed (bf16 bits); None without Engram.
    rows_sha256: str | None = None


class Runner:
    """Runs one phase's steps the same way for every arm: the step's tokens to the device, its row
    ids hashed there when the arm gathers rows itself, the arm's ``begin``, the segments with the
    arm's ``ready`` between them (CUDA graphs for decode on a GPU), the sampled tokens back to the
    host. Decode state (KV cache, convolution history, position) starts the same for every arm."""

    def __init__(self, model, rounds: Sequence[Phase], kv, hasher, graphs: bool):
        self.torch = torch
        self.model = model
        #: The phase's tokens for each round (same shapes, other tokens); ``phase``: this round's.
        self.rounds = list(rounds)
        self.phase = phase = self.rounds[0]
        self.hasher = hasher
        self.device = model.device
        self.cuda = self.device.type == "cuda"
        n, t = phase.tokens.shape[1:]
        if phase.kind == "decode":
            self.state = model.decode_state(kv, n)
        else:
            self.state = model.prefill_state(t)
        pin = self.cuda
        self.tokens_host = torch.empty(n * t, dtype=torch.int64, pin_memory=pin)
        self.context_host = torch.empty((n, LOOKBACK), dtype=torch.int64, pin_memory=pin)
        self.context = torch.empty((n, LOOKBACK), dtype=torch.int64, device=self.device)
        self.sampled = torch.empty(
            n if phase.kind == "decode" else 1, dtype=torch.int64, pin_memory=pin
        )
        self.graphs = graphs and self.cuda and phase.kind == "decode"
        self._captured: dict[bool, tuple[list, Any, Any]] = {}
        #: Per Engram on/off: how far the graphs' step was from the eager one (``_check_graphs``).
        self.graph_error: dict[bool, float] = {}
        self._hash_graph = None
        self.ids = None
        #: Recorded once the step's ids are hashed (on a GPU): what a late ``begin`` waits for.
        self.ids_ready = torch.cuda.Event() if self.cuda else None
        #: The streams of ``--model-priority``, by priority.
        self._model_streams: dict[int, Any] = {}

    def begin_after(self, source: Source):
        """The event ``source``'s gather waits for instead of the current stream: the ids being
        hashed, when its ``begin`` comes after the first segment is queued; else None."""
        return self.ids_ready if source.after_first_segment else None

    # -- pieces --------------------------------------------------------------------------------

    def _hash(self):
        n, t = self.phase.tokens.shape[1:]
        ids = self.hasher.torch_row_ids(self.state.tokens.view(n, t), self.context)
        return ids.view(n * t, ids.shape[2], ids.shape[3])

    def _capture(self, fn):
        torch = self.torch
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn()
        return graph, out

    def _segments(self, with_engram: bool):
        """Callables of the step's segments and the tensors holding its logits and argmax."""
        model, st = self.model, self.state
        if not self.graphs:
            pieces = [lambda i=i: model.segment(i, st, with_engram) for i in range(model.segments)]
            return pieces, None
        if with_engram not in self._captured:
            for i in range(model.segments):  # warm every piece up once, in order
                model.segment(i, st, with_engram)
            self.torch.cuda.synchronize()
            graphs, keep = [], []
            for i in range(model.segments):
                # Piece i reads st.x, the hidden state piece i - 1's graph writes (keep[-1]).
                # _capture runs the piece eagerly once before capturing it, and that run points
                # st.x at a tensor of its own, freed as soon as the capture replaces it: without
                # handing the piece its input on every call, its graph reads that freed block at
                # every replay (the next capture's empty_cache can unmap it: an illegal memory
                # access; reused, it gives logits that change run to run).
                x_in = keep[-1] if keep else None
                graph, _ = self._capture(lambda i=i, x_in=x_in: self._piece(i, x_in, with_engram))
                graphs.append(graph)
                keep.append(st.x)  # each piece's output, alive as long as its graph
            replays = [g.replay for g in graphs]
            outputs = (st.logits, st.argmax)
            self._check_graphs(replays, outputs, with_engram)
            self._captured[with_engram] = (replays, outputs, keep)
        replays, outputs, _ = self._captured[with_engram]
        return replays, outputs

    def _piece(self, i: int, x_in, with_engram: bool) -> None:
        """Piece ``i`` of a step on ``x_in``, the hidden state the piece before wrote."""
        self.state.x = x_in
        self.model.segment(i, self.state, with_engram)

    def _check_graphs(self, replays: list, outputs: tuple, with_engram: bool) -> None:
        """The guard on the capture: one decode step replayed from the graphs must give the
        logits the same step gives eagerly from the same state (cache, convolution history,
        position, staging rows). A graph that reads a buffer the step does not write (a block
        freed after the capture, another piece's stale output) gives other logits."""
        st = self.state
        self.reset(0)
        for i in range(self.model.segments):
            self.model.segment(i, st, with_engram)
        eager = st.logits.float()
        self.reset(0)
        for replay in replays:
            replay()
        graphed = outputs[0].float()
        err = float(((graphed - eager).abs().max() / eager.abs().max().clamp_min(1e-6)).item())
        if not err <= GRAPH_TOLERANCE:  # NaN fails too
            raise RuntimeError(
                f"decode batch {self.phase.batch}: the step replayed from its CUDA graphs "
                f"(Engram {'on' if with_engram else 'off'}) differs from the eager step by "
                f"{err:.3g} of the logits' range: a graph reads memory the step does not write"
            )
        self.graph_error[with_engram] = err

    def _hasher_fn(self):
        if not self.graphs:

            def run():
                self.ids = self._hash()

            return run
        if self._hash_graph is None:
            self._hash()  # the hasher's constants move to the device outside the capture
            graph, self.ids = self._capture(self._hash)
            self._hash_graph = graph
        return self._hash_graph.replay

    def reset(self, seed: int) -> None:
        """Decode: the cache full of the same random context, empty convolution history, the
        first step at position ``window``."""
        st = self.state
        if self.phase.kind != "decode":
            return
        gen = self.torch.Generator(device=self.device).manual_seed(seed)
        for k, v in zip(st.k, st.v, strict=True):
            k.normal_(generator=gen)
            v.normal_(generator=gen)
        for c in st.conv:
            c.zero_()
        st.position.fill_(st.window)

    def use_round(self, k: int) -> None:
        """Runs from now on read round ``k``'s tokens (the buffers and graphs stay)."""
        self.phase = self.rounds[k]

    # -- the loop ------------------------------------------------------------------------------

    def run(self, source: Source, seed: int) -> Measured:
        """The phase's steps for ``source``'s arm, on a stream of its ``model_priority`` if it
        has one (on a GPU; the side streams' gathers then rank above or below the model's
        kernels when the block scheduler has SMs to give)."""
        priority = source.model_priority
        if priority is None or not self.cuda:
            return self._run(source, seed)
        stream = self._model_streams.get(priority)
        if stream is None:
            stream = self.torch.cuda.Stream(self.device, priority=priority)
            self._model_streams[priority] = stream
        stream.wait_stream(self.torch.cuda.current_stream())
        with self.torch.cuda.stream(stream):
            measured = self._run(source, seed)
        self.torch.cuda.current_stream().wait_stream(stream)
        return measured

    def _run(self, source: Source, seed: int) -> Measured:
        torch, st, phase = self.torch, self.state, self.phase
        pieces, outputs = self._segments(source.with_engram)
        hash_fn = self._hasher_fn() if source.device_ids else None
        self.reset(seed)
        source.start(self)
        layers = self.model.segments - 1
        marks = StepMarks(self.cuda, layers)
        sampled, needed, ready = [], [], []
        wait_s = start = 0.0
        for step in range(phase.steps):
            if step == phase.warmup:
                self._sync()
                start, wait_s = time.perf_counter(), 0.0
            self.tokens_host.copy_(torch.from_numpy(phase.tokens[step].reshape(-1)))
            st.tokens.copy_(self.tokens_host, non_blocking=True)
            marks.begin()
            if hash_fn is not None:
                self.context_host.copy_(torch.from_numpy(phase.context[step]))
                self.context.copy_(self.context_host, non_blocking=True)
                hash_fn()
                if self.ids_ready is not None:
                    self.ids_ready.record()
            if not source.after_first_segment:
                source.begin(self, step)
            for j in range(layers):
                pieces[j]()
                marks.segment_done(j)
                if j == 0 and source.after_first_segment:
                    source.begin(self, step)
                t = time.perf_counter()
                source.ready(self, j)
                wait_s += time.perf_counter() - t
                source.queued(self, j)
            pieces[layers]()
            argmax = outputs[1] if outputs is not None else st.argmax
            self.sampled.copy_(argmax, non_blocking=True)
            self._sync()
            if step >= phase.warmup:
                marks.end()
                sampled.append(self.sampled.numpy().copy())
                needed.append(list(marks.needed))
                ready.append(source.rows_ready_us(marks))
        seconds = time.perf_counter() - start
        logits = outputs[0] if outputs is not None else st.logits
        digest = hashlib.sha256(logits.contiguous().view(torch.int16).cpu().numpy().tobytes())
        digest.update(np.concatenate(sampled).tobytes())
        rows_digest = None
        if source.with_engram:
            rows_digest = hashlib.sha256()
            for rows in st.rows:
                rows_digest.update(rows.contiguous().view(torch.int16).cpu().numpy().tobytes())
        measured_steps = phase.steps - phase.warmup
        ready_known = [[r for r in column if r is not None] for column in zip(*ready, strict=True)]
        return Measured(
            seconds,
            measured_steps * phase.tokens_per_step,
            wait_s / measured_steps,
            digest.hexdigest(),
            needed_us=[float(np.mean(column)) for column in zip(*needed, strict=True)],
            ready_us=[float(np.mean(c)) if c else None for c in ready_known],
            rows_sha256=None if rows_digest is None else rows_digest.hexdigest(),
        )

    def _sync(self) -> None:
        if self.cuda:
            self.torch.cuda.current_stream().synchronize()

    def sync_device(self) -> None:
        """Waits for every stream of the device."""
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def stage(self, step: int):
        """``step``'s tokens on the device and its row ids, hashed eagerly (not into ``ids``)."""
        torch = self.torch
        self.state.tokens.copy_(torch.from_numpy(self.phase.tokens[step].reshape(-1)))
        self.context.copy_(torch.from_numpy(self.phase.context[step]))
        return self._hash()

    def layer_us(self) -> dict[str, float | None]:
        """One decoder layer on this phase's shapes: eager, and replayed as a CUDA graph (decode on
        a GPU), in microseconds."""
        torch, model, st = self.torch, self.model, self.state
        n = st.tokens.numel()
        x = torch.randn(n, model.b.hidden, device=self.device).to(torch.bfloat16)
        reps = 20 if self.cuda else 3

        def timed(fn) -> float:
            fn()
            self._sync()
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            self._sync()
            return (time.perf_counter() - t) / reps * 1e6

        eager = timed(lambda: model.layer(2, x, st))
        graph = None
        if self.graphs:
            g, _ = self._capture(lambda: model.layer(2, x, st))
            graph = timed(g.replay)
        return {"eager_us": eager, "graph_us": graph}


# --- arms ---------------------------------------------------------------------------------------


class HostTables:
    """The tables' rows in host memory, read from the group's files on first use and shared by
    arms (b) and (c). For a GPU they are page-locked (``cudaHostRegister``, mapped), so a kernel
    reads them over UVA; :meth:`drop` unlocks and frees them before the store arms need the RAM."""

    #: cudaHostRegisterPortable | cudaHostRegisterMapped
    REGISTER_FLAGS = 3

    def __init__(self, tables: Tables, device):
        self.tables = tables
        self.lock = device.type == "cuda"
        self._arrays: list[np.ndarray] | None = None

    def get(self) -> list:
        if self._arrays is None:
            arrays = []
            for name in self.tables.names:
                files = TableFiles(self.tables.data_dir, name)
                rows = np.empty((files.rows, files.row_bytes), dtype=np.uint8)
                files.read_into(rows)
                if self.lock:
                    self._cudart(
                        "cudaHostRegister", rows.ctypes.data, rows.nbytes, self.REGISTER_FLAGS
                    )
                arrays.append(rows)
            self._arrays = arrays
        return [torch.from_numpy(a) for a in self._arrays]

    def drop(self) -> None:
        arrays, self._arrays = self._arrays, None
        for rows in arrays or []:
            if self.lock:
                self._cudart("cudaHostUnregister", rows.ctypes.data)

    @staticmethod
    def _cudart(call: str, *args) -> None:
        err = getattr(torch.cuda.cudart(), call)(*args)
        if int(getattr(err, "value", err)) != 0:
            raise RuntimeError(f"{call} failed: {err}")


def sm_count(device) -> int | None:
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).multi_processor_count


@contextlib.contextmanager
def arm_source(arm: str, ctx: dict[str, Any]) -> Iterator[Source]:
    """The ``Source`` of ``arm`` with what it needs set up (and torn down after), beginning its
    steps' lookups where ``--after-first-segment`` (or the variant's setting) says."""
    with _arm_source(arm, ctx) as source:
        late = ctx["args"].after_first_segment
        priority = ctx["args"].model_priority
        if arm_variants.is_variant(arm):
            variant = arm_variants.variant_of(ctx["args"].d_variants, arm)
            late = bool(variant.settings.get("after_first_segment", late))
            priority = variant.settings.get("model_priority", priority)
        source.after_first_segment = late
        source.model_priority = priority
        yield source


@contextlib.contextmanager
def _arm_source(arm: str, ctx: dict[str, Any]) -> Iterator[Source]:
    args, device = ctx["args"], ctx["device"]
    if arm == "a":
        yield NoEngram()
    elif arm in "bc":
        host = ctx["host"].get()
        if arm == "b":
            source = TableSource([t.to(device) for t in host], side_stream=False, max_programs=None)
        else:
            views = [cuda_view(t) for t in host] if device.type == "cuda" else host
            sms = sm_count(device)
            programs = args.uva_programs or (None if sms is None else sms // 2)
            source = TableSource(
                views, side_stream=True, max_programs=programs, priority=args.side_priority
            )
        try:
            yield source
        finally:
            source.tables.clear()
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the store's VRAM tier lives in another process
    else:
        with store_backend(arm, ctx) as backend:
            yield StoreSource(backend, ctx["layer_ids"], args.prefill_lookahead)


def store_flags(arm: str, ctx: dict[str, Any]) -> tuple[int, list[str]]:
    """RAM budget and extra ``serve`` flags of store arm ``arm``."""
    args, tables, device = ctx["args"], ctx["tables"], ctx["device"]
    ram = int(tables.nbytes * 1.25) + (8 << 20) if arm == "d" else tables.nbytes // 4
    extra = ["--io-engine", args.io_engine]
    if mapped(arm, ctx):
        free = shutil.disk_usage(args.share_dir).free
        if free < tables.nbytes * 1.05:
            raise RuntimeError(
                f"--share-dir {args.share_dir} has {free / 1e9:.1f} GB free, the tables need "
                f"{tables.nbytes / 1e9:.1f} GB: give a memory file system with room"
            )
        extra += ["--share-memory", args.share_dir]
    if device.type == "cuda":
        budget = args.store_gpu_budget or str(tables.nbytes // 4)
        extra += ["--gpu-budget", budget, "--gpu-device", str(device.index or 0)]
    if args.store_gpu_refresh_ms is not None:
        extra += ["--gpu-refresh-ms", str(args.store_gpu_refresh_ms)]
    for name, w in zip(tables.names, table_weights(ctx), strict=True):
        if w != 1.0:
            extra += ["--gpu-weight", f"{name}={w:g}"]
    return ram, extra


def table_weights(ctx: dict[str, Any]) -> list[float]:
    """Each table's weight in the store's VRAM split (``--store-gpu-weight``; 1 if not given),
    in ``tables.names``' order."""
    weights = ctx["args"].store_gpu_weights
    return [weights.get(lid, 1.0) for lid in ctx["layer_ids"]]


def vram_shares(budget: int, tables: Tables, weights: Sequence[float]) -> list[int]:
    """Each table's bytes of a VRAM ``budget``, as the store splits it: by data bytes times the
    table's ``--gpu-weight``."""
    weighted = [rows * w for rows, w in zip(tables.rows, weights, strict=True)]
    return [int(budget * x // sum(weighted)) for x in weighted]


def mapped(arm: str, ctx: dict[str, Any]) -> bool:
    """Whether store arm ``arm`` reads rows itself from what the store shares (``--transport
    mapped``: arm (d), with its own kernel on a GPU, from the shared file on the CPU; arm (e)'s
    table is not whole in RAM, so it cannot be shared)."""
    return ctx["args"].transport == "mapped" and arm == "d"


def store_gpu_budget(client, ctx: dict[str, Any]) -> int | None:
    """Bytes of the store's VRAM tier (all tables), None without one: the budget the script
    gives the server it starts, or what a running server (``--addr``) reports."""
    args, tables, device = ctx["args"], ctx["tables"], ctx["device"]
    if args.addr:
        gpu = gpu_tier(client.stats())
        return None if gpu is None else int(gpu["capacity_bytes"])
    if device.type != "cuda":
        return None
    return parse_size(args.store_gpu_budget) if args.store_gpu_budget else tables.nbytes // 4


@contextlib.contextmanager
def store_backend(arm: str, ctx: dict[str, Any]) -> Iterator[Any]:
    """An ``EngramRowBackend`` over a server configured for ``arm``: started here, or the one at
    ``--addr`` (arm (d) only)."""
    args, tables, log = ctx["args"], ctx["tables"], ctx["log"]
    if arm_variants.is_variant(arm):
        yield from variant_backend(arm, ctx)
        return
    with contextlib.ExitStack() as stack:
        if args.addr:
            addr = args.addr
        else:
            ram, extra = store_flags(arm, ctx)
            server = stack.enter_context(
                LocalServer(args.server_bin, tables.data_dir, ram_cache=str(ram), args=tuple(extra))
            )
            addr = server.addr
            if os.environ.get("ENGRAM_OFFLOAD_SERVER_LOGS"):
                # The server's log, kept (it goes with the server): with
                # RUST_LOG=engram_store::gpu_stages=debug, where its device writes spend time.
                keep = Path(os.environ["ENGRAM_OFFLOAD_SERVER_LOGS"])
                name = f"server-{args.shape}-{arm}.log"
                stack.callback(lambda: (keep / name).write_text(server.log()))
            log(
                f"arm ({arm}): engram-store on {addr}, --ram-cache {ram / 1e6:.1f} MB "
                f"({ram / tables.nbytes:.0%} of the tables) {' '.join(extra)}"
            )
        client = stack.enter_context(Client(addr))
        if arm == "d" and not mapped(arm, ctx):
            warm_ram(client, tables, log)
        if mapped(arm, ctx):  # shared (and loaded whole) before the warm reads rows
            sms = sm_count(ctx["device"])
            programs = args.mapped_programs or (None if sms is None else max(1, sms // 8))
            transport = MappedTransport(
                client,
                record_every=args.mapped_record_every,
                stage_ahead=args.mapped_stage_ahead,
                max_programs=programs,
                ahead_programs=args.mapped_ahead_programs,
                table_programs=late_table_programs(args.mapped_late_programs, ctx),
            )
            stack.callback(transport.close)
            stack.callback(lambda: log(
                f"arm ({arm}): gathers staged: {transport.staged_gathers}, "
                f"{transport.staged_rows:,} rows copied up in bulk"))  # fmt: skip
            started = time.perf_counter()
            for name in tables.names:
                transport.table(name, ctx["device"])
            log(f"arm ({arm}): mapped the store's shared tables in "
                f"{time.perf_counter() - started:.1f}s")  # fmt: skip
        elif args.transport == "grpc":
            transport = GrpcTransport(client)
        else:
            transport = ChannelTransport(client)
        if args.store_warm_tokens:
            warmed = warm_vram(client, arm, ctx)
            ctx["store_vram"][arm] = warmed
            stack.callback(lambda: warmed.update(tier_counters(client, arm, log)))
        if arm == "d":  # for arm (d)'s variants, opened after it and closed before it
            ctx["d_transport"] = transport
            stack.callback(ctx.pop, "d_transport", None)
        backend = row_backend(transport, ctx)
        stack.callback(backend.close)
        yield backend


def later_tables(ctx: dict[str, Any]) -> list[str]:
    """The tables of every Engram layer after the first (the lowest layer id)."""
    by_layer = sorted(zip(ctx["layer_ids"], ctx["tables"].names, strict=True))
    return [name for _, name in by_layer[1:]]


def late_table_programs(programs: int | None, ctx: dict[str, Any]) -> dict[str, int]:
    """``MappedTransport(table_programs=...)`` of ``--mapped-late-programs``: ``programs`` for
    every later layer's table (none when not given)."""
    return {} if programs is None else {name: programs for name in later_tables(ctx)}


def row_backend(transport, ctx: dict[str, Any], **overrides: Any):
    """The harness's ``EngramRowBackend`` over ``transport``: the flags' settings, ``overrides``
    (a variant's) over them."""
    args, tables = ctx["args"], ctx["tables"]
    layers = [
        EngramLayer(lid, name) for lid, name in zip(ctx["layer_ids"], tables.names, strict=True)
    ]
    settings = {
        "stagger_gathers": args.stagger_gathers,
        "inline_min_tokens": args.inline_min_tokens,
        "side_priority": args.side_priority,
        "stage_min_tokens": args.stage_min_tokens,
        **overrides,
    }
    return EngramRowBackend(
        transport,
        layers,
        max_tokens=ctx["max_tokens"],
        device=ctx["device"],
        hasher=tables.hasher,
        **settings,
    )


def variant_backend(arm: str, ctx: dict[str, Any]) -> Iterator[Any]:
    """Arm (d)'s variant ``arm``: a backend over (d)'s transport (open before it, closed after
    it), or over a view of it with other settings; the variant's settings over the flags'."""
    variant = arm_variants.variant_of(ctx["args"].d_variants, arm)
    transport = ctx.get("d_transport")
    if transport is None:
        raise RuntimeError(f"arm ({arm}) runs on arm (d)'s store, which is not open")
    overrides = arm_variants.transport_overrides(variant, later_tables(ctx))
    if overrides:
        if not isinstance(transport, MappedTransport):
            keys = ", ".join(k for k in variant.settings if k in arm_variants.TRANSPORT_KEYS)
            raise RuntimeError(f"arm ({arm}): {keys} needs --transport mapped")
        transport = transport.view(**overrides)
    backend = row_backend(transport, ctx, **arm_variants.backend_overrides(variant))
    try:
        yield backend
    finally:
        backend.close()


def warm_ram(client, tables: Tables, log) -> None:
    """Reads every row of every table once, so the RAM tier holds the whole table."""
    started = time.perf_counter()
    chunk = 1 << 19
    with client.shm_region(chunk * tables.row_bytes) as region:
        for name, rows in zip(tables.names, tables.rows, strict=True):
            read_through(client, region, name, np.arange(rows, dtype=np.uint64), chunk)
    log(f"arm (d): read the whole table once in {time.perf_counter() - started:.1f}s")


def read_through(client, region, table: str, ids: np.ndarray, chunk: int, times: int = 1) -> None:
    """Reads rows ``ids`` of ``table`` through the store into ``region`` (room for ``chunk``
    rows), ``chunk`` at a time, each chunk ``times`` times in a row."""
    for first in range(0, ids.size, chunk):
        for _ in range(times):
            client.lookup_into(region, table, ids[first : first + chunk])


# --- the store's VRAM tier, warmed from the trace -----------------------------------------------

#: Ids per Prefetch hint (8 B each: well inside gRPC's 4 MiB messages).
HINT_CHUNK = 1 << 18
#: Bands of the warm's hints: every hinted row once, then the most frequent half again, then the
#: most frequent quarter. A hint counts 4 in the tier's hot counter, so the rows that were more
#: frequent in the held-out trace rank above the others in it (12 / 8 / 4), as the counts of a
#: server that has seen hours of traffic would, and age out last.
HINT_BANDS = (1, 2, 4)
#: Rows per read of arm (e)'s RAM band (``--store-warm-ram-band``), at most: a chunk is at most
#: half the RAM tier's small queue (a tenth of the tier: 1.2M rows for the harness's arm (e)),
#: so a chunk read twice in a row is seen again while new.
RAM_BAND_CHUNK = 1 << 17


@dataclasses.dataclass(frozen=True)
class WarmRows:
    """Per table, the distinct rows of the held-out tokens' n-grams, most frequent first (ties by
    id), and their counts."""

    tokens: int
    held_out: int
    rows: list[np.ndarray]
    counts: list[np.ndarray]


def held_out_positions(trace_size: int, phases: Sequence[Phase]) -> np.ndarray:
    """Positions of the trace that no phase's step has as a token (warm-up steps included), in
    order: the part of the trace the runs never look up. The n-grams ending at these positions
    are other occurrences than the runs' (they may share the tokens before a run's first)."""
    used = np.zeros(trace_size, dtype=bool)
    for phase in phases:
        used[phase.positions.reshape(-1)] = True
    return np.flatnonzero(~used)


def warm_positions(held_out: np.ndarray, tokens: int) -> np.ndarray:
    """``tokens`` of the ``held_out`` positions spread evenly over them (all of them if fewer),
    so the warm sees the same mix of the trace as the runs, whose sequences are spread over it."""
    if tokens >= held_out.size:
        return held_out
    return held_out[np.arange(tokens, dtype=np.int64) * held_out.size // tokens]


def position_row_ids(
    trace: np.ndarray, positions: np.ndarray, hasher, chunk: int = 1 << 16
) -> np.ndarray:
    """Row ids ``[P, layers, columns]`` of the tokens at ``positions`` of ``trace``, each with the
    ``LOOKBACK`` tokens before it as context (wrapping at the trace's start, as in
    :func:`decode_phase`)."""
    n, out = trace.size, []
    for first in range(0, positions.size, chunk):
        pos = positions[first : first + chunk]
        context = trace[(pos[:, None] - LOOKBACK + np.arange(LOOKBACK)) % n]
        out.append(hasher.row_ids(trace[pos][:, None], context)[:, 0])
    if not out:
        return np.zeros((0, len(hasher.layer_ids), hasher.columns), dtype=np.int64)
    return np.concatenate(out)


def rows_by_frequency(ids: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per layer of ``ids [P, layers, columns]``: its distinct row ids, most frequent first (ties
    by id), and their counts."""
    rows, counts = [], []
    for layer in range(ids.shape[1]):
        distinct, count = np.unique(ids[:, layer].reshape(-1), return_counts=True)
        order = np.lexsort((distinct, -count))
        rows.append(distinct[order])
        counts.append(count[order])
    return rows, counts


def warm_rows(trace: np.ndarray, phases: Sequence[Phase], hasher, tokens: int) -> WarmRows:
    """The rows to warm a store with: those of ``tokens`` held-out positions of ``trace``."""
    held_out = held_out_positions(trace.size, phases)
    positions = warm_positions(held_out, tokens)
    rows, counts = rows_by_frequency(position_row_ids(trace, positions, hasher))
    return WarmRows(int(positions.size), int(held_out.size), rows, counts)


def parse_size(text: str) -> int:
    """A byte size as the store's command line takes it (``4GiB``, ``1.5GB``, ``3168981156``)."""
    units = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
             "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
             "tib": 2**40}  # fmt: skip
    t = text.strip().replace("_", "")
    split = len(t) - len(t.lstrip("0123456789."))
    return int(float(t[:split]) * units[t[split:].strip().lower()])


def vram_tier_rows(share_bytes: int, row_bytes: int, max_batch: int = 1 << 17) -> int:
    """Rows a table's VRAM tier of ``share_bytes`` holds, sized as ``GpuTier::new`` sizes it
    (``cache/src/gpu/tier.rs``; the store's batch is ``GPU_BATCH_ROWS`` in
    ``store/src/engine/build.rs``): the budget less the scratch of a batch of ``max_batch`` ids and
    of a refresh step of 65,536 rows, then the arena with a tag per slot (8 B), two hash indexes
    (12 B a bucket, at least 1.25 buckets a row, rounded up to a power of two) and a 64-B control
    block."""
    room = share_bytes - max_batch * (8 + row_bytes + 4) - (1 << 16) * (row_bytes + 4)

    def fits(rows: int) -> bool:
        buckets = max(32, 1 << (max(rows, 1) + rows // 4 - 1).bit_length())
        return rows * (row_bytes + 8) + 2 * buckets * 12 + 64 <= room

    lo, hi = 0, max(room, 0) // (row_bytes + 8)
    while lo < hi:
        mid = lo + (hi - lo + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def gpu_tier(stats) -> dict[str, Any] | None:
    """The VRAM tier's counters in a store's ``Stats`` (its first device's), None without one."""
    return next((stats.tiers[k] for k in sorted(stats.tiers) if k.split(":")[0] == "gpu"), None)


def hint(
    client, table: str, ids: np.ndarray, deadline: float, chunk_ids: int = HINT_CHUNK
) -> int:
    """Sends ``ids`` of ``table`` as Prefetch hints, ``chunk_ids`` at a time, each again until
    the server's prefetch queue has room for it (or ``deadline``); returns the ids accepted."""
    accepted = 0
    for first in range(0, ids.size, chunk_ids):
        chunk = ids[first : first + chunk_ids]
        while True:
            taken = client.prefetch(table, chunk).result()
            if taken or time.perf_counter() > deadline:
                break
            time.sleep(0.05)  # the queue is full: its reads are under way
        accepted += taken
    return accepted


def warm_vram(client, arm: str, ctx: dict[str, Any], timeout_s: float = 300.0) -> dict[str, Any]:
    """Before arm ``arm``'s runs: gives the store's VRAM tier the rows a server that has served
    this traffic for hours would hold, by hinting, per table, the most frequent rows of the
    held-out part of the trace (as many as its VRAM tier holds; every row without a tier, which
    only prefetches them into RAM), then waits for the hints' reads and the tier's refreshes
    (every second) to settle, and zeroes the store's counters so the arm's read only its runs."""
    args, tables, log = ctx["args"], ctx["tables"], ctx["log"]
    if "warm" not in ctx:  # the same rows for (d) and (e)
        want = args.store_warm_tokens
        ctx["warm"] = warm_rows(ctx["trace"], ctx["phases"], tables.hasher, want)
        if ctx["warm"].tokens < want:
            log(
                f"store warm: the trace has only {ctx['warm'].held_out:,} tokens that the runs "
                f"do not read, fewer than --store-warm-tokens {want:,}: warming from them all"
            )
    warm: WarmRows = ctx["warm"]
    started = time.perf_counter()
    deadline = started + timeout_s
    budget = store_gpu_budget(client, ctx)
    shares = [None] * len(tables.names)
    if budget is not None:
        shares = vram_shares(budget, tables, table_weights(ctx))
    hinted = accepted = 0
    hinted_per_table = []
    for name, rows, share in zip(tables.names, warm.rows, shares, strict=True):
        k = rows.size
        if share is not None:
            k = min(k, vram_tier_rows(share, tables.row_bytes))
        hinted += k
        hinted_per_table.append(k)
        for band in HINT_BANDS:
            # Sorted by id: rows of one disk block then go in one hint and are read once (a
            # band in frequency order put them in different hints: on a cold store, arm (e),
            # a read per row; on the dev machine 3.1x the reads and 2.4x the time: warm_order.py).
            band_rows = np.sort(rows[: k // band]).astype(np.uint64)
            accepted += hint(client, name, band_rows, deadline)
    settle = WarmSettle(hinted)
    while True:
        stats = client.stats()
        gpu = gpu_tier(stats)
        resident = 0 if gpu is None else gpu["resident_rows"]
        queued = getattr(stats, "prefetch_queued_rows", 0)  # 0: an engram_store before it
        entering = 0 if gpu is None else gpu.get("rows_entering", 0)
        if settle.settled(None if gpu is None else resident, queued, entering):
            break
        if time.perf_counter() > deadline:
            log(f"arm ({arm}): the warm did not settle in {timeout_s:.0f}s (the VRAM tier holds "
                f"{resident:,} of {hinted:,} hinted rows, {entering:,} entering); running anyway")
            break
        time.sleep(0.05 if gpu is None else 1.0)
    out = {
        "tokens": warm.tokens,
        "held_out_tokens": warm.held_out,
        "rows_hinted": hinted,
        "hints_accepted": accepted,
        "gpu_resident_rows": None if gpu is None else gpu["resident_rows"],
        "seconds": time.perf_counter() - started,
    }
    held = "no VRAM tier" if gpu is None else f"the VRAM tier holds {resident:,} rows"
    log(f"arm ({arm}): warmed from {warm.tokens:,} held-out tokens of the trace: hinted the "
        f"{hinted:,} most frequent of their {sum(r.size for r in warm.rows):,} distinct rows; "
        f"{held} after {out['seconds']:.1f}s")  # fmt: skip
    if args.store_warm_ram_band and arm == "e":  # (d) holds the whole table in RAM
        out.update(warm_ram_band(client, arm, ctx, skip=hinted_per_table))
    client.stats(reset=True)
    return out


def ram_tier_rows(stats, row_bytes: int) -> int | None:
    """Rows the store's RAM tier (all tables) has room for: its budget less its bookkeeping
    (policy and index, reported as what it holds beyond its rows), in rows; None without one."""
    ram = stats.tiers.get("ram")
    if ram is None:
        return None
    bookkeeping = ram["resident_bytes"] - ram["resident_rows"] * row_bytes
    return max(0, int(ram["capacity_bytes"] - bookkeeping) // row_bytes)


def warm_ram_band(client, arm: str, ctx: dict[str, Any], skip: list[int]) -> dict[str, Any]:
    """Arm (e) after its VRAM tier's warm: reads, through the store, the warm's next most
    frequent rows after the ``skip[t]`` hinted to the VRAM tier of table ``t``, as many as the
    RAM tier has room for (shared by table rows), so that the RAM tier holds the rows the VRAM
    tier does not, as the RAM tier of a server that has served for hours would (it sees only the
    VRAM tier's misses). Each chunk is read twice in a row: the RAM tier's policy (S3-FIFO)
    keeps a row it sees again while new and lets one read pass through as a scan. Sorted by id,
    so the rows of one disk block are read in one request. The reads count in the VRAM tier's
    hot counter once each time, below the warm's hints (4 each)."""
    tables, log = ctx["tables"], ctx["log"]
    warm: WarmRows = ctx["warm"]
    started = time.perf_counter()
    capacity = ram_tier_rows(client.stats(), tables.row_bytes)
    if not capacity:
        log(f"arm ({arm}): no RAM tier to warm; no RAM band read")
        return {"ram_band_rows": 0}
    total = sum(tables.rows)
    chunk = max(1, min(RAM_BAND_CHUNK, capacity // 20))  # half the policy's small queue
    band_rows = 0
    with client.shm_region(chunk * tables.row_bytes) as region:
        for name, rows, table_rows, k in zip(tables.names, warm.rows, tables.rows, skip,
                                             strict=True):  # fmt: skip
            band = np.sort(rows[k : k + capacity * table_rows // total]).astype(np.uint64)
            band_rows += band.size
            read_through(client, region, name, band, chunk, times=2)
    ram = client.stats().tiers.get("ram", {})
    out = {
        "ram_band_rows": band_rows,
        "ram_band_seconds": time.perf_counter() - started,
        "ram_resident_rows": ram.get("resident_rows"),
    }
    log(f"arm ({arm}): read the warm's next {band_rows:,} most frequent rows (the RAM tier has "
        f"room for ~{capacity:,}) twice in {out['ram_band_seconds']:.1f}s; the RAM tier holds "
        f"{out['ram_resident_rows']:,} rows")  # fmt: skip
    return out


def tier_counters(client, arm: str, log) -> dict[str, Any]:
    """After arm ``arm``'s runs: every tier's hits and misses over them, and the VRAM tier's hit
    rate (warm-up steps included; the counters were zeroed after the warm), logged."""
    try:
        stats = client.stats()
    except Exception as e:  # the server is gone: the arm's own error says why
        log(f"arm ({arm}): no VRAM tier counters after the runs: {e}")
        return {}
    tiers = {
        name: {k: t.get(k, 0) for k in ("hits", "misses")} for name, t in stats.tiers.items()
    }
    log(f"arm ({arm}): tier counters during the runs: {tiers}")
    gpu = gpu_tier(stats)
    if gpu is None:
        return {"tiers": tiers}
    looked = gpu["hits"] + gpu["misses"]
    if looked == 0:  # mapped: the worker's kernel reads the tier, the server counts nothing
        log(f"arm ({arm}): VRAM tier during the runs: no lookups reached the server (the "
            f"worker read the tier itself), {gpu['resident_rows']:,} rows resident, "
            f"{gpu.get('reads', 0):,} refreshes since the store started")  # fmt: skip
        return {"gpu_resident_rows": gpu["resident_rows"], "gpu_refreshes": gpu.get("reads", 0),
                "tiers": tiers}  # fmt: skip
    rate = gpu["hits"] / looked
    log(f"arm ({arm}): VRAM tier during the runs: {gpu['hits']:,} hits of {looked:,} rows looked "
        f"up ({rate:.1%}), {gpu['resident_rows']:,} rows resident")  # fmt: skip
    return {"gpu_hits": gpu["hits"], "gpu_misses": gpu["misses"], "gpu_hit_rate": rate,
            "tiers": tiers}  # fmt: skip


def gather_us(source: TableSource, run: Runner, step: int) -> float:
    """Microseconds the arm's gather of one step's rows (every layer) takes alone."""
    ids = run.stage(step)
    reps = 20 if run.cuda else 3
    source.gather(ids, run.state.rows)
    run.sync_device()
    t = time.perf_counter()
    for _ in range(reps):
        source.gather(ids, run.state.rows)
    run.sync_device()
    return (time.perf_counter() - t) / reps * 1e6


# --- main ---------------------------------------------------------------------------------------


def machine(device) -> dict[str, Any]:
    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "device": str(device),
    }
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.environ.get("ENGRAM_OFFLOAD_NO_REDUCED_REDUCTION"):
        # No reduced-precision (split-K) reductions in bf16/fp16 GEMMs.
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    if os.environ.get("ENGRAM_OFFLOAD_BLAS"):
        torch.backends.cuda.preferred_blas_library(os.environ["ENGRAM_OFFLOAD_BLAS"])
    if os.environ.get("ENGRAM_OFFLOAD_DETERMINISTIC"):
        # Deterministic kernels where torch has them; a warning names each op that has none.
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(args.cpu_threads)
    if args.store_warm_tokens is None:
        args.store_warm_tokens = WARM_TOKENS if device.type == "cuda" else 0
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", file=sys.stderr, flush=True)

    with contextlib.ExitStack() as stack:
        if args.data is None:
            args.data = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="engram-offload-"))
            )
        tables = prepare_tables(args, device, log)
        unknown = sorted(set(args.store_gpu_weights) - set(tables.hasher.layer_ids))
        if unknown:
            raise SystemExit(
                f"engram_offload.py: --store-gpu-weight: no Engram table at layer(s) {unknown} "
                f"(the tables' layers: {list(tables.hasher.layer_ids)})"
            )
        if args.prepare_only:
            return 0
        return run_arms(args, device, tables, log)


def run_arms(args: argparse.Namespace, device, tables: Tables, log) -> int:
    """Every arm through every phase; prints the results, writes the JSON and the chart. An arm
    that fails is reported and the others still run. Returns the exit status."""
    backbone = BACKBONES["tiny" if args.tiny else args.shape]
    trace = np.fromfile(args.trace, dtype="<u4").astype(np.int64)
    limit = min(backbone.vocab, tables.hasher.compression_map.size)
    if trace.size <= LOOKBACK or int(trace.max()) >= limit:
        raise ValueError(
            f"trace {args.trace}: {trace.size} tokens, ids up to {trace.max()}; "
            f"it needs more than {LOOKBACK} tokens, ids below {limit}"
        )
    by_round, reread = round_phases(trace, args, args.rounds)
    if reread:
        log(f"note: the trace ({trace.size:,} tokens) is too short for every phase and round to "
            f"read tokens of its own: {reread:,} positions are read more than once")  # fmt: skip
    phases = [p for rounds in by_round for p in rounds]
    max_position = args.window + args.decode_warmup + args.decode_steps + args.prefill_chunk + 64
    model = Decoder(backbone, device, args.seed, max_position)
    kv_shape = (
        backbone.layers, max(args.decode_batches, default=1), backbone.kv_heads, args.window,
        backbone.head_dim,
    )  # fmt: skip
    kv = tuple(torch.empty(kv_shape, dtype=torch.bfloat16, device=device) for _ in "kv")
    runners = [Runner(model, rounds, kv, tables.hasher, not args.no_graphs) for rounds in by_round]
    log(f"model {backbone.name} on {device}; phases: " + ", ".join(
        f"{p.kind} {p.batch}" for p in phases))  # fmt: skip
    layer_times = [{"phase": r.phase.kind, "batch": r.phase.batch, **r.layer_us()} for r in runners]
    ctx = {
        "args": args,
        "device": device,
        "tables": tables,
        "log": log,
        "host": HostTables(tables, device),
        "layer_ids": list(tables.hasher.layer_ids),
        "max_tokens": max(p.tokens_per_step for p in phases),
        "trace": trace,
        "phases": phases,
        "store_vram": {},  # per store arm: its warm and its VRAM tier's hits
    }
    arms = list(args.arms)
    if "e" in arms and args.addr:
        log("arm (e): skipped: with --addr the script cannot set the store's RAM tier")
        arms.remove("e")
    arms += [v.arm for v in args.d_variants]
    details: list[dict[str, Any]] = []
    failures: list[str] = []
    try:
        with stop_on_sigterm():
            if args.rounds > 1 or args.d_variants:
                run_rounds(arms, ctx, runners, args.rounds, details, failures)
            else:
                for arm in arms:
                    try:
                        details += run_arm(arm, ctx, runners)
                    except Exception as e:  # the other arms still run; the exit status says so
                        log(f"arm ({arm}) failed:\n{traceback.format_exc()}")
                        failures.append(f"arm ({arm}) failed: {type(e).__name__}: {e}")
                    if arm == "c" or (arm == "b" and "c" not in arms):
                        ctx["host"].drop()
    except Stopped as e:  # a time limit: what finished is still reported, and written
        log(f"{e}: reporting the phases that finished")
        failures.append(f"{e} before every arm and phase had run")
    graph_checks = [
        {"phase": r.phase.kind, "batch": r.phase.batch,
         **{f"engram_{'on' if on else 'off'}": err for on, err in r.graph_error.items()}}
        for r in runners if r.graph_error
    ]  # fmt: skip
    variants = [d for d in details if arm_variants.is_variant(d["arm"])]
    details = [d for d in details if not arm_variants.is_variant(d["arm"])]
    extra = {"graph_check": graph_checks, "store_vram": ctx["store_vram"]}
    if args.d_variants:
        extra["d_variants"] = {
            "settings": {v.arm: v.settings for v in args.d_variants},
            "results": variants,
        }
        failures += arm_variants.check_rows(variants, details)
    return report_results(args, device, tables, model, details, layer_times, failures, extra)


class Stopped(BaseException):
    """SIGTERM during the runs (``timeout``'s, at a time limit): not an ``Exception``, so no
    arm's handler takes it for that arm's failure; the phases that finished are reported."""


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM raises :class:`Stopped` in the main thread while inside."""

    def stop(signum: int, _frame: Any) -> None:
        raise Stopped(f"stopped by signal {signal.Signals(signum).name}")

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def run_arm(arm: str, ctx: dict[str, Any], runners: list[Runner]) -> list[dict[str, Any]]:
    """One arm through every phase: a ``details`` entry per phase."""
    with arm_source(arm, ctx) as source:
        return [run_phase(arm, source, r, ctx, twice=arm == "a") for r in runners]


def run_phase(
    arm: str, source: Source, r: Runner, ctx: dict[str, Any], twice: bool
) -> dict[str, Any]:
    """One run of ``arm`` through ``r``'s phase: its ``details`` entry. ``twice`` (arm (a)): run
    again, and say whether the backbone alone gives the same logits run to run on this device
    (whether the Engram arms' logits can be compared bit for bit)."""
    m = r.run(source, ctx["args"].seed)
    again = r.run(source, ctx["args"].seed) if twice else None
    out = {
        "arm": arm,
        "phase": r.phase.kind,
        "batch": r.phase.batch,
        "tok_per_s": m.tokens / m.seconds,
        "logits_sha256": m.logits_sha256,
        "rows_sha256": m.rows_sha256,
        "logits_reproducible": None if again is None else again.logits_sha256 == m.logits_sha256,
        "step_ms": m.seconds / (r.phase.steps - r.phase.warmup) * 1e3,
        "wait_us": m.wait_s * 1e6,
        "gather_us": gather_us(source, r, r.phase.warmup)
        if isinstance(source, TableSource) else None,
        "ready_us": m.ready_us,
        "needed_us": m.needed_us,
    }  # fmt: skip
    ctx["log"](f"arm ({arm}) {r.phase.kind} {r.phase.batch}: {out['tok_per_s']:,.1f} tok/s")
    return out


def round_order(arms: Sequence[str], k: int) -> list[str]:
    """The order of round ``k``'s arms: rounds go in pairs, the first of a pair ``k // 2`` arms
    further on than ``arms``, the second the same backwards, so over each pair an arm follows
    each neighbour as often as it precedes it. An arm runs differently after some arms: after
    one that leaves the GPU idle (as (e) waiting on the disk does) it starts on a cooler,
    faster-clocked GPU, and after arm (d) a variant of (d) finds in VRAM the rows (d)'s recorded
    lookups brought there (worth up to a point in BENCHMARKS 10h, when every round went forward)."""
    order = list(arms)
    turn = (k // 2) % max(1, len(order))
    order = order[turn:] + order[:turn]
    return order[::-1] if k % 2 else order


def run_rounds(
    arms: Sequence[str], ctx: dict[str, Any], runners: list[Runner], rounds: int,
    details: list[dict[str, Any]], failures: list[str],
) -> None:  # fmt: skip
    """``--rounds``: every arm's source open at once; per phase, ``rounds`` rounds that each run
    every arm in turn (in :func:`round_order`). An arm's ``details``
    entry (appended to ``details`` as each phase ends) is its median round (by tok/s) with every
    round's tok/s (``rounds_tok_per_s``) and, beside arm (c), each round's ratio to (c)'s in the
    same round (``rounds_vs_c``) and their median (``median_vs_c``). An arm that fails is
    reported (in ``failures``) and left out of the rounds after."""
    log = ctx["log"]

    def failed(arm: str, e: Exception) -> None:
        log(f"arm ({arm}) failed:\n{traceback.format_exc()}")
        failures.append(f"arm ({arm}) failed: {type(e).__name__}: {e}")

    with contextlib.ExitStack() as stack:
        sources: dict[str, Source] = {}
        for arm in arms:
            try:
                sources[arm] = stack.enter_context(arm_source(arm, ctx))
            except Exception as e:
                failed(arm, e)
        for r in runners:
            runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in sources}
            for k in range(rounds):
                r.use_round(k)
                for arm in round_order(list(sources), k):
                    try:
                        twice = arm == "a" and k == 0
                        runs[arm].append(run_phase(arm, sources[arm], r, ctx, twice))
                    except Exception as e:
                        failed(arm, e)
                        del sources[arm]
            medians = median_rounds(runs, rounds)
            details += medians
            log(f"{r.phase.kind} {r.phase.batch}, median of {rounds} rounds: " + ", ".join(
                f"({d['arm']}) {d['tok_per_s']:,.1f} tok/s"
                + (f" = {d['median_vs_c']:.4f} x (c)" if "median_vs_c" in d else "")
                + (f" = {d['median_vs_d']:.4f} x (d)" if "median_vs_d" in d else "")
                for d in medians))  # fmt: skip


def median_rounds(runs: dict[str, list[dict[str, Any]]], rounds: int) -> list[dict[str, Any]]:
    """Per arm that ran every round: its median round's entry, with the rounds beside it."""
    base_tok = {b: [x["tok_per_s"] for x in runs.get(b, [])] for b in "cd"}
    out = []
    for arm, rs in runs.items():
        if len(rs) < rounds:
            continue
        tok = [x["tok_per_s"] for x in rs]
        median = dict(sorted(rs, key=lambda x: x["tok_per_s"])[len(rs) // 2])
        median["rounds_tok_per_s"] = tok
        # Each round reads other tokens: the digests cover every round, in order, so arms
        # compare equal only if every round fed (and gave) the same.
        for key in ("logits_sha256", "rows_sha256"):
            if rs[0][key] is not None:
                median[key] = hashlib.sha256("".join(x[key] for x in rs).encode()).hexdigest()
        if arm == "a":  # the first round ran it twice
            median["logits_reproducible"] = rs[0]["logits_reproducible"]
        # Every arm against (c); a variant of (d) also against (d), its A/B.
        for name in "cd" if arm_variants.is_variant(arm) else "c":
            base = base_tok[name]
            if len(base) == rounds:
                ratios = [t / b for t, b in zip(tok, base, strict=True)]
                median[f"rounds_vs_{name}"] = ratios
                median[f"median_vs_{name}"] = float(np.median(ratios))
        out.append(median)
    return out


def report_results(
    args, device, tables: Tables, model, details, layer_times, failures, extra=None
) -> int:
    """Prints the table, the layer times and the logits check; writes ``--json`` and ``--svg``
    (with ``extra``'s entries: ``graph_check``, how far each decode runner's graphs were from its
    eager step, and ``store_vram``, the store arms' warms and VRAM hits); returns 1 if an arm
    failed or the logits are not as they must be."""
    arms = [{key: d[key] for key in ARM_KEYS} for d in details]
    details = report.with_losses(details)
    unstable = report.unreproducible(details)
    unknown = report.without_arm_a(details)
    problems = (
        failures + report.check_logits(arms, unstable + unknown) + report.check_rows(details)
    )
    notes = []
    if unstable:
        notes.append(
            "arm (a) run twice gave different logits in " + ", ".join(unstable)
            + ": the backbone is not bit-reproducible there on this device, so the Engram arms "
            "are compared by the rows they fed their layers (bit for bit), not by logits"
        )
    if unknown:
        notes.append(
            "arm (a) did not run in " + ", ".join(unknown) + ": whether the backbone is "
            "bit-reproducible there is not known, so the Engram arms are compared by the rows "
            "they fed their layers (bit for bit), not by logits"
        )
    print(report.table(details, model.b.name, model.g.layer_ids))
    for lt in layer_times:
        graph = "-" if lt["graph_us"] is None else f"{lt['graph_us']:.1f}"
        print(f"layer time, {lt['phase']} {lt['batch']}: eager {lt['eager_us']:.1f} us, "
              f"CUDA graph {graph} us")  # fmt: skip
    verdict = "(b)-(e) identical in every phase (rows, and logits where reproducible), (a) differs"
    print("checks: " + ("; ".join(problems) if problems else verdict))
    for note in notes:
        print("note: " + note)
    result = {
        "arms": arms,
        "details": details,
        "layer_us": layer_times,
        "checks": {"ok": not problems, "problems": problems, "notes": notes},
        "model": {
            "backbone": dataclasses.asdict(model.b),
            "engram": dataclasses.asdict(model.g),
            "window": args.window,
            "graphs": not args.no_graphs,
        },
        "tables": {
            "group": GROUP,
            "names": tables.names,
            "rows": tables.rows,
            "row_bytes": tables.row_bytes,
            "bytes": tables.nbytes,
            "engram_vocab": args.engram_vocab,
        },
        "run": {
            **machine(device),
            "trace": str(args.trace),
            "seed": args.seed,
            "decode_steps": args.decode_steps,
            "decode_warmup": args.decode_warmup,
            "prefill_chunks": args.prefill_chunks,
            "prefill_warmup": args.prefill_warmup,
            "prefill_lookahead": args.prefill_lookahead,
            "transport": args.transport,
            "stagger_gathers": args.stagger_gathers,
            "mapped_record_every": args.mapped_record_every,
            "mapped_stage_ahead": args.mapped_stage_ahead,
            "inline_min_tokens": args.inline_min_tokens,
            "after_first_segment": args.after_first_segment,
            "model_priority": args.model_priority,
            "rounds": args.rounds,
            "mapped_programs": args.mapped_programs,
            "mapped_late_programs": args.mapped_late_programs,
            "mapped_ahead_programs": args.mapped_ahead_programs,
            "uva_programs": args.uva_programs,
            "side_priority": args.side_priority,
            "stage_min_tokens": args.stage_min_tokens,
            "store_gpu_budget": args.store_gpu_budget,
            "store_gpu_refresh_ms": args.store_gpu_refresh_ms,
            "store_gpu_weights": args.store_gpu_weights,
            "store_warm_tokens": args.store_warm_tokens,
            "store_warm_ram_band": args.store_warm_ram_band,
        },
        "paper_table4": report.PAPER_TABLE4,
        **(extra or {}),
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.svg:
        title = f"Engram offload, {model.b.name} on {result['run'].get('gpu', device)}"
        args.svg.write_text(report.svg_chart(details, title, model.b.name))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
