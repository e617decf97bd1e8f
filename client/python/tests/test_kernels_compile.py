"""Every Triton gather kernel of engram_store.torch compiled for the H200 (sm_90) on this machine,
no GPU needed (``benches/e2e/kernel_registers.py``: Triton's whole pipeline, IR to PTX to ptxas'
cubin), in each launch configuration the package uses, and ptxas' register count read for each.
The interpreter tests check what the kernels compute; this one that they build for the GPU they
run on (a kernel only the interpreter accepts would otherwise first fail on the GPU machine).
Skipped without triton."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

pytest.importorskip("torch", reason="engram_store.torch needs torch (pip install torch)")
pytest.importorskip("triton", reason="the kernels need triton (comes with CUDA torch)")

SCRIPT = REPO / "benches" / "e2e" / "kernel_registers.py"


def test_every_gather_kernel_compiles_for_sm90():
    sys.path.insert(0, str(SCRIPT.parent))
    import kernel_registers

    env = {**os.environ, "TRITON_DEFAULT_FP_FUSION": "1"}
    env.pop("TRITON_INTERPRET", None)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--arch", "90"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    rows = done.stdout.splitlines()[1:]
    assert len(rows) == sum(len(c) for c in kernel_registers.CONFIGS.values()), done.stdout
    for row in rows:
        regs = int(row.split()[-4])
        assert 0 < regs <= 255, row
