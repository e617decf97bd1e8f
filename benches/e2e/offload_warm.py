"""Warming the store arms as hours of this traffic would have: the rows of held-out trace tokens,
most frequent first, hinted into the VRAM tier (each table's share of the budget) until its
refresh settles; arm (e)'s RAM tier given the next most frequent band; and the tiers' counters
read after the runs."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from offload_cli import parse_size
from offload_phases import LOOKBACK, Phase
from offload_tables import Tables
from warm_settle import WarmSettle


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


def with_every_row(warm: WarmRows, table_rows: Sequence[int]) -> WarmRows:
    """``warm`` with, per table, the rows it lacks after its own (in id order, count 0): a warm
    that hints every row of the tables (``--store-warm-every-row``)."""
    rows, counts = [], []
    for seen, count, n in zip(warm.rows, warm.counts, table_rows, strict=True):
        unseen = np.ones(n, dtype=bool)
        unseen[seen] = False
        rest = np.flatnonzero(unseen).astype(seen.dtype)
        rows.append(np.concatenate([seen, rest]))
        counts.append(np.concatenate([count, np.zeros(rest.size, dtype=count.dtype)]))
    return dataclasses.replace(warm, rows=rows, counts=counts)


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


def hint(client, table: str, ids: np.ndarray, deadline: float, chunk_ids: int = HINT_CHUNK) -> int:
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
        if args.store_warm_every_row:
            ctx["warm"] = with_every_row(ctx["warm"], tables.rows)
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
            log(
                f"arm ({arm}): the warm did not settle in {timeout_s:.0f}s (the VRAM tier holds "
                f"{resident:,} of {hinted:,} hinted rows, {entering:,} entering); running anyway"
            )
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
    tiers = {name: {k: t.get(k, 0) for k in ("hits", "misses")} for name, t in stats.tiers.items()}
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
