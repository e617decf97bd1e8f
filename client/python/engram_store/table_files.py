"""Reading a table's rows straight from its files, without a server: for checking what a server
returns, and for tools that want a whole table.

A table lives in ``DATA/<name>/v<version:08>/`` with a ``manifest.json`` listing its data files.
In each data file, block 0 (``block_size`` bytes) is a header; rows follow in *units*: when
``row_bytes <= block_size`` a unit is one block holding ``rows_per_unit = block_size // row_bytes``
rows (the rest of the block is padding), otherwise a unit is the ``ceil(row_bytes / block_size)``
blocks of one row. Row ``r`` of a file starting at table row ``first_row`` lies at byte
``block_size + (local // rows_per_unit) * unit_bytes + (local % rows_per_unit) * row_bytes``
with ``local = r - first_row``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from engram_store import dtypes

__all__ = ["TableFiles", "newest_version_dir"]

_VERSION_DIR = re.compile(r"^v(\d+)$")


def newest_version_dir(data_dir: str | Path, table: str) -> Path:
    """The directory of the newest complete version of ``table`` under ``data_dir``."""
    table_dir = Path(data_dir) / table
    versions = [
        (int(m.group(1)), p)
        for p in (table_dir.iterdir() if table_dir.is_dir() else [])
        if (m := _VERSION_DIR.match(p.name)) and (p / "manifest.json").is_file()
    ]
    if not versions:
        raise FileNotFoundError(f"no complete version of table {table!r} under {table_dir}")
    return max(versions)[1]


class TableFiles:
    """The newest version of one table, its data files memory-mapped read-only."""

    def __init__(self, data_dir: str | Path, table: str):
        self.dir = newest_version_dir(data_dir, table)
        self.manifest: dict[str, Any] = json.loads(
            (self.dir / "manifest.json").read_text(encoding="utf-8")
        )
        m = self.manifest
        self.name: str = m["name"]
        self.rows: int = m["rows"]
        self.row_dim: int = m["row_dim"]
        self.row_bytes: int = m["row_bytes"]
        self.block_size: int = m["block_size"]
        self.dtype = dtypes.from_name(m["dtype"])
        if self.row_bytes <= self.block_size:
            self.rows_per_unit = self.block_size // self.row_bytes
            self.unit_bytes = self.block_size
        else:
            self.rows_per_unit = 1
            self.unit_bytes = -(-self.row_bytes // self.block_size) * self.block_size
        self._first_rows = np.array([f["first_row"] for f in m["files"]], dtype=np.int64)
        self._files = [
            np.memmap(self.dir / f["path"], dtype=np.uint8, mode="r") for f in m["files"]
        ]

    def row_offsets(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each id: the index of its data file and the byte offset of its row there."""
        file_index = np.searchsorted(self._first_rows, ids, side="right") - 1
        local = ids - self._first_rows[file_index]
        offsets = (
            self.block_size
            + (local // self.rows_per_unit) * self.unit_bytes
            + (local % self.rows_per_unit) * self.row_bytes
        )
        return file_index, offsets

    def gather(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """Rows ``ids`` (any shape), as ``[*ids.shape, row_dim]`` of the table's dtype."""
        ids = np.asarray(ids, dtype=np.int64)
        flat = ids.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= self.rows):
            bad = flat[(flat < 0) | (flat >= self.rows)][0]
            raise IndexError(f"row id {int(bad)} is outside table {self.name!r} ({self.rows} rows)")
        out = np.empty((flat.size, self.row_bytes), dtype=np.uint8)
        file_index, offsets = self.row_offsets(flat)
        columns = np.arange(self.row_bytes, dtype=np.int64)
        for f, data in enumerate(self._files):
            sel = np.nonzero(file_index == f)[0]
            if sel.size:
                out[sel] = data[offsets[sel, None] + columns[None, :]]
        return out.view(self.dtype).reshape(*ids.shape, self.row_dim)

    def read_into(self, out: np.ndarray) -> None:
        """Copies every row, in order, into ``out`` (writable, ``[rows, row_bytes]`` uint8, e.g.
        the numpy view of a pinned torch tensor): a whole table without a per-row gather."""
        if out.shape != (self.rows, self.row_bytes) or out.dtype != np.uint8:
            raise ValueError(
                f"out must be uint8 [{self.rows}, {self.row_bytes}], got {out.dtype} {out.shape}"
            )
        per_unit = self.rows_per_unit
        for entry, data in zip(self.manifest["files"], self._files, strict=True):
            first, rows = entry["first_row"], entry["rows"]
            units = -(-rows // per_unit)
            body = data[self.block_size : self.block_size + units * self.unit_bytes]
            packed = body.reshape(units, self.unit_bytes)[:, : per_unit * self.row_bytes]
            packed = packed.reshape(units, per_unit, self.row_bytes)
            full = rows // per_unit
            dst = out[first : first + full * per_unit].reshape(full, per_unit, self.row_bytes)
            np.copyto(dst, packed[:full])
            if rows > full * per_unit:
                out[first + full * per_unit : first + rows] = packed[full, : rows - full * per_unit]
