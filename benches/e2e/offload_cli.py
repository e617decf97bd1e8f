"""The offload harness's command line (``engram_offload.py``): its flags, the run profiles
(``tiny`` on a CPU, ``full`` on a GPU) and the defaults they fall back on."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path

import arm_variants
import offload_report as report

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TRACE = REPO / "testdata" / "traces" / "en-sample.tokens.u32"
DEFAULT_MAP = REPO / "testdata" / "engram" / "dsv3-compress.npy"
DEFAULT_BIN = REPO / "target" / "release" / "engram-store"
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
        "--store-gpu-refresh-min-rows",
        type=int,
        default=None,
        help="the store arms' --gpu-refresh-min-rows: a refresh wanting fewer rows waits for the "
        "next period, at most ten in a row (default: the store's, 0)",
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
    p.add_argument(
        "--store-warm-every-row",
        action="store_true",
        help="the warm hints every row of every table, the warm's rows first and then the rest "
        "in id order, as many as each table's VRAM tier holds: with a --store-gpu-budget of the "
        "whole tables and more (their rows, 8 B a slot, two indexes of 12 B a bucket), no row of "
        "the runs is read over PCIe (what arm (d) costs with no misses at all)",
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
        "--mapped-predict-misses",
        action="store_true",
        help="with --transport mapped: arm (d) hashes each step's row ids on the host and the "
        "transport foresees the step's misses from what its earlier gathers found in VRAM, "
        "copies them up by the copy engine at once and runs the gather where the layer reads "
        "its rows (MappedTransport(predict_misses=True))",
    )
    p.add_argument(
        "--mapped-copy-threads",
        type=int,
        default=1,
        help="with --mapped-predict-misses: threads copying a step's foreseen misses out of the "
        "host file (MappedTransport(copy_threads=N); default 1)",
    )
    p.add_argument(
        "--mapped-split-misses",
        action="store_true",
        help="with --transport mapped: arm (d)'s gathers run as two kernels, the VRAM tier's rows "
        "first (listing the others), then the listed misses over PCIe, so only blocks of misses "
        "wait on PCIe reads (MappedTransport(split_misses=True))",
    )
    p.add_argument(
        "--mapped-fetch-misses",
        action="store_true",
        help="with --transport mapped: arm (d)'s gathers on the side stream read only the rows "
        "the VRAM tier lacks (over PCIe, into device memory) at prefetch, and the rest from VRAM "
        "where the layer reads its rows, on every SM (MappedTransport(fetch_misses=True))",
    )
    p.add_argument(
        "--mapped-count-hits",
        action="store_true",
        help="with --transport mapped: arm (d)'s gathers count the rows they read from the VRAM "
        "tier (MappedTransport(count_hits=True)), logged after its runs: the server counts none "
        "of them",
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
    for key, low, high, bounds in (
        ("mapped_late_programs", 1, None, "at least 1"),
        ("mapped_copy_threads", 1, 16, "from 1 to 16"),  # MappedTransport's MAX_COPY_THREADS
    ):
        given = [("--" + key.replace("_", "-"), getattr(args, key))] + [
            (f"--d-variant {v.name}: {key}", v.settings[key])
            for v in args.d_variants
            if key in v.settings
        ]
        for what, value in given:
            if value is not None and (value < low or (high is not None and value > high)):
                p.error(f"{what} must be {bounds}, got {value}")
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


def parse_size(text: str) -> int:
    """A byte size as the store's command line takes it (``4GiB``, ``1.5GB``, ``3168981156``)."""
    units = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
             "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
             "tib": 2**40}  # fmt: skip
    t = text.strip().replace("_", "")
    split = len(t) - len(t.lstrip("0123456789."))
    return int(float(t[:split]) * units[t[split:].strip().lower()])
