"""fp8 rows -> bf16, exactly as vLLM dequantizes DeepSeek-V4.1 Engram tables.

A block-scaled row is ``row_dim`` fp8 e4m3fn values followed by one ue8m0 byte per ``block``
values (DeepSeek-V4.1: 256 + 8 = 264 bytes). vLLM takes the scale byte as the float32 whose
exponent bits are that byte (``(s << 23)`` viewed as float32: ``2**(s - 127)`` for bytes 1..254,
0.0 for byte 0, inf for byte 255), multiplies the value widened to float32 by it, and rounds the
product to bfloat16 (to nearest, ties to even). For scale bytes 1..254 the float32 product is
exact, so the only rounding is the one to bfloat16. A table-scaled row multiplies every value by
its table's one float32 scale.

``dequantize_numpy`` uses numpy and ``ml_dtypes``; ``dequantize_torch`` does the same arithmetic
with torch (``float8_e4m3fn`` -> float32 multiply -> ``bfloat16``), as vLLM's kernels do.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

__all__ = ["dequantize_numpy", "dequantize_torch", "split_packed"]


def split_packed(packed: np.ndarray, row_dim: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """The values (``[..., row_dim]`` uint8) and scales (``[..., row_dim // block]`` uint8) of
    packed rows ``[..., row_dim + row_dim // block]``."""
    packed = np.asarray(packed, dtype=np.uint8)
    if block <= 0 or row_dim % block:
        raise ValueError(f"scale block {block} does not divide row_dim {row_dim}")
    row_bytes = row_dim + row_dim // block
    if packed.shape[-1] != row_bytes:
        raise ValueError(
            f"packed rows have {packed.shape[-1]} bytes; {row_dim} values with a scale per "
            f"{block} take {row_bytes}"
        )
    return packed[..., :row_dim], packed[..., row_dim:]


def dequantize_numpy(
    packed: np.ndarray, row_dim: int, block: int | None = 32, table_scale: float | None = None
) -> np.ndarray:
    """Packed rows ``[..., row_bytes]`` (uint8) -> ``[..., row_dim]`` ``ml_dtypes.bfloat16``.

    ``block``: values per ue8m0 scale byte (rows are values then scales); or ``block=None`` and a
    ``table_scale`` for rows of values only.
    """
    if block is None:
        if table_scale is None:
            raise ValueError("give a scale block or a table scale")
        values = np.asarray(packed, dtype=np.uint8)
        if values.shape[-1] != row_dim:
            raise ValueError(f"rows have {values.shape[-1]} bytes, expected {row_dim} values")
        with np.errstate(over="ignore", invalid="ignore"):
            product = values.view(ml_dtypes.float8_e4m3fn).astype(np.float32) * np.float32(
                table_scale
            )
        return product.astype(ml_dtypes.bfloat16)
    values, scales = split_packed(packed, row_dim, block)
    wide = np.ascontiguousarray(values).view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    scale = (scales.astype(np.uint32) << np.uint32(23)).view(np.float32)
    # Scale byte 255 is an infinite scale (vLLM's bit trick): overflow is meant.
    with np.errstate(over="ignore", invalid="ignore"):
        product = wide * np.repeat(scale, block, axis=-1)
    return product.astype(ml_dtypes.bfloat16)


def dequantize_torch(
    packed: Any, row_dim: int, block: int | None = 32, table_scale: float | None = None,
    device: Any = None,
) -> Any:
    """Like :func:`dequantize_numpy`, in torch: returns a ``torch.bfloat16`` tensor
    ``[..., row_dim]`` (on ``device``, default the input's, CPU for numpy input)."""
    import torch

    t = packed if isinstance(packed, torch.Tensor) else torch.from_numpy(np.asarray(packed))
    t = t.to(dtype=torch.uint8, device=device) if device is not None else t.to(torch.uint8)
    if block is None:
        if table_scale is None:
            raise ValueError("give a scale block or a table scale")
        return (t.contiguous().view(torch.float8_e4m3fn).float() * table_scale).to(torch.bfloat16)
    if block <= 0 or row_dim % block or t.shape[-1] != row_dim + row_dim // block:
        raise ValueError(
            f"packed rows of {t.shape[-1]} bytes do not hold {row_dim} values and their scales "
            f"per {block}"
        )
    values = t[..., :row_dim].contiguous().view(torch.float8_e4m3fn).float()
    scale = (t[..., row_dim:].to(torch.int32) << 23).view(torch.float32)
    return (values * scale.repeat_interleave(block, dim=-1)).to(torch.bfloat16)
