"""Delivery mode 3, CUDA IPC into a torch tensor, against a GPU server: ``lookup_into`` a CUDA
tensor must hold exactly what ``lookup`` returns, whether rows come from the server's VRAM tier or
from host memory, in a tensor that starts inside its allocation (a slice), and after the VRAM tier
has taken the hot rows in (``gpu_hits > 0``).

Runs only where there is something to run against; otherwise each test is skipped and says why:
- torch with a CUDA device;
- ``ENGRAM_STORE_GPU_BIN``: an ``engram-store`` built with ``cargo build --features cuda``. The
  test makes its own data directory with that binary and starts it with ``--gpu-budget 1GiB`` on
  the device torch uses (``ENGRAM_STORE_GPU_DEVICE``, default 0).

    ENGRAM_STORE_GPU_BIN=target/release/engram-store python -m pytest -rs \\
        client/python/tests/test_cuda_regions.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from engram_store import Client
from engram_store.errors import InvalidArgumentError
from engram_store.local_server import LocalServer, run_cli

TABLE = "hot"
ROWS = 200_000
DIM = 64  # bf16: 128-byte rows, a multiple of 16 (the gather kernel's fast path)
SEED = 5


def _requirements():
    """(torch, binary, device) or a skip with the reason."""
    try:
        import torch
    except ImportError:
        pytest.skip("CUDA IPC test skipped: torch is not installed")
    if not torch.cuda.is_available():
        pytest.skip("CUDA IPC test skipped: torch sees no CUDA device")
    binary = os.environ.get("ENGRAM_STORE_GPU_BIN")
    if not binary:
        pytest.skip(
            "CUDA IPC test skipped: set ENGRAM_STORE_GPU_BIN to an engram-store built with "
            "--features cuda"
        )
    if not Path(binary).is_file():
        pytest.fail(f"ENGRAM_STORE_GPU_BIN={binary} is not a file")
    return torch, binary, int(os.environ.get("ENGRAM_STORE_GPU_DEVICE", "0"))


@pytest.fixture(scope="module")
def gpu(tmp_path_factory):
    torch, binary, device = _requirements()
    data = tmp_path_factory.mktemp("engram-store-gpu") / "data"
    run_cli(binary, "synth", "--name", TABLE, "--rows", ROWS, "--dim", DIM, "--dtype", "bf16",
            "--seed", SEED, "--data", data)  # fmt: skip
    args = ("--gpu-budget", "1GiB", "--gpu-device", str(device))
    with LocalServer(binary, data, ram_cache="64MiB", args=args) as server:
        with Client(server.addr) as client:
            yield torch, client, torch.device("cuda", device)


def tensor_bytes(t) -> bytes:
    """A CUDA tensor's bytes, on the host."""
    import torch

    return t.contiguous().view(torch.uint8).cpu().numpy().tobytes()


def test_lookup_into_a_cuda_tensor_is_bit_exact_and_hits_vram(gpu):
    torch, client, device = gpu
    rng = np.random.default_rng(0)
    hot = rng.choice(ROWS, size=4096, replace=False)
    ids = np.concatenate([rng.choice(hot, size=6000), rng.integers(0, ROWS, size=2000)])
    expected = client.lookup(TABLE, ids).tobytes()
    out = torch.empty((ids.size, DIM), dtype=torch.bfloat16, device=device)
    with client.register_cuda_tensor(out) as region:
        assert region.size == ids.size * DIM * 2
        # Cold: every row comes from host memory.
        first = client.lookup_into(region, TABLE, ids)
        assert first == ids.size
        assert tensor_bytes(out) == expected
        # Prefetch the hot rows, look them up a few times (the VRAM tier counts lookups) and
        # give the background refresh (every second) time to move them in.
        client.prefetch(TABLE, hot).result(timeout=30)
        deadline = time.monotonic() + 15
        hits = 0
        while time.monotonic() < deadline:
            for _ in range(4):
                client.lookup(TABLE, hot)
            time.sleep(1.2)
            out.zero_()
            w = client.lookup_into(region, TABLE, ids)
            assert tensor_bytes(out) == expected, f"rows differ with {w.gpu_hits} VRAM hits"
            hits = w.gpu_hits
            if hits > 0:
                break
        print(f"VRAM hits after warm-up: {hits} of {ids.size} rows")
        assert hits > 0, "no row came from VRAM within 15 s of warm-up"


def test_a_tensor_inside_its_allocation_gets_exactly_its_rows(gpu):
    torch, client, device = gpu
    ids = np.arange(100, 612)
    expected = client.lookup(TABLE, ids).tobytes()
    big = torch.zeros((ids.size + 10, DIM), dtype=torch.bfloat16, device=device)
    inner = big[7 : 7 + ids.size]  # starts 7 rows into the storage
    assert inner.storage_offset() == 7 * DIM
    with client.register_cuda_tensor(inner) as region:
        assert client.lookup_into(region, TABLE, ids) == ids.size
        torch.cuda.synchronize(device)
        assert tensor_bytes(inner) == expected
        assert not big[:7].any() and not big[7 + ids.size :].any()
        # An offset within the region, and the server's bounds check.
        assert client.lookup_into(region, TABLE, ids[:10], offset=5 * DIM * 2) == 10
        assert tensor_bytes(inner[5:15]) == expected[: 10 * DIM * 2]
        with pytest.raises(InvalidArgumentError):
            client.lookup_into(region, TABLE, ids[:2], offset=(ids.size - 1) * DIM * 2)
        assert not big[7 + ids.size :].any()


def test_tensors_that_cannot_be_shared_are_refused(gpu):
    torch, client, device = gpu
    with pytest.raises(ValueError, match="contiguous"):
        client.register_cuda_tensor(torch.zeros((8, 4), device=device).t())
    with pytest.raises(ValueError, match="not a CUDA device"):
        client.register_cuda_tensor(torch.zeros(8))


def test_a_region_outlives_its_connections_quiet(tmp_path):
    """A worker registers its tensor over gRPC and then sends no gRPC request for longer than
    the server's idle timeout (it reads rows through a channel, on the local socket): the
    connection that owns the region is not reaped, so the region is still there, for
    ``lookup_into`` and for a new channel into it (BENCHMARKS.md 10g: arm (e) lost its region so,
    and could not open a larger channel for prefill)."""
    torch, binary, device = _requirements()
    data = tmp_path / "data"
    run_cli(binary, "synth", "--name", TABLE, "--rows", 4096, "--dim", DIM, "--dtype", "bf16",
            "--seed", SEED, "--data", data)  # fmt: skip
    args = ("--gpu-budget", "64MiB", "--gpu-device", str(device), "--idle-timeout", "1")
    with LocalServer(binary, data, ram_cache="16MiB", args=args) as server, Client(
        server.addr
    ) as client:
        ids = np.arange(0, 4096, 7)
        expected = client.lookup(TABLE, ids).tobytes()
        cuda = torch.device("cuda", device)
        out = torch.zeros((ids.size, DIM), dtype=torch.bfloat16, device=cuda)
        with client.register_cuda_tensor(out) as region:
            time.sleep(3.5)  # past the idle timeout (1 s) and the reaper's next rounds
            assert client.lookup_into(region, TABLE, ids) == ids.size
            torch.cuda.synchronize(device)
            assert tensor_bytes(out) == expected
            out.zero_()
            with client.open_channel(region, table=TABLE, capacity=ids.size) as channel:
                channel.submit(ids.astype(np.uint64), slot=0)
                channel.wait(0)
            torch.cuda.synchronize(device)
            assert tensor_bytes(out) == expected
