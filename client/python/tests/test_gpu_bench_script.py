"""benches/gpu/lookup_into_bench.py where there is no GPU: it imports with numpy and this package
alone, draws its workload as documented, and without torch or a CUDA device it fails at once with
a JSON error instead of a traceback. (Its measurements run on a GPU machine; see the script.)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

SCRIPT = REPO / "benches" / "gpu" / "lookup_into_bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("lookup_into_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_batches_draw_the_hot_fraction_from_the_hot_set(bench):
    args = argparse.Namespace(
        seed=1, hot_rows=5000, batch=20000, hot_fraction=0.9, distinct_batches=3
    )
    hot, batches = bench.make_batches(1_000_000, args)
    assert hot.size == 5000 and np.unique(hot).size == 5000
    assert len(batches) == 3
    hot_set = set(hot.tolist())
    for ids in batches:
        assert ids.dtype == np.uint64 and ids.size == 20000
        assert int(ids.max()) < 1_000_000
        in_hot = np.fromiter((int(i) in hot_set for i in ids), dtype=bool).mean()
        assert 0.9 <= in_hot < 0.91  # 90% drawn from it, a few uniform ids land in it too
    # A table smaller than the hot set: the hot set is the table.
    hot, _ = bench.make_batches(100, args)
    assert hot.size <= 100


def test_without_a_gpu_it_fails_with_a_json_error():
    try:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU: the script would run for real")
    except ImportError:
        pass
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--addr", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    error = json.loads(done.stdout)["error"]
    assert "torch" in error
