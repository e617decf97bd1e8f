#!/usr/bin/env python3
"""The host side of a decode step whose misses are foreseen (``MappedTransport`` with
``predict_misses=True``, ``gather_predicted``): hashing the step's tokens into row ids,
foreseeing which rows the VRAM tier lacks (``ResidencyMap.foresee``), and copying those rows out
of the shared table file (numpy's ``take``, in ``--copy-threads`` parts as the transport's
``copy_threads``), per Engram layer, timed on this machine. No GPU needed.

Two V4.1 tables of ``--engram-vocab`` rows per hash column are written as one file each in
``--dir`` (a memory file system, as the server's ``--share-memory``) and mapped with their page
tables filled (as ``cudaHostRegister`` pins them). The VRAM tier is simulated as the
``--vram-share`` most frequent rows of held-out trace tokens (what the harness's warm puts there);
each step's kernel flags (a row is a hit where that set holds it) are fed back to the map as the
kernel would write them. The maps start as a worker's that has read the held-out tokens (it
knows their rows' flags); steps read ``--batch`` consecutive tokens of the trace after them,
``--skip`` untimed first; the report gives medians over ``--steps`` steps.

    python benches/e2e/foresee_cost.py --batch 64,256 --engram-vocab 400000
"""

from __future__ import annotations

import argparse
import concurrent.futures
import mmap
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offload_cli import DEFAULT_MAP, DEFAULT_TRACE, REPO  # noqa: E402
from offload_phases import LOOKBACK  # noqa: E402
from offload_warm import position_row_ids, rows_by_frequency  # noqa: E402
from staged_copy_cost import ROW_BYTES, write_table  # noqa: E402

from engram_store.torch import NgramHasher, ResidencyMap, v41_layout  # noqa: E402
from engram_store.torch.mapped import MIN_SPLIT_ROWS, take_rows  # noqa: E402

#: The whole English trace, where a checkout has it (git-ignored: see BENCHMARKS.md 10i).
BENCH_TRACE = REPO / "bench-data" / "en.tokens.u32"


class Ended:
    """A kernel that has ended (the flags are on the host by the next step)."""

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        pass


def map_table(path: str, rows: int) -> np.ndarray:
    """``rows`` random rows written at ``path`` and mapped read-only, page tables filled."""
    write_table(path, rows)
    fd = os.open(path, os.O_RDONLY)
    try:
        m = mmap.mmap(fd, rows * ROW_BYTES, mmap.MAP_SHARED | mmap.MAP_POPULATE,
                      mmap.PROT_READ)  # fmt: skip
    finally:
        os.close(fd)
    return np.frombuffer(m, dtype=np.uint8).reshape(rows, ROW_BYTES)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", default="64,256", help="tokens per decode step, comma-separated")
    p.add_argument("--engram-vocab", type=int, default=400_000, help="rows per hash column")
    p.add_argument("--vram-share", type=float, default=0.25, help="rows of a table in VRAM")
    p.add_argument("--steps", type=int, default=200, help="timed steps per batch")
    p.add_argument("--skip", type=int, default=20, help="untimed steps first (the map learns)")
    trace_default = BENCH_TRACE if BENCH_TRACE.exists() else DEFAULT_TRACE
    p.add_argument("--trace", type=Path, default=trace_default,
                   help="token ids (u32); default: bench-data/en.tokens.u32 if there")  # fmt: skip
    p.add_argument(
        "--held-tokens",
        type=int,
        default=1_000_000,
        help="trace tokens whose rows choose the VRAM tier's (not read by the steps)",
    )
    p.add_argument("--dir", default="/dev/shm", help="where the table files are written")
    p.add_argument(
        "--copy-threads",
        type=int,
        default=1,
        help="threads per copy of a layer's misses (MappedTransport's copy_threads)",
    )
    args = p.parse_args()
    try:
        batches = [int(b) for b in args.batch.split(",") if b]
    except ValueError:
        p.error(f"--batch takes comma-separated token counts, got {args.batch!r}")
    if not batches or min(batches) < 1 or not 0 < args.vram_share <= 1 or args.steps < 1:
        p.error("--batch, --steps must be positive and --vram-share in (0, 1]")
    if not 1 <= args.copy_threads <= 16:
        p.error(f"--copy-threads must be from 1 to 16, got {args.copy_threads}")
    pool = (
        concurrent.futures.ThreadPoolExecutor(args.copy_threads - 1)
        if args.copy_threads > 1
        else None
    )

    cmap = np.load(DEFAULT_MAP)
    hasher = NgramHasher(v41_layout(args.engram_vocab, cmap), cmap)
    trace = np.fromfile(args.trace, dtype=np.uint32).astype(np.int64)
    layers = len(hasher.layer_ids)
    table_rows = list(hasher.table_rows)
    # Held-out tokens (the trace's first ones): their most frequent rows per layer are the VRAM
    # tier's; the steps read the tokens after them.
    held = trace[: min(args.held_tokens, trace.size // 2)]
    seen, _ = rows_by_frequency(position_row_ids(trace, np.arange(LOOKBACK, held.size), hasher))
    in_vram = []
    for j in range(layers):
        mask = np.zeros(table_rows[j], dtype=bool)
        mask[seen[j][: int(args.vram_share * table_rows[j])]] = True
        in_vram.append(mask)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        started = time.perf_counter()
        tables = [map_table(os.path.join(tmp, f"t{j}"), table_rows[j]) for j in range(layers)]
        print(f"{layers} tables of {table_rows[0]:,} rows x {ROW_BYTES} B mapped in "
              f"{time.perf_counter() - started:.1f}s; VRAM tier: the {args.vram_share:.0%} most "
              f"frequent rows of {held.size:,} held-out tokens")  # fmt: skip
        run = trace[held.size :]
        print(f"{'batch':>6} {'hash us':>8} {'foresee us':>10} {'copy us':>8} {'step us':>8} "
              f"{'rows copied':>12} {'of rows':>8} {'hit rate':>8}")  # fmt: skip
        for batch in batches:
            maps = [ResidencyMap(table_rows[j]) for j in range(layers)]
            for j, m in enumerate(maps):  # what reading the held-out tokens taught the worker
                m.known[seen[j]] = in_vram[j][seen[j]]
            timings: dict[str, list[float]] = {"hash": [], "foresee": [], "copy": [], "all": []}
            copied, looked, hits = [], [], []
            for step in range(args.skip + args.steps):
                at = 3 + step * batch
                tokens = run[at : at + batch].reshape(-1, 1)
                ctx = np.stack([run[at - 3 + i : at - 3 + i + batch] for i in range(3)], axis=1)
                t0 = time.perf_counter()
                ids = hasher.row_ids(tokens, ctx).reshape(batch, layers, -1)
                t1 = time.perf_counter()
                foresee = copy = 0.0
                n_copied = n_hits = 0
                for j in range(layers):
                    flat = np.ascontiguousarray(ids[:, j]).reshape(-1)
                    f0 = time.perf_counter()
                    misses = maps[j].foresee(flat)
                    at_misses = np.flatnonzero(misses)
                    f1 = time.perf_counter()
                    out = np.empty((max(1, at_misses.size), ROW_BYTES), np.uint8)
                    parts = args.copy_threads if at_misses.size >= MIN_SPLIT_ROWS else 1
                    take_rows(tables[j], flat[at_misses], out[: at_misses.size], pool, parts)
                    f2 = time.perf_counter()
                    foresee += f1 - f0
                    copy += f2 - f1
                    came = in_vram[j][np.clip(flat, 0, table_rows[j] - 1)] & (flat >= 0)
                    maps[j].expect(flat, misses, torch.from_numpy(came.astype(np.uint8)), Ended())
                    n_copied += at_misses.size
                    n_hits += int(came.sum())
                t2 = time.perf_counter()
                if step >= args.skip:
                    timings["hash"].append(t1 - t0)
                    timings["foresee"].append(foresee)
                    timings["copy"].append(copy)
                    timings["all"].append(t2 - t0)
                    copied.append(n_copied)
                    looked.append(ids.size)
                    hits.append(n_hits)
            med = {k: statistics.median(v) * 1e6 for k, v in timings.items()}
            print(f"{batch:>6} {med['hash']:>8.0f} {med['foresee']:>10.0f} {med['copy']:>8.0f} "
                  f"{med['all']:>8.0f} {statistics.median(copied):>12,.0f} "
                  f"{statistics.median(looked):>8,.0f} "
                  f"{sum(hits) / sum(looked):>8.1%}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
