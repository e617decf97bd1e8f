"""Engram rows as DeepSeek-V4.1 packs them, and their dequantization to bf16 on any device.

A row is ``head_dim`` fp8 e4m3 values followed by one ue8m0 scale byte per ``block`` values (V4.1:
256 + 8 = 264 bytes), exactly as the checkpoint and the store hold it. Value ``i`` dequantizes to
``f32(code_i) * 2**(scale[i // block] - 127)``, rounded to bf16, as vLLM's kernels do: the scale is
the f32 whose exponent field is the scale byte, so byte 0 gives 0 and byte 255 gives inf.

Two implementations give the same bits:

- :func:`dequantize` / :func:`gather_dequantize` with torch ops, on any device (the CPU path);
- on CUDA, one Triton kernel that gathers rows by id and dequantizes them in one pass, from a
  table in VRAM or in pinned host memory read over UVA (:func:`cuda_view`; vLLM's CPU-offload
  path), or from a packed buffer of rows a store wrote (no ids). An id of -1 gives a zero row.

The kernel is used for CUDA tensors when Triton is importable; ``tests/test_torch_rows.py`` runs
it in Triton's interpreter on the CPU against the torch path.
"""

from __future__ import annotations

import dataclasses

import torch

__all__ = ["V41_ROWS", "RowFormat", "cuda_view", "dequantize", "gather_dequantize"]


@dataclasses.dataclass(frozen=True)
class RowFormat:
    """fp8 e4m3 values with one ue8m0 scale byte per ``block`` values, scales after the values."""

    head_dim: int = 256
    block: int = 32

    @property
    def scales(self) -> int:
        """Scale bytes per row."""
        return self.head_dim // self.block

    @property
    def row_bytes(self) -> int:
        """Bytes per packed row."""
        return self.head_dim + self.scales


#: DeepSeek-V4.1's Engram rows: 256 fp8 values and 8 scale bytes (264 B).
V41_ROWS = RowFormat()

# A row block of the Triton kernel: 16 rows of 256 values keeps the registers of one program small.
_BLOCK_ROWS = 16


def _check_packed(packed: torch.Tensor, fmt: RowFormat) -> None:
    if packed.dtype != torch.uint8 or packed.shape[-1] != fmt.row_bytes:
        raise ValueError(
            f"packed rows must be uint8 [..., {fmt.row_bytes}], got {packed.dtype} "
            f"{tuple(packed.shape)}"
        )


def _dequantize_torch(packed: torch.Tensor, fmt: RowFormat) -> torch.Tensor:
    """``packed [..., row_bytes]`` -> bf16 ``[..., head_dim]`` with torch ops."""
    values = packed[..., : fmt.head_dim].view(torch.float8_e4m3fn).to(torch.float32)
    scales = (packed[..., fmt.head_dim :].to(torch.int32) << 23).view(torch.float32)
    blocks = values.unflatten(-1, (fmt.scales, fmt.block)) * scales.unsqueeze(-1)
    return blocks.flatten(-2).to(torch.bfloat16)


def dequantize(
    packed: torch.Tensor, out: torch.Tensor | None = None, fmt: RowFormat = V41_ROWS
) -> torch.Tensor:
    """Packed rows ``[..., row_bytes]`` (uint8) -> bf16 ``[..., head_dim]``, into ``out`` if given
    (same leading shape; may be a strided view, e.g. the first heads of a padded buffer)."""
    _check_packed(packed, fmt)
    shape = (*packed.shape[:-1], fmt.head_dim)
    if out is None:
        out = torch.empty(shape, dtype=torch.bfloat16, device=packed.device)
    elif tuple(out.shape) != shape or out.dtype != torch.bfloat16:
        raise ValueError(f"out must be bf16 {shape}, got {out.dtype} {tuple(out.shape)}")
    if _use_triton(packed) and packed.dim() == 3 and packed.is_contiguous() and out.stride(2) == 1:
        _launch(packed, None, out, packed.shape[1], fmt, None)
    else:
        out.copy_(_dequantize_torch(packed, fmt))
    return out


def gather_dequantize(
    table: torch.Tensor,
    ids: torch.Tensor,
    out: torch.Tensor,
    fmt: RowFormat = V41_ROWS,
    *,
    max_programs: int | None = None,
) -> torch.Tensor:
    """``out[t, h] = dequantize(table[ids[t, h]])`` for ``ids [T, heads]`` (int64, -1: a zero
    row) and ``out`` bf16 ``[T, out_heads, head_dim]`` with ``out_heads >= heads`` (columns past
    ``heads`` are left as they are: padding of a tensor-parallel rank's head range).

    ``table`` is ``[rows, row_bytes]`` uint8: on the CPU, in VRAM, or a :func:`cuda_view` of pinned
    host memory, which the kernel reads over PCIe. ``max_programs`` caps the kernel's grid (a
    lookup running beside the model on a side stream leaves the other SMs to it, as vLLM does).
    """
    _check_packed(table, fmt)
    if ids.dim() != 2 or out.dim() != 3 or out.shape[0] != ids.shape[0]:
        raise ValueError(
            f"ids must be [T, heads] and out [T, out_heads, head_dim]; got "
            f"{tuple(ids.shape)} and {tuple(out.shape)}"
        )
    if out.shape[1] < ids.shape[1] or out.shape[2] != fmt.head_dim or not out.is_contiguous():
        raise ValueError(
            f"out {tuple(out.shape)} cannot hold {ids.shape[1]} heads of "
            f"{fmt.head_dim} values contiguously"
        )
    if _use_triton(out) and ids.stride(1) == 1:
        _launch(table, ids, out, ids.shape[1], fmt, max_programs)
        return out
    dead = ids < 0
    rows = _dequantize_torch(table[ids.clamp(min=0)], fmt)
    out[:, : ids.shape[1]] = rows.masked_fill_(dead.unsqueeze(-1), 0)
    return out


class _CudaArray:
    """The ``__cuda_array_interface__`` of device-addressable memory (bytes by default), for
    :func:`cuda_view` and views of memory opened over CUDA IPC."""

    def __init__(self, pointer: int, shape: tuple[int, ...], typestr: str = "|u1"):
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": typestr,
            "data": (pointer, False),
            "version": 3,
        }


def cuda_view(pinned: torch.Tensor) -> torch.Tensor:
    """A CUDA uint8 tensor over the same memory as ``pinned``: page-locked host memory
    (``pin_memory=True``, or registered with ``cudaHostRegister``), which UVA maps into the
    device's address space, so kernels reading the view read host memory over PCIe.

    The view does not own the memory: keep ``pinned`` alive (and registered) while it is used.
    torch refuses memory that CUDA does not know as page-locked.
    """
    if pinned.device.type != "cpu" or pinned.dtype != torch.uint8 or not pinned.is_contiguous():
        raise ValueError("cuda_view needs a contiguous uint8 CPU tensor in page-locked memory")
    return torch.as_tensor(_CudaArray(pinned.data_ptr(), tuple(pinned.shape)), device="cuda")


# --- the Triton kernel ---------------------------------------------------------------------------

try:
    import triton
    import triton.language as tl
except ImportError:  # the torch path serves every device
    triton = None

_SM_COUNT: dict[int, int] = {}


def programs_of(device: torch.device) -> int:
    """A gather kernel's default grid on ``device``: one program per SM (cached), 64 on the CPU
    (Triton's interpreter)."""
    if device.type != "cuda":
        return 64
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNT[index]


def _use_triton(t: torch.Tensor) -> bool:
    return triton is not None and t.is_cuda


def _launch(
    src: torch.Tensor,
    ids: torch.Tensor | None,
    out: torch.Tensor,
    heads: int,
    fmt: RowFormat,
    max_programs: int | None,
) -> None:
    """Runs the kernel over ``ids.numel()`` rows (or every row of ``src`` when ``ids`` is None)."""
    n_rows = ids.numel() if ids is not None else src.numel() // fmt.row_bytes
    if n_rows == 0:
        return
    if max_programs is None:
        max_programs = programs_of(out.device)
    blocks = triton.cdiv(n_rows, _BLOCK_ROWS)
    programs = max(1, min(blocks, max_programs))
    _gather_dequantize_kernel[(programs,)](
        src,
        ids if ids is not None else src,
        ids.stride(0) if ids is not None else 0,
        out,
        n_rows,
        blocks,
        heads,
        out.stride(1) // fmt.head_dim if out.dim() == 3 else heads,
        out.stride(0) // fmt.head_dim if out.dim() == 3 else heads,
        HAS_IDS=ids is not None,
        ROW_BYTES=fmt.row_bytes,
        DIM=fmt.head_dim,
        BLOCK=fmt.block,
        BLOCK_ROWS=_BLOCK_ROWS,
    )


if triton is not None:

    @triton.jit
    def dequantize_block(code, scale):
        """f32 values of packed fp8 rows: ``code`` (int32 bytes of the values) times the f32
        whose exponent field is ``scale`` (int bytes of each value's block scale), as vLLM
        dequantizes them."""
        # e4m3fn by its bits: exponent 0 is subnormal (m * 2^-9), 0x7f is NaN, the rest
        # normal, rebuilt as the f32 with exponent e - 7 + 127 and the mantissa's 3 bits;
        # the sign bit is set on the bits, so -0 stays -0.
        magnitude = code & 0x7F
        exponent = magnitude >> 3
        mantissa = magnitude & 0x7
        normal = (((exponent + 120) << 23) | (mantissa << 20)).to(tl.float32, bitcast=True)
        value = tl.where(exponent == 0, mantissa.to(tl.float32) * 0.001953125, normal)
        value = tl.where(magnitude == 0x7F, float("nan"), value)
        sign = (code & 0x80) << 24
        value = (value.to(tl.int32, bitcast=True) | sign).to(tl.float32, bitcast=True)
        factor = (scale.to(tl.int32) << 23).to(tl.float32, bitcast=True)
        return value * factor

    @triton.jit
    def store_rows(out, r, valid, value, heads, out_token_rows, out_head_rows, DIM: tl.constexpr):
        """bf16 ``value`` ``[rows, DIM]`` to output rows ``r`` (token ``r // heads``, head
        ``r % heads``) of ``out``, whose tokens and heads are ``out_token_rows`` and
        ``out_head_rows`` rows of ``DIM`` apart; rows not ``valid`` are not written."""
        cols = tl.arange(0, DIM)
        dst = (r // heads) * out_token_rows + (r % heads) * out_head_rows
        tl.store(
            out + dst[:, None] * DIM + cols[None, :], value.to(tl.bfloat16), mask=valid[:, None]
        )

    @triton.jit
    def _gather_dequantize_kernel(
        src,
        ids,
        ids_token_stride,
        out,
        n_rows,
        n_blocks,
        heads,
        out_head_rows,
        out_token_rows,
        HAS_IDS: tl.constexpr,
        ROW_BYTES: tl.constexpr,
        DIM: tl.constexpr,
        BLOCK: tl.constexpr,
        BLOCK_ROWS: tl.constexpr,
    ):
        """Row ``r`` (token ``r // heads``, head ``r % heads``) of the output from source row
        ``ids[token, head]`` (or ``r``); blocks of rows grid-strided, so a small grid still covers
        every row."""
        cols = tl.arange(0, DIM)
        block = tl.program_id(0)
        while block < n_blocks:
            r = (block * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)).to(tl.int64)
            valid = r < n_rows
            if HAS_IDS:
                at = (r // heads) * ids_token_stride + r % heads
                row = tl.load(ids + at, mask=valid, other=-1).to(tl.int64)
            else:
                row = r
            live = valid & (row >= 0)
            base = src + tl.where(live, row, 0)[:, None] * ROW_BYTES
            code = tl.load(base + cols[None, :], mask=live[:, None], other=0).to(tl.int32)
            scale = tl.load(base + DIM + (cols // BLOCK)[None, :], mask=live[:, None], other=0)
            store_rows(out, r, valid, dequantize_block(code, scale), heads, out_token_rows,
                       out_head_rows, DIM)  # fmt: skip
            block += tl.num_programs(0)
