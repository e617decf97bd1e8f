#!/usr/bin/env python3
"""The tiered gather kernel alone on the GPU (BENCHMARKS.md 10l): device time of one decode step's
layer of rows (``--rows``, comma-separated; 1,536 and 6,144 are a layer of decode 64 and 256)
through :func:`tiered_gather_dequantize` (one kernel, split in two: ``split``, and fetched: the
misses read ahead by :func:`fetch_misses`' two kernels, the rest from their slots in VRAM by
:func:`gather_fetched_rows` on one program per block, each part alone and both) against the
plain :func:`gather_dequantize` that arm (b) runs over a table in VRAM and arm (c) over pinned host
memory, nothing else on the device: the launches replayed as a CUDA graph (as the backend replays
its gathers), and eager (which measures the host's launch work instead). The VRAM tier is built in
this process as the server lays it out (slot arena, the active hash index of row id -> slot by
splitmix64 and linear probing, a tag per slot, the control word), over ``--hot`` rows of a
``--table-rows`` table; the ids are the tier's rows (all hits) or a ``--miss-share`` of them drawn
outside it, read over PCIe from page-locked memory; the cases "fresh ids" give each launch of a
graph ids of its own (the others replay one set, whose rows then sit in L2). Also prints each
compiled kernel's registers and spills per thread. GPU only.

    python benches/e2e/tiered_kernel_cost.py --rows 1536,6144
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "client" / "python"))
from engram_store.torch import V41_ROWS, cuda_view, gather_dequantize, tiered  # noqa: E402
from engram_store.torch.tiered import (  # noqa: E402
    FetchScratch,
    TieredRows,
    fetch_misses,
    gather_fetched_rows,
    tiered_gather_dequantize,
)

if tiered.triton is not None:
    import triton
    import triton.language as tl

    from engram_store.torch.rows import dequantize_block, programs_of

    @triton.jit
    def _plain_by_block_kernel(
        src, ids, ids_token_stride, out, n_rows, n_blocks, heads, out_head_rows, out_token_rows,
        ROW_BYTES: tl.constexpr, DIM: tl.constexpr, BLOCK: tl.constexpr,
        BLOCK_ROWS: tl.constexpr,
    ):  # fmt: skip
        """Arms (b) and (c)'s plain gather with the tiered kernels' way of reading a row (by
        scale block, each scale byte once): what the baselines would gain from it."""
        block = tl.program_id(0)
        while block < n_blocks:
            r = (block * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)).to(tl.int64)
            valid, row = tiered._row_ids(ids, r, n_rows, heads, ids_token_stride)
            live = valid & (row >= 0)
            code, scale = tiered._load_packed(src, row, live, ROW_BYTES, DIM, BLOCK, False)
            tiered._store_blocks(out, r, valid, dequantize_block(code.to(tl.int32), scale),
                                 heads, out_token_rows, out_head_rows, DIM)  # fmt: skip
            block += tl.num_programs(0)


def plain_by_block(src: torch.Tensor, ids: torch.Tensor, out: torch.Tensor) -> None:
    """:func:`gather_dequantize` (ids ``[T, heads]``, out ``[T, heads, head_dim]``) through
    :func:`_plain_by_block_kernel`, on the same grid (one program per SM)."""
    fmt, n_rows = V41_ROWS, ids.numel()
    blocks = triton.cdiv(n_rows, 16)
    _plain_by_block_kernel[(min(blocks, programs_of(out.device)),)](
        src, ids, ids.stride(0), out, n_rows, blocks, ids.shape[1],
        out.stride(1) // fmt.head_dim, out.stride(0) // fmt.head_dim, ROW_BYTES=fmt.row_bytes,
        DIM=fmt.head_dim, BLOCK=fmt.block, BLOCK_ROWS=16,
    )  # fmt: skip


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 (wrapping), as the server's index and the kernel place
    ids."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def buckets_for(rows: int) -> int:
    """As ``cache/src/gpu/hot_index.rs``: a power of two, load at most 0.8."""
    return max(32, 1 << (rows + rows // 4 - 1).bit_length())


def build_tier(table: torch.Tensor, hot: np.ndarray, device: torch.device) -> TieredRows:
    """A VRAM tier holding rows ``hot`` of ``table`` (host rows, any device) in slots 0..n-1."""
    buckets = buckets_for(hot.size)
    keys = np.full(2 * buckets, -1, dtype=np.int64)
    slots = np.zeros(2 * buckets, dtype=np.int32)
    mask = np.int64(buckets - 1)
    with np.errstate(over="ignore"):
        at = (mix64(hot.astype(np.uint64)) & np.uint64(mask)).astype(np.int64)
    waiting = np.arange(hot.size)  # slots (= positions in hot) not yet placed, in slot order
    while waiting.size:  # linear probing, a round per step along the probe sequence
        free = keys[at[waiting]] == -1
        # of the rows wanting the same free bucket, the lowest slot takes it
        first = np.unique(at[waiting[free]], return_index=True)[1]
        placed = waiting[free][first]
        keys[at[placed]], slots[at[placed]] = hot[placed], placed
        waiting = np.setdiff1d(waiting, placed, assume_unique=True)
        at[waiting] = (at[waiting] + 1) & mask
    hot_t = torch.from_numpy(hot)
    arena = table[hot_t.to(table.device)].to(device)
    return TieredRows(
        host=table,
        arena=arena,
        keys=torch.from_numpy(keys).to(device),
        slots=torch.from_numpy(slots).to(device),
        tags=hot_t.to(device),
        control=torch.zeros(2, dtype=torch.int32, device=device),
        buckets=buckets,
    )


def device_us(launch, reps: int, runs: int, graph: bool = True) -> float:
    """Median over ``runs`` of the mean device time of ``reps`` back-to-back launches, us. With
    ``graph`` the ``reps`` launches are captured once as a CUDA graph and replayed: eager
    launches from Python measure Triton's host work per launch instead (~35-55 us on the H200
    host, more than the kernels take: session 15's first run of this script)."""
    launch()  # compiles
    torch.cuda.synchronize()
    if graph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        captured = torch.cuda.CUDAGraph()
        with torch.cuda.stream(side):
            captured.capture_begin()
            for _ in range(reps):
                launch()
            captured.capture_end()
        torch.cuda.synchronize()
        run_reps = captured.replay
    else:

        def run_reps() -> None:
            for _ in range(reps):
                launch()

    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run_reps()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / reps)
    return statistics.median(times)


def kernel_registers() -> list[str]:
    """Registers and spills of every compiled variant of the gather kernels (Triton 3's
    caches; empty where this Triton keeps them elsewhere)."""
    out = []
    kernels = (("tiered", "_tiered_kernel"), ("split hits", "_split_hits_kernel"),
               ("split misses", "_split_misses_kernel"), ("misses (fetch list)", "_misses_kernel"),
               ("fetched fill", "_fetched_fill_kernel"),
               ("fetch rows", "_fetch_rows_kernel"))  # fmt: skip
    found = [(name, getattr(tiered, attr, None)) for name, attr in kernels]
    found.append(("plain by block", globals().get("_plain_by_block_kernel")))
    for name, fn in found:
        for caches in getattr(fn, "device_caches", {}).values():
            compiled_kernels = caches[0] if isinstance(caches, tuple) else caches
            for compiled in getattr(compiled_kernels, "values", lambda: [])():
                regs = getattr(compiled, "n_regs", "?")
                spills = getattr(compiled, "n_spills", "?")
                warps = getattr(getattr(compiled, "metadata", None), "num_warps", "?")
                out.append(f"{name}: {regs} registers, {spills} spills, {warps} warps")
    return out


def cycling(gather, id_sets: list[torch.Tensor]):
    """A launch that runs ``gather(ids)`` on the next of ``id_sets`` each call, round and round
    (captured in a graph, each captured launch keeps its own set)."""
    sets = itertools.cycle(id_sets)
    return lambda: gather(next(sets))


def time_rows(
    n: int, args: argparse.Namespace, rng: np.random.Generator, hot: np.ndarray, cold: np.ndarray,
    in_vram: torch.Tensor, over_pcie: torch.Tensor, tier_vram: TieredRows, tier_pcie: TieredRows,
) -> None:  # fmt: skip
    """Prints each path's device time for gathers of ``n`` rows (24 a token)."""
    fmt, heads, device = V41_ROWS, 24, in_vram.device
    hits = rng.choice(hot, size=n)
    mixed = hits.copy()
    k = int(n * args.miss_share)
    mixed[:k] = rng.choice(cold, size=k)
    rng.shuffle(mixed)
    out = torch.empty(n // heads, heads, fmt.head_dim, dtype=torch.bfloat16, device=device)
    hit_ids = torch.from_numpy(hits).view(-1, heads).to(device)
    mixed_ids = torch.from_numpy(mixed).view(-1, heads).to(device)
    cases = [
        ("(b) plain gather, table in VRAM", lambda: gather_dequantize(in_vram, hit_ids, out)),
        ("(c) plain gather, table over PCIe",
         lambda: gather_dequantize(over_pcie, mixed_ids, out)),
        ("(b) plain gather by block, VRAM", lambda: plain_by_block(in_vram, hit_ids, out)),
        ("(c) plain gather by block, PCIe", lambda: plain_by_block(over_pcie, mixed_ids, out)),
    ]  # fmt: skip
    for rows_, warps in ((16, 4), (16, 8), (8, 4), (4, 4), (32, 8), (64, 8)):
        cases.append((
            f"tiered all hits, block {rows_} warps {warps}",
            lambda r=rows_, w=warps: tiered_gather_dequantize(
                tier_vram, hit_ids, out, block_rows=r, num_warps=w),
        ))  # fmt: skip
    share = f"{args.miss_share:.0%}"
    cases.append((
        f"tiered {share} misses in VRAM (no PCIe)",
        lambda: tiered_gather_dequantize(tier_vram, mixed_ids, out),
    ))  # fmt: skip
    cases.append((
        f"tiered {share} misses over PCIe",
        lambda: tiered_gather_dequantize(tier_pcie, mixed_ids, out),
    ))  # fmt: skip
    # On the harness's grids: (c) on half the SMs, (d) on 16 programs (SMs / 8).
    half = max(1, programs_of(device) // 2)
    cases.append((
        f"(c) plain gather over PCIe, {half} programs",
        lambda: gather_dequantize(over_pcie, mixed_ids, out, max_programs=half),
    ))  # fmt: skip
    cases.append((
        f"tiered {share} misses over PCIe, 16 programs",
        lambda: tiered_gather_dequantize(tier_pcie, mixed_ids, out, max_programs=16),
    ))  # fmt: skip
    split = (
        torch.empty(n, dtype=torch.int32, device=device),
        torch.zeros(1, dtype=torch.int32, device=device),
    )
    cases.append((
        "split, all hits",
        lambda: tiered_gather_dequantize(tier_vram, hit_ids, out, split=split),
    ))  # fmt: skip
    cases.append((
        f"split, {share} misses over PCIe",
        lambda: tiered_gather_dequantize(tier_pcie, mixed_ids, out, split=split),
    ))  # fmt: skip
    # Fresh ids each launch: the cases above replay one set of ids, whose rows and index
    # buckets sit in L2 after the first launch; a decode step reads new rows each time. Here
    # each of a graph's launches takes its own set (args.reps sets; 50 x 6,144 rows is 81 MB of
    # rows, more than the H200's 50 MB L2), as the harness's steps do.
    fresh_hits, fresh_mixed = [], []
    for _ in range(max(1, args.reps)):
        h = rng.choice(hot, size=n)
        m = h.copy()
        m[:k] = rng.choice(cold, size=k)
        rng.shuffle(m)
        fresh_hits.append(torch.from_numpy(h).view(-1, heads).to(device))
        fresh_mixed.append(torch.from_numpy(m).view(-1, heads).to(device))
    cases += [
        ("(b) plain gather, table in VRAM, fresh ids",
         cycling(lambda ids: gather_dequantize(in_vram, ids, out), fresh_hits)),
        ("(c) plain gather over PCIe, fresh ids",
         cycling(lambda ids: gather_dequantize(over_pcie, ids, out), fresh_mixed)),
        ("tiered all hits, fresh ids",
         cycling(lambda ids: tiered_gather_dequantize(tier_vram, ids, out), fresh_hits)),
        (f"tiered {share} misses over PCIe, fresh ids",
         cycling(lambda ids: tiered_gather_dequantize(tier_pcie, ids, out), fresh_mixed)),
    ]  # fmt: skip
    staged = fetch_misses(tier_pcie, mixed_ids)  # what the fill alone reads
    scratch = FetchScratch.allocate(n, fmt, device)  # the backend's, per slot and layer
    torch.cuda.synchronize()

    def fetched(ids: torch.Tensor) -> None:
        rows, index = fetch_misses(tier_pcie, ids, scratch=scratch,
                                   max_programs=args.fetch_programs)  # fmt: skip
        gather_fetched_rows(tier_pcie, ids, out, rows, index)

    cases += [
        (f"fetch ahead, {share} misses over PCIe",
         lambda: fetch_misses(tier_pcie, mixed_ids, scratch=scratch,
                              max_programs=args.fetch_programs)),
        (f"fetched fill, {share} misses staged",
         lambda: gather_fetched_rows(tier_pcie, mixed_ids, out, *staged)),
        ("fetched, both parts, all hits", lambda: fetched(hit_ids)),
        (f"fetched, both parts, {share} misses", lambda: fetched(mixed_ids)),
    ]  # fmt: skip
    for name, launch in cases:
        graphed = device_us(launch, args.reps, args.runs)
        eager = device_us(launch, args.reps, args.runs, graph=False)
        print(f"{n:6d} {name:54s} {graphed:8.1f} {eager:8.1f}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="1536,6144", help="rows per gather, comma-separated")
    p.add_argument(
        "--table-rows",
        type=int,
        default=24_003_916,
        help="rows of the table (default: one of the harness's, 6.3 GB)",
    )
    p.add_argument(
        "--hot",
        type=int,
        default=4_887_590,
        help="rows in the VRAM tier (default: half the 9,775,179 of the harness's two tables)",
    )
    p.add_argument("--miss-share", type=float, default=0.3, help="rows outside the tier")
    p.add_argument(
        "--fetch-programs",
        type=int,
        default=16,
        help="the grid cap of the fetched path's PCIe reads (the harness's default: SMs / 8)",
    )
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args()
    if not torch.cuda.is_available() or tiered.triton is None:
        print("tiered_kernel_cost.py needs a CUDA device and Triton", file=sys.stderr)
        return 2
    device = torch.device("cuda", 0)
    rng = np.random.default_rng(7)
    fmt = V41_ROWS
    shape = (args.table_rows, fmt.row_bytes)
    in_vram = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    pinned = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
    pinned.copy_(in_vram)
    over_pcie = cuda_view(pinned)
    hot = rng.choice(args.table_rows, size=args.hot, replace=False).astype(np.int64)
    hot_set = np.zeros(args.table_rows, dtype=bool)
    hot_set[hot] = True
    cold = np.flatnonzero(~hot_set)
    tier_vram = build_tier(in_vram, hot, device)  # misses read from VRAM: the kernel alone
    tier_pcie = dataclasses.replace(tier_vram, host=over_pcie)
    print(f"table {args.table_rows:,} rows x {fmt.row_bytes} B; tier {args.hot:,} rows in "
          f"{tier_vram.buckets:,} buckets (load {args.hot / tier_vram.buckets:.2f}); "
          f"{torch.cuda.get_device_name(device)}")  # fmt: skip
    print(f"{'rows':>6} {'path':54s} {'graph us':>8} {'eager us':>8}")
    for n in [int(x) for x in args.rows.split(",")]:
        time_rows(n, args, rng, hot, cold, in_vram, over_pcie, tier_vram, tier_pcie)
    for line in kernel_registers():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
