#!/usr/bin/env python3
"""The VRAM hit rate ``engram_offload.py``'s timed decode steps would get from the store's VRAM
tier had it been warmed as ``--store-warm-tokens`` warms it: holding the top-K rows, by frequency,
of the n-grams of trace tokens that no run reads. Offline, on the host (numpy; the harness's own
phases, hashing and held-out positions, imported from it), for the harness's default sizes.

For each warm (``--warm-tokens``: that many held-out tokens, spread over the trace, or ``all``)
and each K (``--fractions`` of a table's rows, and the tier's capacity under ``--gpu-budget``, by
default the store arms' quarter of the tables' bytes), per decode batch: the share of the timed
steps' row lookups (token x hash column, both tables) whose row the tier holds, and the share of
the distinct rows of a step and table (the store looks each distinct row up once). "any" holds
every row of the warm's tokens: the most any K can give from that warm.

    python3 benches/e2e/vram_hit_estimate.py --engram-vocab 1000000

The H200 run of 2026-12-01 (BENCHMARKS.md section 10), unwarmed, saw ~4% VRAM hits in decode.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engram_offload  # noqa: E402, F401 (the client package from this checkout, torch settings)
from offload_cli import DEFAULT_MAP, DEFAULT_TRACE, PROFILES, REPO, WARM_TOKENS, parse_size  # noqa: E402
from offload_phases import decode_phase, prefill_phase  # noqa: E402
from offload_warm import (  # noqa: E402
    held_out_positions,
    position_row_ids,
    rows_by_frequency,
    vram_tier_rows,
    warm_positions,
)

from engram_store.torch import V41_ROWS, NgramHasher, v41_layout  # noqa: E402

BENCH_TRACE = REPO / "bench-data" / "en.tokens.u32"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    full = PROFILES["full"]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engram-vocab", type=int, default=full.engram_vocab)
    p.add_argument(
        "--trace",
        type=Path,
        default=BENCH_TRACE if BENCH_TRACE.exists() else DEFAULT_TRACE,
        help="little-endian u32 token ids (default: bench-data/en.tokens.u32 if there, else "
        "the repository's sample)",
    )
    p.add_argument("--compress", type=Path, default=DEFAULT_MAP)
    p.add_argument("--decode-batches", default=",".join(map(str, full.decode_batches)))
    p.add_argument("--decode-steps", type=int, default=full.decode_steps)
    p.add_argument("--decode-warmup", type=int, default=full.decode_warmup)
    p.add_argument("--prefill-chunk", type=int, default=full.prefill_chunk)
    p.add_argument("--prefill-chunks", type=int, default=full.prefill_chunks)
    p.add_argument("--prefill-warmup", type=int, default=full.prefill_warmup)
    p.add_argument(
        "--warm-tokens",
        default=f"{1 << 18},{WARM_TOKENS},all",
        help="comma-separated held-out token counts to warm from ('all': every one)",
    )
    p.add_argument("--fractions", default="0.10,0.25,0.50", help="K as fractions of table rows")
    p.add_argument(
        "--gpu-budget",
        help="the store's VRAM budget, all tables (default: a quarter of the tables' bytes, as "
        "the harness gives its store arms)",
    )
    return p.parse_args(argv)


def hit_rates(
    measured: np.ndarray, held: list[np.ndarray], table_rows: list[int], steps: int
) -> tuple[float, float]:
    """Of ``measured [steps * B, layers, columns]`` row ids, the share of lookups whose row is in
    ``held[layer]``, and the share of each step's distinct rows (per table) that are."""
    hits = looked = distinct_hits = distinct = 0
    for layer, (rows, n) in enumerate(zip(held, table_rows, strict=True)):
        inside = np.zeros(n, dtype=bool)
        inside[rows] = True
        ids = measured[:, layer].reshape(steps, -1)
        hits += int(inside[ids].sum())
        looked += ids.size
        for step in range(steps):
            u = np.unique(ids[step])
            distinct_hits += int(inside[u].sum())
            distinct += u.size
    return hits / looked, distinct_hits / distinct


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    trace = np.fromfile(args.trace, dtype="<u4").astype(np.int64)
    cmap = np.load(args.compress, allow_pickle=False)
    hasher = NgramHasher(v41_layout(args.engram_vocab, cmap), cmap)
    table_rows = list(hasher.table_rows)
    row_bytes = V41_ROWS.row_bytes
    nbytes = sum(table_rows) * row_bytes
    budget = parse_size(args.gpu_budget) if args.gpu_budget else nbytes // 4
    tier_rows = [vram_tier_rows(budget * n // sum(table_rows), row_bytes) for n in table_rows]

    batches = [int(b) for b in args.decode_batches.split(",") if b]
    decode = [decode_phase(trace, b, args.decode_steps, args.decode_warmup) for b in batches]
    prefill = prefill_phase(trace, args.prefill_chunk, args.prefill_chunks, args.prefill_warmup)
    held_out = held_out_positions(trace.size, [*decode, prefill])
    # The timed steps' row ids: [steps * B, layers, columns] per decode batch.
    measured = {}
    for phase in decode:
        timed = phase.positions[phase.warmup :].reshape(-1)
        measured[phase.batch] = position_row_ids(trace, timed, hasher)

    print(f"trace {args.trace}: {trace.size:,} tokens, {held_out.size:,} of them read by no run")
    print(
        f"tables: --engram-vocab {args.engram_vocab:,}: {table_rows[0]:,} + {table_rows[1]:,} "
        f"rows of {row_bytes} B ({nbytes / 1e9:.2f} GB)"
    )
    print(
        f"VRAM tier under a {budget / 1e9:.2f} GB budget: {tier_rows[0]:,} + {tier_rows[1]:,} "
        f"rows ({tier_rows[0] / table_rows[0]:.1%} of each table)"
    )
    print(
        f"decode: batches {', '.join(map(str, batches))}, {args.decode_steps} timed steps after "
        f"{args.decode_warmup} warm-up steps, 24 lookups per token and table"
    )
    print()
    head = f"{'warm tokens':>12}  {'K':>10}  {'rows held / table':>17}" + "".join(
        f"  {f'decode {b}':>11}  {'distinct':>8}" for b in batches
    )
    print(head)
    print("-" * len(head))
    asked = [held_out.size if w == "all" else int(w) for w in args.warm_tokens.split(",") if w]
    sizes = sorted({min(size, held_out.size) for size in asked})
    fractions = [float(f) for f in args.fractions.split(",") if f]
    for size in sizes:
        positions = warm_positions(held_out, size)
        rows, _ = rows_by_frequency(position_row_ids(trace, positions, hasher))
        choices = [(f"{f:.0%} rows", [int(f * n) for n in table_rows]) for f in fractions]
        choices.append(("tier", tier_rows))
        choices.append(("any", [r.size for r in rows]))
        for label, ks in choices:
            held = [r[:k] for r, k in zip(rows, ks, strict=True)]
            mean_held = sum(h.size for h in held) // len(held)
            cells = ""
            for b in batches:
                per_lookup, per_distinct = hit_rates(
                    measured[b], held, table_rows, args.decode_steps
                )
                cells += f"  {per_lookup:>11.1%}  {per_distinct:>8.1%}"
            print(f"{positions.size:>12,}  {label:>10}  {mean_held:>17,}{cells}")
    print(f"\n({time.perf_counter() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
