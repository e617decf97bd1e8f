"""benches/e2e/ipc_tier_cost.py where there is no GPU: each case it times gathers the rows its ids
name, bit for bit (in Triton's interpreter, over a tier built in process), a bad ``--rows`` is
refused naming it, and without a CUDA device it exits 2 with a message. (The timings, and the
second process that opens the tier over CUDA IPC, run on a GPU machine.)"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

SCRIPT = REPO / "benches" / "e2e" / "ipc_tier_cost.py"


def test_each_case_gathers_the_rows_of_its_ids():
    pytest.importorskip("triton", reason="the tiered kernel needs triton (comes with CUDA torch)")
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, torch
        sys.path.insert(0, {str(SCRIPT.parent)!r})
        import ipc_tier_cost as K
        from engram_store.torch import gather_dequantize
        rng = np.random.default_rng(2)
        table = torch.from_numpy(rng.integers(0, 120, (3000, 264), dtype=np.uint8))
        table[:, 256:] = torch.from_numpy(rng.integers(100, 150, (3000, 8), dtype=np.uint8))
        hot = rng.choice(3000, size=500, replace=False).astype(np.int64)
        tier = K.build_tier(table, hot, torch.device("cpu"))
        ids = K.fresh_ids(hot, 48, 3, torch.device("cpu"))
        assert len(ids) == 3 and all(np.isin(i.numpy(), hot).all() for i in ids)
        assert all(torch.equal(a, b) for a, b in zip(ids, K.fresh_ids(hot, 48, 3, "cpu")))
        out = torch.zeros(2, 24, 256, dtype=torch.bfloat16)
        want = torch.zeros_like(out)
        for name, launch in K.cases(table, tier, ids, out):
            for k in range(4):  # the fresh cases go round the sets
                out.zero_()
                launch()
                i = ids[0] if "replayed" in name else ids[k % 3]
                gather_dequantize(table, i, want)
                assert torch.equal(out.view(torch.int16), want.view(torch.int16)), (name, k)
        print("ok")
        """
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_bad_rows_and_no_gpu_are_refused():
    pytest.importorskip("torch", reason="ipc_tier_cost.py needs torch (pip install torch)")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", "100"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "multiples of 24" in done.stderr and "[100]" in done.stderr
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", "48"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "needs a CUDA device and Triton" in done.stderr
