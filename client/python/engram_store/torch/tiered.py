"""The tiered gather: one Triton kernel that reads each row of a lookup from a VRAM tier laid out as
engram-store shares it (a slot arena, two hash indexes of row id -> slot, the active one named by a
control word, a tag per slot) when the tier holds it, else from host memory over UVA (or from rows
already copied up), and dequantizes it to bf16; and the kernel that lists the rows such a tier
lacks. :mod:`engram_store.torch.mapped` maps what the server shares and drives these.

Per row the kernel probes the active index; a row found whose slot tag matches its id before and
after the copy comes from VRAM, any other from host memory over PCIe (or its staged copy); then
it dequantizes as :func:`engram_store.torch.rows.gather_dequantize` does. A row id past the
table's end gets a zero row and is reported in ``errors``; ``hits`` reports which rows came from
VRAM.
"""

from __future__ import annotations

import dataclasses

import torch

from engram_store.torch.rows import V41_ROWS, RowFormat, gather_dequantize, programs_of, triton

__all__ = [
    "FetchScratch",
    "TieredRows",
    "fetch_misses",
    "gather_fetched_rows",
    "tiered_gather_dequantize",
    "vram_misses",
]

if triton is not None:
    import triton.language as tl

    from engram_store.torch.rows import dequantize_block

# Rows per program step and index buckets probed at once per row.
DEFAULT_BLOCK_ROWS = 16
_PROBE = 8
#: Rows per program of :func:`vram_misses` (a probe and no copy: short programs).
_MISS_BLOCK_ROWS = 64

#: A grid cap no gather reaches: one program per block of rows.
UNCAPPED = 1 << 30


@dataclasses.dataclass
class TieredRows:
    """Where a table's rows are: ``host`` ``[rows, row_bytes]`` uint8 (every row; a CUDA view of
    page-locked host memory, or any tensor the kernel can read), and optionally a VRAM tier:
    ``arena`` ``[capacity, row_bytes]`` uint8, ``keys`` ``[2 * buckets]`` int64 (-1: empty),
    ``slots`` ``[2 * buckets]`` int32, ``tags`` ``[capacity]`` int64 and ``control`` int32 (word
    0: the active index). ``errors`` (int64 ``[1]``, optional): where a tiered gather writes a
    row id past the end of ``host`` it was given (such a position gets a zero row)."""

    host: torch.Tensor
    arena: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    slots: torch.Tensor | None = None
    tags: torch.Tensor | None = None
    control: torch.Tensor | None = None
    buckets: int = 0
    errors: torch.Tensor | None = None

    @property
    def capacity(self) -> int:
        """Slots of the VRAM tier (0: none)."""
        return 0 if self.arena is None else self.arena.shape[0]


def check_kernel_shape(block_rows: int, num_warps: int) -> None:
    """ValueError naming a gather kernel shape Triton cannot launch."""
    if not isinstance(block_rows, int) or block_rows < 1 or block_rows & (block_rows - 1):
        raise ValueError(f"block_rows must be a power of two, got {block_rows!r}")
    if num_warps not in (1, 2, 4, 8, 16):
        raise ValueError(f"num_warps must be 1, 2, 4, 8 or 16, got {num_warps!r}")


def tiered_gather_dequantize(
    src: TieredRows,
    ids: torch.Tensor,
    out: torch.Tensor,
    fmt: RowFormat = V41_ROWS,
    *,
    max_programs: int | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    num_warps: int = 4,
    staged: torch.Tensor | None = None,
    stage_index: torch.Tensor | None = None,
    hits: torch.Tensor | None = None,
    split: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``out[t, h] = dequantize(row ids[t, h])`` (ids ``[T, heads]`` int64, -1: a zero row; out
    bf16 ``[T, out_heads, head_dim]``), each row from ``src``'s VRAM tier if it holds it, else
    from ``src.host``. Queued on the current stream; without a VRAM tier, or without Triton, it
    is :func:`gather_dequantize` over ``src.host``. ``block_rows`` (a power of two) rows go
    through a program's probe and copy at once, ``num_warps`` warps per program: more of either
    puts more loads in flight per program (the probe is a chain of dependent loads).

    ``staged`` ``[S, row_bytes]`` uint8 and ``stage_index`` int32 ``[T * heads]`` (both on the
    device): rows already copied up from host memory (by :func:`vram_misses`' list): a row the
    VRAM tier does not hold whose ``stage_index[t * heads + h]`` is ``k >= 0`` is read from
    ``staged[k]`` instead of host memory over PCIe (which the others still are: a row the tier
    dropped since).

    ``hits`` (uint8, at least ``T * heads`` entries, on the device or a :func:`cuda_view` of
    page-locked host memory): ``hits[t * heads + h]`` is set to 1 where that row came from the
    VRAM tier, else 0 (needs a VRAM tier and Triton).

    ``split`` (``miss_list`` int32 of at least ``T * heads`` entries and ``miss_count`` int32,
    both on the device; scratch, overwritten): the gather runs as two kernels, the first taking
    every row the VRAM tier holds and listing the others' positions, the second reading those
    from host memory, so that only blocks of misses wait on PCIe reads (in the one kernel a block
    of 16 rows with any miss in it waits for it: nearly every block at a third of misses). Not
    with ``staged`` nor ``hits``."""
    if hits is not None and (hits.dtype != torch.uint8 or hits.numel() < ids.numel()):
        raise ValueError(f"hits must be uint8 of at least {ids.numel()} entries")
    if src.arena is None or triton is None:
        if hits is not None:
            raise ValueError("hits needs a VRAM tier and Triton")
        return gather_dequantize(src.host, ids, out, fmt, max_programs=max_programs)
    if (staged is None) != (stage_index is None):
        raise ValueError("give staged and stage_index together")
    if stage_index is not None and (
        stage_index.numel() < ids.numel() or stage_index.dtype != torch.int32
    ):
        raise ValueError(f"stage_index must be int32 of at least {ids.numel()} entries")
    if ids.dim() != 2 or ids.stride(1) != 1 or out.dim() != 3 or out.shape[0] != ids.shape[0]:
        raise ValueError(
            f"ids must be [T, heads] with unit column stride and out [T, out_heads, head_dim]; "
            f"got {tuple(ids.shape)} and {tuple(out.shape)}"
        )
    if out.shape[1] < ids.shape[1] or out.shape[2] != fmt.head_dim or out.stride(2) != 1:
        raise ValueError(f"out {tuple(out.shape)} cannot hold {ids.shape[1]} heads")
    n_rows = ids.numel()
    if n_rows == 0:
        return out
    if max_programs is None:
        max_programs = programs_of(out.device)
    check_kernel_shape(block_rows, num_warps)
    blocks = triton.cdiv(n_rows, block_rows)
    grid = (max(1, min(blocks, max_programs)),)
    if split is not None:
        _split_gather(src, ids, out, fmt, split, grid, blocks, block_rows, num_warps,
                      has_staged=staged is not None, has_hits=hits is not None)  # fmt: skip
        return out
    _tiered_kernel[grid](
        src.host,
        src.arena,
        src.keys,
        src.slots,
        src.tags,
        src.control,
        ids,
        ids.stride(0),
        out,
        n_rows,
        blocks,
        ids.shape[1],
        out.stride(1) // fmt.head_dim,
        out.stride(0) // fmt.head_dim,
        src.buckets,
        src.capacity,
        src.arena if staged is None else staged,
        ids if stage_index is None else stage_index,
        src.host.shape[0],
        ids if src.errors is None else src.errors,
        ids if hits is None else hits,
        ROW_BYTES=fmt.row_bytes,
        DIM=fmt.head_dim,
        BLOCK=fmt.block,
        BLOCK_ROWS=block_rows,
        PROBE=_PROBE,
        STAGED=staged is not None,
        CHECKED=src.errors is not None,
        REPORT=hits is not None,
        num_warps=num_warps,
    )
    return out


def _split_gather(
    src: TieredRows, ids: torch.Tensor, out: torch.Tensor, fmt: RowFormat,
    split: tuple[torch.Tensor, torch.Tensor], grid: tuple[int], blocks: int, block_rows: int,
    num_warps: int, has_staged: bool, has_hits: bool,
) -> None:  # fmt: skip
    """:func:`tiered_gather_dequantize` with ``split``: the count zeroed, then both kernels, on
    the current stream (capturable as one graph). The first runs one short program per block
    (it never waits on PCIe, so it may take every SM for the moment its chain of VRAM loads
    lasts, as arm (b)'s gather does); the second, whose programs wait on PCIe reads, on
    ``grid`` (the caller's cap)."""
    if has_staged or has_hits:
        raise ValueError("split does not go with staged or hits")
    miss_list, miss_count = split
    n_rows = ids.numel()
    if miss_list.dtype != torch.int32 or miss_list.numel() < n_rows:
        raise ValueError(f"split's miss_list must be int32 of at least {n_rows} entries")
    if miss_count.dtype != torch.int32 or miss_count.numel() < 1:
        raise ValueError("split's miss_count must be an int32 tensor")
    out_head_rows, out_token_rows = out.stride(1) // fmt.head_dim, out.stride(0) // fmt.head_dim
    miss_count.zero_()
    _split_hits_kernel[(max(1, blocks),)](
        src.arena, src.keys, src.slots, src.tags, src.control, ids, ids.stride(0), out, n_rows,
        blocks, ids.shape[1], out_head_rows, out_token_rows, src.buckets, src.capacity,
        src.host.shape[0], ids if src.errors is None else src.errors, miss_list, miss_count,
        ROW_BYTES=fmt.row_bytes, DIM=fmt.head_dim, BLOCK=fmt.block, BLOCK_ROWS=block_rows,
        PROBE=_PROBE, CHECKED=src.errors is not None, num_warps=num_warps,
    )  # fmt: skip
    _split_misses_kernel[grid](
        src.host, ids, ids.stride(0), out, ids.shape[1], out_head_rows, out_token_rows,
        miss_list, miss_count, ROW_BYTES=fmt.row_bytes, DIM=fmt.head_dim, BLOCK=fmt.block,
        BLOCK_ROWS=block_rows, num_warps=num_warps,
    )  # fmt: skip


def vram_misses(src: TieredRows, ids: torch.Tensor, misses: torch.Tensor) -> torch.Tensor:
    """``misses[t * heads + h]`` = row ``ids[t, h]`` where it is live (>= 0 and below
    ``src.host``'s rows) and ``src``'s VRAM tier does not hold it now, else -1 (int64, at least
    ``T * heads`` entries): the rows a gather would read over PCIe, to be copied up in bulk
    first (``tiered_gather_dequantize``'s ``staged``). Queued on the current stream; needs a
    VRAM tier and Triton."""
    if src.arena is None or triton is None:
        raise ValueError("vram_misses needs a VRAM tier and Triton")
    if ids.dim() != 2 or ids.stride(1) != 1:
        raise ValueError(f"ids must be [T, heads] with unit column stride, got {tuple(ids.shape)}")
    n_rows = ids.numel()
    if misses.dtype != torch.int64 or misses.numel() < n_rows:
        raise ValueError(f"misses must be int64 of at least {n_rows} entries")
    if n_rows:
        _misses_kernel[(triton.cdiv(n_rows, _MISS_BLOCK_ROWS),)](
            src.keys, src.slots, src.tags, src.control, ids, ids.stride(0), misses, misses,
            misses, n_rows, ids.shape[1], src.buckets, src.capacity, src.host.shape[0],
            BLOCK_ROWS=_MISS_BLOCK_ROWS, PROBE=_PROBE, LIST=False,
        )  # fmt: skip
    return misses


@dataclasses.dataclass
class FetchScratch:
    """Where :func:`fetch_misses` lists and copies up the misses of a gather of up to ``rows``
    rows: ``staged`` ``[rows, row_bytes]`` uint8, ``stage_index`` int32 ``[rows]``, ``listed``
    int64 ``[rows]`` (the missing rows' ids) and ``count`` int32 ``[1]``, on one device. Reused
    gather after gather (and by a CUDA graph that captured a gather with it): 12 bytes and a
    packed row per row."""

    staged: torch.Tensor
    stage_index: torch.Tensor
    listed: torch.Tensor
    count: torch.Tensor

    @classmethod
    def allocate(cls, rows: int, fmt: RowFormat, device: torch.device) -> FetchScratch:
        """Scratch for gathers of up to ``rows`` rows (one at least: a kernel argument is never
        an empty allocation), on the current stream."""
        rows = max(1, rows)
        return cls(
            staged=torch.empty(rows, fmt.row_bytes, dtype=torch.uint8, device=device),
            stage_index=torch.empty(rows, dtype=torch.int32, device=device),
            listed=torch.empty(rows, dtype=torch.int64, device=device),
            count=torch.zeros(1, dtype=torch.int32, device=device),
        )

    @property
    def rows(self) -> int:
        """The most rows of a gather this scratch takes."""
        return self.stage_index.numel()


def fetch_misses(
    src: TieredRows,
    ids: torch.Tensor,
    fmt: RowFormat = V41_ROWS,
    *,
    scratch: FetchScratch | None = None,
    max_programs: int | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    num_warps: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of ``ids`` (``[T, heads]`` int64) that ``src``'s VRAM tier does not hold now,
    read from host memory over PCIe into device memory, by two kernels queued on the current
    stream and no host work between them (no wait, no copy through the host): the first, one
    short program per block of rows, probes the tier and lists the live rows it lacks; the
    second, on ``max_programs`` programs (None: one per SM), copies the listed rows' packed bytes
    up. Returns ``(staged, stage_index)`` for :func:`gather_fetched_rows`: ``staged``
    ``[rows, row_bytes]`` uint8 (its first entries the listed rows) and ``stage_index`` int32
    per position (``k >= 0``: row ``k`` of ``staged``; ``-2 - slot``: the tier held it in that
    slot; -1: a dead position or an id past the table's end), ``scratch``'s (of at least ``T *
    heads`` rows; with it nothing is allocated, so the launches can be captured in a CUDA graph)
    or allocated on the current stream. The gather that then reads the rest from VRAM has no
    probe to make and no PCIe read to wait for, unless a row left the tier in between (that one
    it reads over PCIe). Needs a VRAM tier and Triton."""
    if src.arena is None or triton is None:
        raise ValueError("fetch_misses needs a VRAM tier and Triton")
    if ids.dim() != 2 or ids.stride(1) != 1:
        raise ValueError(f"ids must be [T, heads] with unit column stride, got {tuple(ids.shape)}")
    check_kernel_shape(block_rows, num_warps)
    n_rows = ids.numel()
    if scratch is None:
        scratch = FetchScratch.allocate(n_rows, fmt, ids.device)
    elif scratch.rows < n_rows or scratch.staged.shape[1] != fmt.row_bytes:
        raise ValueError(
            f"fetch_misses' scratch takes {scratch.rows} rows of {scratch.staged.shape[1]} bytes, "
            f"not {n_rows} of {fmt.row_bytes}"
        )
    if n_rows == 0:
        return scratch.staged, scratch.stage_index
    scratch.count.zero_()
    blocks = triton.cdiv(n_rows, block_rows)
    _misses_kernel[(blocks,)](
        src.keys, src.slots, src.tags, src.control, ids, ids.stride(0), scratch.listed,
        scratch.count, scratch.stage_index, n_rows, ids.shape[1], src.buckets, src.capacity,
        src.host.shape[0], BLOCK_ROWS=block_rows, PROBE=_PROBE, LIST=True, num_warps=num_warps,
    )  # fmt: skip
    if max_programs is None:
        max_programs = programs_of(ids.device)
    _fetch_rows_kernel[(max(1, min(blocks, max_programs)),)](
        src.host, scratch.listed, scratch.count, scratch.staged, ROW_BYTES=fmt.row_bytes,
        DIM=fmt.head_dim, SCALES=fmt.scales, BLOCK_ROWS=block_rows, num_warps=num_warps,
    )  # fmt: skip
    return scratch.staged, scratch.stage_index


def gather_fetched_rows(
    src: TieredRows,
    ids: torch.Tensor,
    out: torch.Tensor,
    staged: torch.Tensor,
    stage_index: torch.Tensor,
    fmt: RowFormat = V41_ROWS,
    *,
    max_programs: int | None = UNCAPPED,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    num_warps: int = 4,
) -> torch.Tensor:
    """The rest of a gather :func:`fetch_misses` began (``staged`` and ``stage_index`` its
    result for these ``ids``): ``out[t, h] = dequantize(row ids[t, h])`` (out bf16 ``[T,
    out_heads, head_dim]``), each fetched row from ``staged``, each row the tier held then from
    its slot in the arena with no probe (its tag checked before and after the copy; a row that
    has left the slot since, or a retired tier's, from host memory over PCIe), a dead position
    zero, an id past the table's end zero and written to ``src.errors``. Queued on the current
    stream, ``max_programs`` programs (default: one per block of rows, as a gather of tables in
    VRAM runs)."""
    if src.arena is None or triton is None:
        raise ValueError("gather_fetched_rows needs a VRAM tier and Triton")
    if ids.dim() != 2 or ids.stride(1) != 1 or out.dim() != 3 or out.shape[0] != ids.shape[0]:
        raise ValueError(
            f"ids must be [T, heads] with unit column stride and out [T, out_heads, head_dim]; "
            f"got {tuple(ids.shape)} and {tuple(out.shape)}"
        )
    if out.shape[1] < ids.shape[1] or out.shape[2] != fmt.head_dim or out.stride(2) != 1:
        raise ValueError(f"out {tuple(out.shape)} cannot hold {ids.shape[1]} heads")
    n_rows = ids.numel()
    if stage_index.dtype != torch.int32 or stage_index.numel() < n_rows:
        raise ValueError(f"stage_index must be int32 of at least {n_rows} entries")
    if staged.dtype != torch.uint8 or staged.dim() != 2 or staged.shape[1] != fmt.row_bytes:
        raise ValueError(f"staged must be uint8 [rows, {fmt.row_bytes}]")
    if n_rows == 0:
        return out
    check_kernel_shape(block_rows, num_warps)
    blocks = triton.cdiv(n_rows, block_rows)
    if max_programs is None:
        max_programs = programs_of(out.device)
    _fetched_fill_kernel[(max(1, min(blocks, max_programs)),)](
        src.host, src.arena, src.tags, src.control, ids, ids.stride(0), out, n_rows, blocks,
        ids.shape[1], out.stride(1) // fmt.head_dim, out.stride(0) // fmt.head_dim,
        src.capacity, staged, stage_index, src.host.shape[0],
        ids if src.errors is None else src.errors, ROW_BYTES=fmt.row_bytes, DIM=fmt.head_dim,
        BLOCK=fmt.block, BLOCK_ROWS=block_rows, CHECKED=src.errors is not None,
        num_warps=num_warps,
    )  # fmt: skip
    return out


if triton is not None:

    @triton.jit
    def _load_packed(
        src, row, mask, ROW_BYTES: tl.constexpr, DIM: tl.constexpr, BLOCK: tl.constexpr,
        CG: tl.constexpr,
    ):  # fmt: skip
        """Packed rows ``row`` of ``src`` where ``mask``, 0 elsewhere: :func:`_load_packed_at`
        of their addresses."""
        return _load_packed_at(src + tl.where(mask, row, 0) * ROW_BYTES, mask, DIM, BLOCK, CG)

    @triton.jit
    def _load_packed_at(base, mask, DIM: tl.constexpr, BLOCK: tl.constexpr, CG: tl.constexpr):
        """The packed rows at byte addresses ``base`` (one per row) where ``mask``, 0
        elsewhere: their value bytes ``[rows, DIM // BLOCK, BLOCK]`` (by scale block) and their
        scale bytes ``[rows, DIM // BLOCK, 1]`` (with ``CG``, loads that bypass L1: rows another
        process may rewrite). Each scale byte is loaded once, not once per value."""
        blocks = tl.arange(0, DIM // BLOCK)
        within = tl.arange(0, BLOCK)
        at = base[:, None, None]
        values = blocks[None, :, None] * BLOCK + within[None, None, :]
        scales = DIM + blocks[None, :, None]
        m = mask[:, None, None]
        if CG:
            code = tl.load(at + values, mask=m, other=0, cache_modifier=".cg")
            scale = tl.load(at + scales, mask=m, other=0, cache_modifier=".cg")
        else:
            code = tl.load(at + values, mask=m, other=0)
            scale = tl.load(at + scales, mask=m, other=0)
        return code, scale

    @triton.jit
    def _store_blocks(
        out, r, valid, value, heads, out_token_rows, out_head_rows, DIM: tl.constexpr
    ):
        """bf16 ``value`` ``[rows, DIM // BLOCK, BLOCK]`` (as :func:`_load_packed_at` shapes a
        row) to output rows ``r`` (token ``r // heads``, head ``r % heads``) of ``out``, whose
        tokens and heads are ``out_token_rows`` and ``out_head_rows`` rows of ``DIM`` apart; rows
        not ``valid`` are not written."""
        blocks = tl.arange(0, value.shape[1])
        within = tl.arange(0, value.shape[2])
        cols = blocks[None, :, None] * value.shape[2] + within[None, None, :]
        dst = (r // heads) * out_token_rows + (r % heads) * out_head_rows
        tl.store(
            out + dst[:, None, None] * DIM + cols, value.to(tl.bfloat16),
            mask=valid[:, None, None],
        )  # fmt: skip

    @triton.jit
    def _mix64(x):
        """splitmix64's finalizer on uint64, as the server's index places ids."""
        x = x ^ (x >> 30)
        x = x * 0xBF58476D1CE4E5B9
        x = x ^ (x >> 27)
        x = x * 0x94D049BB133111EB
        return x ^ (x >> 31)

    @triton.jit
    def _row_ids(ids, r, n_rows, heads, ids_token_stride):
        """Rows ``r`` (token ``r // heads``, head ``r % heads``) of ``ids``: which are within the
        lookup, and their ids (-1 past its end)."""
        valid = r < n_rows
        at = (r // heads) * ids_token_stride + r % heads
        return valid, tl.load(ids + at, mask=valid, other=-1).to(tl.int64)

    @triton.jit
    def _vram_slots(row, live, keys, slots, tags, control, buckets, capacity, PROBE: tl.constexpr):
        """Per row of ``row`` (``live`` ones only): whether the VRAM tier holds it, by the
        active index (``PROBE`` buckets at a time: a key equal to the id before an empty one
        is found) and the slot's tag read before the copy, and that slot (0 where not)."""
        probe = tl.arange(0, PROBE)
        mask = buckets.to(tl.int64) - 1
        active = tl.load(control, volatile=True).to(tl.int64)
        # A retired tier holds no row: no slot is below a capacity of 0.
        live_capacity = tl.where(tl.load(control + 1, volatile=True) == 0, capacity, 0)
        keys_active = keys + active * buckets
        slots_active = slots + active * buckets
        h = (_mix64(tl.where(live, row, 0).to(tl.uint64)) & mask.to(tl.uint64)).to(tl.int64)
        slot = tl.full(row.shape, -1, tl.int64)
        pending = live
        start = tl.full([], 0, tl.int64)
        while (tl.max(pending.to(tl.int32), axis=0) > 0) & (start <= mask):
            b = (h[:, None] + start + probe[None, :]) & mask
            k = tl.load(keys_active + b, mask=pending[:, None], other=-1)
            found = pending[:, None] & (k == row[:, None])
            empty = pending[:, None] & (k == -1)
            fpos = tl.min(tl.where(found, probe[None, :], PROBE), axis=1)
            epos = tl.min(tl.where(empty, probe[None, :], PROBE), axis=1)
            hit = fpos < epos
            at_slot = (h + start + fpos) & mask
            s = tl.load(slots_active + at_slot, mask=hit, other=-1).to(tl.int64)
            slot = tl.where(hit, s, slot)
            pending = pending & ~(hit | (epos < PROBE))
            start += PROBE
        in_vram = (slot >= 0) & (slot < live_capacity)
        sl = tl.where(in_vram, slot, 0)
        before = tl.load(tags + sl, mask=in_vram, other=-1, volatile=True)
        return in_vram & (before == row), sl

    @triton.jit
    def _arena_rows(
        r, arena, keys, slots, tags, control, ids, ids_token_stride, n_rows, heads, buckets,
        capacity, table_rows, errors, ROW_BYTES: tl.constexpr, DIM: tl.constexpr,
        BLOCK: tl.constexpr, PROBE: tl.constexpr, CHECKED: tl.constexpr,
    ):  # fmt: skip
        """Rows ``r`` of a gather: which are within it (``valid``), their ids, which are live
        (an id in ``[0, table_rows)``; one past the end is written to ``errors`` with
        ``CHECKED``), which the VRAM tier holds (its slot's tag naming the row before and after
        the copy), and those rows' value and scale bytes copied from the arena (0 elsewhere)."""
        valid, row = _row_ids(ids, r, n_rows, heads, ids_token_stride)
        past_end = valid & (row >= table_rows)
        if CHECKED:
            tl.store(errors + r * 0, row, mask=past_end)
        live = valid & (row >= 0) & ~past_end
        in_vram, sl = _vram_slots(row, live, keys, slots, tags, control, buckets, capacity, PROBE)
        code, scale = _load_packed(arena, sl, in_vram, ROW_BYTES, DIM, BLOCK, True)
        after = tl.load(tags + sl, mask=in_vram, other=-1, volatile=True)
        return valid, row, live, in_vram & (after == row), code, scale

    @triton.jit
    def _tiered_kernel(
        host,
        arena,
        keys,
        slots,
        tags,
        control,
        ids,
        ids_token_stride,
        out,
        n_rows,
        n_blocks,
        heads,
        out_head_rows,
        out_token_rows,
        buckets,
        capacity,
        staged,
        stage_index,
        table_rows,
        errors,
        hits,
        ROW_BYTES: tl.constexpr,
        DIM: tl.constexpr,
        BLOCK: tl.constexpr,
        BLOCK_ROWS: tl.constexpr,
        PROBE: tl.constexpr,
        STAGED: tl.constexpr,
        CHECKED: tl.constexpr,
        REPORT: tl.constexpr,
    ):
        """Blocks of ``BLOCK_ROWS`` rows, grid-strided: a row the VRAM tier holds (its slot's
        tag checked again after the copy) from the arena; with ``STAGED``, any other whose
        ``stage_index`` is >= 0 from that row of ``staged`` (device memory); every other live
        row from host memory. A row id at or past ``table_rows`` gets a zero row and, with
        ``CHECKED``, is written to ``errors``. With ``REPORT``, ``hits[r]`` (uint8) says whether
        row ``r`` came from the VRAM tier (1) or not (0)."""
        block = tl.program_id(0)
        while block < n_blocks:
            r = (block * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)).to(tl.int64)
            valid, row, live, in_vram, vcode, vscale = _arena_rows(
                r, arena, keys, slots, tags, control, ids, ids_token_stride, n_rows, heads,
                buckets, capacity, table_rows, errors, ROW_BYTES, DIM, BLOCK, PROBE, CHECKED,
            )  # fmt: skip
            if REPORT:
                tl.store(hits + r, in_vram.to(tl.uint8), mask=valid)
            from_host = live & ~in_vram
            if STAGED:
                k = tl.load(stage_index + r, mask=from_host, other=-1).to(tl.int64)
                from_stage = from_host & (k >= 0)
                from_host = from_host & (k < 0)
                scode, sscale = _load_packed(staged, k, from_stage, ROW_BYTES, DIM, BLOCK, False)
                vcode = tl.where(from_stage[:, None, None], scode, vcode)
                vscale = tl.where(from_stage[:, None, None], sscale, vscale)
                in_vram = in_vram | from_stage
            hcode, hscale = _load_packed(host, row, from_host, ROW_BYTES, DIM, BLOCK, False)
            code = tl.where(in_vram[:, None, None], vcode, hcode).to(tl.int32)
            scale = tl.where(in_vram[:, None, None], vscale, hscale)
            _store_blocks(out, r, valid, dequantize_block(code, scale), heads, out_token_rows,
                          out_head_rows, DIM)  # fmt: skip
            block += tl.num_programs(0)

    @triton.jit
    def _split_hits_kernel(
        arena,
        keys,
        slots,
        tags,
        control,
        ids,
        ids_token_stride,
        out,
        n_rows,
        n_blocks,
        heads,
        out_head_rows,
        out_token_rows,
        buckets,
        capacity,
        table_rows,
        errors,
        miss_list,
        miss_count,
        ROW_BYTES: tl.constexpr,
        DIM: tl.constexpr,
        BLOCK: tl.constexpr,
        BLOCK_ROWS: tl.constexpr,
        PROBE: tl.constexpr,
        CHECKED: tl.constexpr,
    ):
        """A split gather's first kernel: blocks of ``BLOCK_ROWS`` rows, grid-strided; a row the
        VRAM tier holds (its slot's tag checked again after the copy) is copied from the arena
        and written; a dead position or a row id past the table's end gets a zero row (the
        latter written to ``errors`` with ``CHECKED``); every other live row's position is
        appended to ``miss_list`` (``miss_count`` counts them) for :func:`_split_misses_kernel`,
        so no block of this kernel waits on a read over PCIe."""
        block = tl.program_id(0)
        while block < n_blocks:
            r = (block * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)).to(tl.int64)
            valid, row, live, in_vram, code, scale = _arena_rows(
                r, arena, keys, slots, tags, control, ids, ids_token_stride, n_rows, heads,
                buckets, capacity, table_rows, errors, ROW_BYTES, DIM, BLOCK, PROBE, CHECKED,
            )  # fmt: skip
            miss = live & ~in_vram
            at = tl.atomic_add(miss_count + r * 0, 1, mask=miss)
            tl.store(miss_list + at, r.to(tl.int32), mask=miss)
            code = tl.where(in_vram[:, None, None], code, 0).to(tl.int32)
            scale = tl.where(in_vram[:, None, None], scale, 0)
            _store_blocks(out, r, valid & ~miss, dequantize_block(code, scale), heads,
                          out_token_rows, out_head_rows, DIM)  # fmt: skip
            block += tl.num_programs(0)

    @triton.jit
    def _split_misses_kernel(
        host,
        ids,
        ids_token_stride,
        out,
        heads,
        out_head_rows,
        out_token_rows,
        miss_list,
        miss_count,
        ROW_BYTES: tl.constexpr,
        DIM: tl.constexpr,
        BLOCK: tl.constexpr,
        BLOCK_ROWS: tl.constexpr,
    ):
        """A split gather's second kernel: the positions :func:`_split_hits_kernel` listed (the
        first ``miss_count``), ``BLOCK_ROWS`` a block, grid-strided, read from host memory over
        PCIe and written. Programs past the list end at once."""
        count = tl.load(miss_count).to(tl.int64)
        block = tl.program_id(0).to(tl.int64)
        while block * BLOCK_ROWS < count:
            k = block * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
            listed = k < count
            r = tl.load(miss_list + k, mask=listed, other=0).to(tl.int64)
            at = (r // heads) * ids_token_stride + r % heads
            row = tl.load(ids + at, mask=listed, other=0).to(tl.int64)
            code, scale = _load_packed(host, row, listed, ROW_BYTES, DIM, BLOCK, False)
            _store_blocks(out, r, listed, dequantize_block(code.to(tl.int32), scale), heads,
                          out_token_rows, out_head_rows, DIM)  # fmt: skip
            block += tl.num_programs(0)

    @triton.jit
    def _misses_kernel(
        keys,
        slots,
        tags,
        control,
        ids,
        ids_token_stride,
        misses,
        count,
        stage_index,
        n_rows,
        heads,
        buckets,
        capacity,
        table_rows,
        BLOCK_ROWS: tl.constexpr,
        PROBE: tl.constexpr,
        LIST: tl.constexpr,
    ):
        """One block of rows per program, the live rows (an id in ``[0, table_rows)``) the VRAM
        tier does not hold: ``misses[r]`` is row ``r``'s id where it is one, else -1; with
        ``LIST`` (:func:`fetch_misses`) instead each such row gets the next entry ``k`` of
        ``misses`` (its id; ``count`` counts them) and ``stage_index[r] = k``, a row the tier
        holds ``stage_index[r] = -2 - slot``, any other position -1."""
        r = (tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)).to(tl.int64)
        valid, row = _row_ids(ids, r, n_rows, heads, ids_token_stride)
        live = valid & (row >= 0) & (row < table_rows)
        in_vram, sl = _vram_slots(row, live, keys, slots, tags, control, buckets, capacity, PROBE)
        miss = live & ~in_vram
        if LIST:
            at = tl.atomic_add(count + r * 0, 1, mask=miss).to(tl.int64)
            tl.store(misses + at, row, mask=miss)
            where = tl.where(miss, at, tl.where(in_vram, -2 - sl, -1))
            tl.store(stage_index + r, where.to(tl.int32), mask=valid)
        else:
            tl.store(misses + r, tl.where(miss, row, -1), mask=valid)

    @triton.jit
    def _fetch_rows_kernel(
        host,
        listed,
        count,
        staged,
        ROW_BYTES: tl.constexpr,
        DIM: tl.constexpr,
        SCALES: tl.constexpr,
        BLOCK_ROWS: tl.constexpr,
    ):
        """:func:`fetch_misses`' second kernel: ``staged[k]`` = the packed row ``listed[k]`` of
        host memory for each ``k`` below ``count``, ``BLOCK_ROWS`` a block, grid-strided.
        Programs past the list end at once."""
        cols = tl.arange(0, DIM)
        scale_cols = tl.arange(0, SCALES)
        n = tl.load(count).to(tl.int64)
        block = tl.program_id(0).to(tl.int64)
        while block * BLOCK_ROWS < n:
            k = block * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
            on = k < n
            row = tl.load(listed + k, mask=on, other=0)
            hbase = host + row[:, None] * ROW_BYTES
            sbase = staged + k[:, None] * ROW_BYTES
            code = tl.load(hbase + cols[None, :], mask=on[:, None], other=0)
            scale = tl.load(hbase + DIM + scale_cols[None, :], mask=on[:, None], other=0)
            tl.store(sbase + cols[None, :], code, mask=on[:, None])
            tl.store(sbase + DIM + scale_cols[None, :], scale, mask=on[:, None])
            block += tl.num_programs(0)

    @triton.jit
    def _fetched_fill_kernel(
        host,
        arena,
        tags,
        control,
        ids,
        ids_token_stride,
        out,
        n_rows,
        n_blocks,
        heads,
        out_head_rows,
        out_token_rows,
        capacity,
        staged,
        stage_index,
        table_rows,
        errors,
        ROW_BYTES: tl.constexpr,
        DIM: tl.constexpr,
        BLOCK: tl.constexpr,
        BLOCK_ROWS: tl.constexpr,
        CHECKED: tl.constexpr,
    ):
        """:func:`gather_fetched_rows`: blocks of ``BLOCK_ROWS`` rows, grid-strided; per row
        ``stage_index`` says where it is (``k >= 0``: ``staged[k]``; ``-2 - slot``: that slot
        of the arena, if its tag still names the row before and after the copy and the tier is
        not retired, else host memory; -1: nowhere, a zero row). A live row id at or past
        ``table_rows`` is written to ``errors`` with ``CHECKED``."""
        # A retired tier holds no row: no slot is below a capacity of 0.
        live_capacity = tl.where(tl.load(control + 1, volatile=True) == 0, capacity, 0)
        block = tl.program_id(0)
        while block < n_blocks:
            r = (block * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)).to(tl.int64)
            valid, row = _row_ids(ids, r, n_rows, heads, ids_token_stride)
            if CHECKED:
                tl.store(errors + r * 0, row, mask=valid & (row >= table_rows))
            live = valid & (row >= 0) & (row < table_rows)
            where = tl.load(stage_index + r, mask=live, other=-1).to(tl.int64)
            from_stage = live & (where >= 0)
            slot = -2 - where
            held = live & (slot >= 0) & (slot < live_capacity)
            sl = tl.where(held, slot, 0)
            before = tl.load(tags + sl, mask=held, other=-1, volatile=True)
            held = held & (before == row)
            # One load per row from wherever it is (the arena, the fetched copy, or host memory
            # for a row the tier held when fetched but no longer), not three masked loads and
            # a select: fewer registers, more programs on an SM.
            from_host = live & ~from_stage & ~held
            base = tl.where(
                held,
                arena + sl * ROW_BYTES,
                tl.where(
                    from_stage,
                    staged + tl.where(from_stage, where, 0) * ROW_BYTES,
                    host + tl.where(from_host, row, 0) * ROW_BYTES,
                ),
            )
            # Normally one pass; a row whose slot was rewritten during its copy (its tag no
            # longer names it) goes round again, from the host. One load and one store in the
            # loop, so that no second set of registers is held for that rare case.
            todo = valid
            while tl.max(todo.to(tl.int32), axis=0) > 0:
                code, scale = _load_packed_at(base, live & todo, DIM, BLOCK, True)
                after = tl.load(tags + sl, mask=held & todo, other=-1, volatile=True)
                gone = held & todo & (after != row)
                _store_blocks(out, r, todo & ~gone, dequantize_block(code.to(tl.int32), scale),
                              heads, out_token_rows, out_head_rows, DIM)  # fmt: skip
                todo = gone
                held = held & ~gone
                base = tl.where(gone, host + row * ROW_BYTES, base)
            block += tl.num_programs(0)
