"""benches/e2e/tiered_kernel_cost.py where there is no GPU: the VRAM tier it builds in process is
laid out as the server's (the tiered kernel, in Triton's interpreter, finds exactly the tier's rows
and gathers every row bit for bit as the plain gather does), and without a CUDA device it exits 2
with a message. (Its timings run on a GPU machine.)"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

SCRIPT = REPO / "benches" / "e2e" / "tiered_kernel_cost.py"


def test_the_tier_it_builds_is_the_servers_layout():
    pytest.importorskip("triton", reason="the tiered kernel needs triton (comes with CUDA torch)")
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, torch
        sys.path.insert(0, {str(SCRIPT.parent)!r})
        import tiered_kernel_cost as K
        from engram_store.torch import gather_dequantize
        rng = np.random.default_rng(1)
        table = torch.from_numpy(rng.integers(0, 120, (5000, 264), dtype=np.uint8))
        table[:, 256:] = torch.from_numpy(rng.integers(100, 150, (5000, 8), dtype=np.uint8))
        hot = rng.choice(5000, size=700, replace=False).astype(np.int64)
        tier = K.build_tier(table, hot, torch.device("cpu"))
        assert tier.buckets == 1024, tier.buckets
        ids = np.concatenate([rng.choice(hot, 48), rng.integers(0, 5000, 48)]).reshape(-1, 24)
        ids_t = torch.from_numpy(ids)
        out = torch.zeros(4, 24, 256, dtype=torch.bfloat16)
        hits = torch.zeros(96, dtype=torch.uint8)
        K.tiered_gather_dequantize(tier, ids_t, out, hits=hits)
        want = torch.zeros_like(out)
        gather_dequantize(table, ids_t, want)
        assert torch.equal(out.view(torch.int16), want.view(torch.int16))
        assert np.array_equal(hits.numpy() == 1, np.isin(ids.reshape(-1), hot))
        print("ok")
        """
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_without_a_gpu_it_says_so():
    pytest.importorskip("torch", reason="tiered_kernel_cost.py needs torch (pip install torch)")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", "48"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "needs a CUDA device and Triton" in done.stderr
