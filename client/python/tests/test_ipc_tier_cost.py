"""benches/e2e/ipc_tier_cost.py where there is no GPU: each case it times gathers the rows its ids
name, bit for bit (in Triton's interpreter, over a tier built in process), a bad ``--rows`` is
refused naming it, and without a CUDA device it exits 2 with a message. (The timings, and the
second process that opens the tier over CUDA IPC, run on a GPU machine.)"""

from __future__ import annotations

import textwrap

import pytest
from conftest import REPO, assert_interpreted_ok, bench_tier_prelude, run_without_gpu

SCRIPT = REPO / "benches" / "e2e" / "ipc_tier_cost.py"


def test_each_case_gathers_the_rows_of_its_ids():
    pytest.importorskip("triton", reason="the tiered kernel needs triton (comes with CUDA torch)")
    script = bench_tier_prelude(SCRIPT, rows=3000, hot=500, seed=2) + textwrap.dedent(
        """
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
    assert_interpreted_ok(script)


def test_bad_rows_and_no_gpu_are_refused():
    pytest.importorskip("torch", reason="ipc_tier_cost.py needs torch (pip install torch)")
    done = run_without_gpu(SCRIPT, "--rows", "100")
    assert done.returncode == 2 and "multiples of 24" in done.stderr and "[100]" in done.stderr
    done = run_without_gpu(SCRIPT, "--rows", "48")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "needs a CUDA device and Triton" in done.stderr
