"""The harness's Engram tables: random fp8 rows with per-block scales in DeepSeek-V4.1's geometry,
written once as an engram-store Engram group (``engram-store engram create``) under ``--data``,
and read back from its files for the arms that keep the tables themselves ((b) in VRAM, (c) in
pinned host memory: :class:`HostTables`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engram_store.local_server import run_cli
from engram_store.table_files import TableFiles
from engram_store.torch import (
    V41_ROWS,
    NgramHasher,
    v41_layout,
)

GROUP = "v41"
TABLES_MARKER = "engram-offload.json"


@dataclasses.dataclass
class Tables:
    """The Engram group the arms read: its layout, hasher and tables."""

    data_dir: Path
    layout: dict[str, Any]
    hasher: Any
    names: list[str]
    rows: list[int]
    row_bytes: int

    @property
    def nbytes(self) -> int:
        return sum(self.rows) * self.row_bytes


def synth_rows(layer: int, start: int, count: int, seed: int, device) -> np.ndarray:
    """``count`` packed V4.1 rows from row ``start`` of layer ``layer``'s table: N(0, 1) values
    quantized to fp8 e4m3 with one power-of-two scale per 32 (the block's max maps near 448)."""
    gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + layer * 10_007 + start)
    x = torch.randn((count, V41_ROWS.scales, V41_ROWS.block), generator=gen, device=device)
    exponent = torch.ceil(torch.log2(x.abs().amax(-1).clamp_min(1e-30) / 448.0)).clamp(-60, 60)
    scaled = (x / torch.exp2(exponent).unsqueeze(-1)).clamp(-448.0, 448.0)
    codes = scaled.to(torch.float8_e4m3fn).view(torch.uint8).reshape(count, V41_ROWS.head_dim)
    scales = (exponent + 127).to(torch.uint8)
    return torch.cat([codes, scales], dim=1).cpu().numpy()


def write_weights(path: Path, layer_ids: Sequence[int], rows: Sequence[int], seed: int, device):
    """A ``.safetensors`` file with one U8 ``[rows, 264]`` tensor per layer (``layer<ID>``, as
    ``engram-store engram create --weights`` finds them), written chunk by chunk."""
    header: dict[str, Any] = {}
    offset = 0
    for lid, n in zip(layer_ids, rows, strict=True):
        header[f"layer{lid}"] = {
            "dtype": "U8",
            "shape": [n, V41_ROWS.row_bytes],
            "data_offsets": [offset, offset + n * V41_ROWS.row_bytes],
        }
        offset += n * V41_ROWS.row_bytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    chunk = 1 << 20
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for li, n in enumerate(rows):
            for start in range(0, n, chunk):
                synth_rows(li, start, min(chunk, n - start), seed, device).tofile(f)


def prepare_tables(args: argparse.Namespace, device, log) -> Tables:
    """The V4.1-geometry group under ``args.data``: made unless it is there with the same layout
    and seed."""
    cmap = np.load(args.compress, allow_pickle=False)
    layout = v41_layout(args.engram_vocab, cmap)
    hasher = NgramHasher(layout, cmap)
    names = [f"{GROUP}.layer{lid}" for lid in hasher.layer_ids]
    tables = Tables(args.data, layout, hasher, names, list(hasher.table_rows), 264)
    marker = args.data / TABLES_MARKER
    want = {"engram_vocab": args.engram_vocab, "seed": args.seed, "layout": layout}
    if marker.exists() and json.loads(marker.read_text()) == want:
        log(f"tables: reusing {args.data} ({tables.nbytes / 1e9:.2f} GB)")
        return tables
    if marker.exists() or (args.data / f"{GROUP}.engram").exists():
        for entry in [*names, f"{GROUP}.engram", TABLES_MARKER]:
            target = args.data / entry
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    args.data.mkdir(parents=True, exist_ok=True)
    if not os.access(args.server_bin, os.X_OK):
        raise FileNotFoundError(
            f"engram-store binary {args.server_bin} is missing (cargo build "
            "--release -p engram-store) and the tables are not made yet"
        )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="engram-offload-", dir=args.data.parent) as tmp:
        tmp = Path(tmp)
        (tmp / "layout.json").write_text(json.dumps(layout))
        np.save(tmp / "map.npy", cmap.astype(np.int64))
        write_weights(tmp / "weights.safetensors", hasher.layer_ids, tables.rows, args.seed, device)
        run_cli(
            args.server_bin,
            "engram",
            "create",
            "--name",
            GROUP,
            "--layout",
            tmp / "layout.json",
            "--compress",
            tmp / "map.npy",
            "--data",
            args.data,
            "--weights",
            tmp / "weights.safetensors",
        )
    marker.write_text(json.dumps(want))
    log(
        f"tables: wrote {len(names)} x ~{tables.rows[0]:,} rows ({tables.nbytes / 1e9:.2f} GB) "
        f"in {time.perf_counter() - started:.1f}s"
    )
    return tables


class HostTables:
    """The tables' rows in host memory, read from the group's files on first use and shared by
    arms (b) and (c). For a GPU they are page-locked (``cudaHostRegister``, mapped), so a kernel
    reads them over UVA; :meth:`drop` unlocks and frees them before the store arms need the RAM."""

    #: cudaHostRegisterPortable | cudaHostRegisterMapped
    REGISTER_FLAGS = 3

    def __init__(self, tables: Tables, device):
        self.tables = tables
        self.lock = device.type == "cuda"
        self._arrays: list[np.ndarray] | None = None

    def get(self) -> list:
        if self._arrays is None:
            arrays = []
            for name in self.tables.names:
                files = TableFiles(self.tables.data_dir, name)
                rows = np.empty((files.rows, files.row_bytes), dtype=np.uint8)
                files.read_into(rows)
                if self.lock:
                    self._cudart(
                        "cudaHostRegister", rows.ctypes.data, rows.nbytes, self.REGISTER_FLAGS
                    )
                arrays.append(rows)
            self._arrays = arrays
        return [torch.from_numpy(a) for a in self._arrays]

    def drop(self) -> None:
        arrays, self._arrays = self._arrays, None
        for rows in arrays or []:
            if self.lock:
                self._cudart("cudaHostUnregister", rows.ctypes.data)

    @staticmethod
    def _cudart(call: str, *args) -> None:
        err = getattr(torch.cuda.cudart(), call)(*args)
        if int(getattr(err, "value", err)) != 0:
            raise RuntimeError(f"{call} failed: {err}")
