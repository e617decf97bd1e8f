"""Fixtures of the client tests: a data directory made with a built ``engram-store`` binary
(plain synthetic tables of every dtype and an Engram group on a small layout) and a server on a
free loopback port serving it.

The binary is ``$ENGRAM_STORE_BIN``, by default ``target/debug/engram-store`` under the repository
root (``cargo build -p engram-store``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from engram_store import layout as L
from engram_store.local_server import LocalServer, run_cli

REPO = Path(__file__).resolve().parents[3]

#: Plain synthetic tables: name -> (dtype, rows, row_dim, seed). "wide" rows span two blocks.
TABLES = {
    "plain": ("bf16", 3000, 24, 7),
    "wide": ("f32", 200, 1500, 2),
    "half": ("f16", 100, 8, 4),
    "bytes": ("i8", 1000, 33, 1),
    "ubytes": ("u8", 50, 3, 0),
    "fp8": ("fp8_e4m3", 700, 16, 9),
}
GROUP = "g"
#: A synthetic DeepSeek-V4.1 checkpoint (``engram-store synth-hf``) imported with ``import-hf``.
V41_GROUP = "v41"
GROUP_SEED = 3
#: Raw ids the group's compression map covers.
RAW_VOCAB = 2000
LAYOUT_CONFIG = {
    "vocab_per_ngram": [1000, 1000],
    "layer_ids": [2, 5],
    "max_ngram_size": 3,
    "n_head_per_ngram": 4,
    "seed": 0,
    "pad_raw_id": 2,
    "row_dim": 16,
}


@dataclass
class Served:
    """What the tests run against."""

    addr: str
    data_dir: Path
    layout: dict
    compression_map: np.ndarray
    #: The synthetic DeepSeek-V4.1 checkpoint imported as group ``V41_GROUP``.
    v41_checkpoint: Path


def run_interpreted(script: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs Python source ``script`` in a fresh interpreter with Triton's interpreter on
    (``TRITON_INTERPRET=1``: the kernels run on the CPU), output captured."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=timeout
    )


def assert_interpreted_ok(script: str, timeout: float = 300) -> None:
    """``script`` (:func:`run_interpreted`) exits 0 having printed ``ok`` alone."""
    done = run_interpreted(script, timeout)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def bench_tier_prelude(script: Path, rows: int, hot: int, seed: int) -> str:
    """Python source, for :func:`run_interpreted`, that imports the bench script ``script`` as
    ``K`` (and ``gather_dequantize``) and builds on the CPU a random V4.1-format ``table`` of
    ``rows`` rows (scale bytes in a sane range), ``hot`` of its row ids drawn by ``rng`` (seeded
    ``seed``), and ``tier = K.build_tier(table, hot, cpu)``."""
    return textwrap.dedent(
        f"""
        import sys, numpy as np, torch
        sys.path.insert(0, {str(script.parent)!r})
        import {script.stem} as K
        from engram_store.torch import gather_dequantize
        rng = np.random.default_rng({seed})
        table = torch.from_numpy(rng.integers(0, 120, ({rows}, 264), dtype=np.uint8))
        table[:, 256:] = torch.from_numpy(rng.integers(100, 150, ({rows}, 8), dtype=np.uint8))
        hot = rng.choice({rows}, size={hot}, replace=False).astype(np.int64)
        tier = K.build_tier(table, hot, torch.device("cpu"))
        """
    )


def run_without_gpu(script: Path, *args: str) -> subprocess.CompletedProcess:
    """Runs the Python script ``script`` with ``args`` where CUDA sees no device."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=120
    )


def engram_store_bin() -> Path:
    path = Path(os.environ.get("ENGRAM_STORE_BIN", REPO / "target" / "debug" / "engram-store"))
    if not path.is_file():
        pytest.fail(
            f"engram-store binary {path} not found: build it (cargo build -p engram-store) or "
            "point ENGRAM_STORE_BIN at it"
        )
    return path


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory):
    binary = engram_store_bin()
    root = tmp_path_factory.mktemp("engram-store")
    data = root / "data"
    for name, (dtype, rows, dim, seed) in TABLES.items():
        run_cli(binary, "synth", "--name", name, "--rows", rows, "--dim", dim, "--dtype", dtype,
                "--seed", seed, "--data", data)  # fmt: skip
    cmap = (np.arange(RAW_VOCAB, dtype=np.int64) * 7919) % 600
    layout = L.build_layout(LAYOUT_CONFIG, cmap)
    layout_path = root / "layout.json"
    map_path = root / "map.npy"
    layout_path.write_text(json.dumps(layout), encoding="utf-8")
    np.save(map_path, cmap)
    run_cli(binary, "engram", "create", "--name", GROUP, "--layout", layout_path,
            "--compress", map_path, "--data", data, "--synth", "--dtype", "bf16",
            "--seed", GROUP_SEED)  # fmt: skip
    ckpt = root / "v41-ckpt"
    run_cli(binary, "synth-hf", ckpt)
    run_cli(binary, "import-hf", ckpt, "--name", V41_GROUP, "--data", data)
    with LocalServer(binary, data, ram_cache="16MiB") as server:
        assert server.addr is not None
        yield Served(server.addr, data, layout, cmap, ckpt)


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def make_pki(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for localhost and a client certificate, signed by it."""
    p = {n: d / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt",
                             "client.key", "client.csr", "client.crt", "san.ext")}  # fmt: skip
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout",
             p["ca.key"], "-out", p["ca.crt"], "-subj", "/CN=engram test CA")  # fmt: skip
    p["san.ext"].write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for who, cn in (("server", "localhost"), ("client", "inference-worker")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", p[f"{who}.key"],
                 "-out", p[f"{who}.csr"], "-subj", f"/CN={cn}")  # fmt: skip
        _openssl("x509", "-req", "-in", p[f"{who}.csr"], "-CA", p["ca.crt"], "-CAkey",
                 p["ca.key"], "-CAcreateserial", "-days", "2", "-out", p[f"{who}.crt"],
                 "-extfile", p["san.ext"])  # fmt: skip
    return p
