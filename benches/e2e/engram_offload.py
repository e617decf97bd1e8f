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
``ENGRAM_OFFLOAD_SERVER_LOGS=DIR`` keeps the store arms' server logs there;
``ENGRAM_OFFLOAD_KERNEL_PROFILE=DIR`` (with ``--rounds`` above 1 or ``--d-variant``) runs each
phase once more per arm after its rounds under ``torch.profiler`` and writes each kernel's device
time to ``DIR/kernels-SHAPE.csv`` (``kernel_profile.py``). A step's timeline says,
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

This file runs the arms in rounds and reports them; the parts beside it: ``offload_cli.py`` (the
flags and run profiles), ``offload_tables.py`` (the tables: written as an Engram group, read back
for (b) and (c)), ``offload_phases.py`` (which tokens each step and round reads),
``offload_sources.py`` (where each arm's rows come from), ``offload_runner.py`` (an arm's run of
a phase: graphs, timeline, measurements), ``offload_store_arm.py`` (the store arms' server,
transport and backend), ``offload_warm.py`` (warming the store's tiers from held-out tokens),
``arm_variants.py`` (``--d-variant``), ``offload_model.py`` (the decoder), ``offload_report.py``
(the table, checks and chart) and ``warm_settle.py`` (when a warm has settled).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import platform
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

# The harness's modules sit beside it; the client package comes from this checkout when it is
# not installed.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from offload_cli import REPO  # noqa: E402

try:
    import engram_store  # noqa: F401
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO / "client" / "python"))

import arm_variants  # noqa: E402
import kernel_profile  # noqa: E402
import offload_report as report  # noqa: E402
from offload_cli import WARM_TOKENS, parse_args  # noqa: E402
from offload_model import BACKBONES, Decoder  # noqa: E402
from offload_phases import LOOKBACK, round_phases  # noqa: E402
from offload_runner import Runner, gather_us  # noqa: E402
from offload_sources import Source, TableSource  # noqa: E402
from offload_store_arm import arm_source  # noqa: E402
from offload_tables import GROUP, HostTables, Tables, prepare_tables  # noqa: E402

#: The keys of an entry of the JSON's "arms" (issue #14's contract).
ARM_KEYS = ("arm", "phase", "batch", "tok_per_s", "logits_sha256")




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

    # the wall clock at 0.0 s, so that a log's times line up with outside samples (GPU clocks)
    log(f"started at {time.time() - (time.perf_counter() - started):.3f} s since the epoch")
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
            profile_dir = os.environ.get("ENGRAM_OFFLOAD_KERNEL_PROFILE")
            if profile_dir:
                profile_arms(sources, r, ctx, Path(profile_dir))


def profile_arms(sources: dict[str, Source], r: Runner, ctx: dict[str, Any], out: Path) -> None:
    """``ENGRAM_OFFLOAD_KERNEL_PROFILE``: after a phase's rounds, one more run of it per arm under
    the profiler, its kernels' device time written to ``out`` (:mod:`kernel_profile`); not part
    of the measured rounds. An arm whose profile fails is logged and the others go on."""
    for arm, source in sources.items():
        try:
            path = kernel_profile.profile_run(r, arm, source, ctx["args"].seed, out,
                                              ctx["args"].shape)  # fmt: skip
        except Exception as e:
            ctx["log"](f"arm ({arm}): kernel profile failed: {type(e).__name__}: {e}")
        else:
            ctx["log"](f"arm ({arm}): kernels of {r.phase.kind} {r.phase.batch} in {path}")


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
            "mapped_predict_misses": args.mapped_predict_misses,
            "mapped_copy_threads": args.mapped_copy_threads,
            "mapped_split_misses": args.mapped_split_misses,
            "mapped_fetch_misses": args.mapped_fetch_misses,
            "mapped_count_hits": args.mapped_count_hits,
            "mapped_ahead_programs": args.mapped_ahead_programs,
            "uva_programs": args.uva_programs,
            "side_priority": args.side_priority,
            "stage_min_tokens": args.stage_min_tokens,
            "store_gpu_budget": args.store_gpu_budget,
            "store_gpu_refresh_ms": args.store_gpu_refresh_ms,
            "store_gpu_refresh_min_rows": args.store_gpu_refresh_min_rows,
            "store_gpu_weights": args.store_gpu_weights,
            "store_warm_tokens": args.store_warm_tokens,
            "store_warm_ram_band": args.store_warm_ram_band,
            "store_warm_every_row": args.store_warm_every_row,
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
