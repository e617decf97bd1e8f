"""benches/e2e/tiered_kernel_cost.py where there is no GPU: the VRAM tier it builds in process is
laid out as the server's (the tiered kernel, in Triton's interpreter, finds exactly the tier's rows
and gathers every row bit for bit as the plain gather does), and without a CUDA device it exits 2
with a message. (Its timings run on a GPU machine.)"""

from __future__ import annotations

import textwrap

import pytest
from conftest import (
    REPO,
    assert_interpreted_ok,
    bench_tier_prelude,
    run_interpreted,
    run_without_gpu,
)

SCRIPT = REPO / "benches" / "e2e" / "tiered_kernel_cost.py"


def test_the_tier_it_builds_is_the_servers_layout():
    pytest.importorskip("triton", reason="the tiered kernel needs triton (comes with CUDA torch)")
    script = bench_tier_prelude(SCRIPT, rows=5000, hot=700, seed=1) + textwrap.dedent(
        """
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
    assert_interpreted_ok(script)


def test_without_a_gpu_it_says_so():
    pytest.importorskip("torch", reason="tiered_kernel_cost.py needs torch (pip install torch)")
    done = run_without_gpu(SCRIPT, "--rows", "48")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "needs a CUDA device and Triton" in done.stderr


def test_every_path_it_times_runs_and_gathers_the_rows():
    """Each case the script times runs (in Triton's interpreter, its timer stubbed to one
    launch), one line each, and the last (the fetched path, both parts, with misses) leaves the
    gathered rows in its output bit for bit; the plain gather read by scale block gives them
    too."""
    pytest.importorskip("triton", reason="the tiered kernel needs triton (comes with CUDA torch)")
    script = textwrap.dedent(
        f"""
        import argparse, sys, numpy as np, torch
        sys.path.insert(0, {str(SCRIPT.parent)!r})
        import tiered_kernel_cost as K
        from engram_store.torch import gather_dequantize
        outs = []
        def one_launch(launch, reps, runs, graph=True):
            launch()
            return 1.0
        K.device_us = one_launch
        torch.cuda.synchronize = lambda *a: None
        real_empty = torch.empty
        def empty(*a, **kw):  # the script's output tensor, to read back
            t = real_empty(*a, **kw)
            if t.dtype == torch.bfloat16:
                outs.append(t)
            return t
        K.torch.empty = empty
        rng = np.random.default_rng(3)
        table = torch.from_numpy(rng.integers(0, 120, (3000, 264), dtype=np.uint8))
        table[:, 256:] = torch.from_numpy(rng.integers(100, 150, (3000, 8), dtype=np.uint8))
        hot = rng.choice(3000, size=400, replace=False).astype(np.int64)
        cold = np.setdiff1d(np.arange(3000), hot)
        tier = K.build_tier(table, hot, torch.device("cpu"))
        args = argparse.Namespace(miss_share=0.3, fetch_programs=4, reps=1, runs=1)
        K.time_rows(96, args, np.random.default_rng(5), hot, cold, table, table, tier, tier)
        # the mixed ids the script drew, again (same seed, same draws)
        r = np.random.default_rng(5)
        hits = r.choice(hot, size=96)
        mixed = hits.copy()
        mixed[:28] = r.choice(cold, size=28)
        r.shuffle(mixed)
        want = torch.zeros(4, 24, 256, dtype=torch.bfloat16)
        gather_dequantize(table, torch.from_numpy(mixed).view(-1, 24), want)
        assert torch.equal(outs[0].view(torch.int16), want.view(torch.int16))
        by_block = torch.zeros_like(want)  # the baselines' gather read by scale block: the same
        K.plain_by_block(table, torch.from_numpy(mixed).view(-1, 24), by_block)
        assert torch.equal(by_block.view(torch.int16), want.view(torch.int16))
        print("ok")
        """
    )
    done = run_interpreted(script, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
    lines = [x for x in done.stdout.splitlines() if x.startswith("    96 ")]
    assert len(lines) == 24, done.stdout
