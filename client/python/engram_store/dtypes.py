"""Element types of engram-store tables as numpy dtypes.

bf16 and fp8 e4m3 (the "fn" variant, no infinities) come from ``ml_dtypes``; the others are
numpy's own. Rows are little-endian, as on the wire and on disk.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from engram_store.v1 import store_pb2 as pb

__all__ = ["NAMES", "from_name", "from_proto", "to_numpy"]

#: Proto DType value -> numpy dtype.
_NUMPY = {
    pb.DTYPE_F32: np.dtype("<f4"),
    pb.DTYPE_F16: np.dtype("<f2"),
    pb.DTYPE_BF16: np.dtype(ml_dtypes.bfloat16),
    pb.DTYPE_I8: np.dtype(np.int8),
    pb.DTYPE_U8: np.dtype(np.uint8),
    pb.DTYPE_F8_E4M3: np.dtype(ml_dtypes.float8_e4m3fn),
}

#: Manifest / command-line names (as in a table's ``manifest.json``) -> proto DType value.
NAMES = {
    "f32": pb.DTYPE_F32,
    "f16": pb.DTYPE_F16,
    "bf16": pb.DTYPE_BF16,
    "i8": pb.DTYPE_I8,
    "u8": pb.DTYPE_U8,
    "fp8_e4m3": pb.DTYPE_F8_E4M3,
}


def from_proto(value: int) -> np.dtype:
    """The numpy dtype of a proto ``DType`` value."""
    try:
        return _NUMPY[value]
    except KeyError:
        raise ValueError(f"unknown engram-store dtype {value}") from None


def from_name(name: str) -> np.dtype:
    """The numpy dtype of a manifest dtype name (``"bf16"``, ``"f32"``, ...)."""
    try:
        return _NUMPY[NAMES[name]]
    except KeyError:
        raise ValueError(
            f"unknown engram-store dtype name {name!r}; known: {sorted(NAMES)}"
        ) from None


def to_numpy(rows: bytes, dtype: int, row_dim: int) -> np.ndarray:
    """``rows`` as a read-only ``[n, row_dim]`` array of the table's dtype (no copy)."""
    return np.frombuffer(rows, dtype=from_proto(dtype)).reshape(-1, row_dim)
