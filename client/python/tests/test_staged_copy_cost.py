"""benches/e2e/staged_copy_cost.py runs on a small file: it prints a line per gather size with
the copy's time and the counting thread's pace, and removes its file. Skipped without torch."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import REPO

SCRIPT = REPO / "benches" / "e2e" / "staged_copy_cost.py"


def test_staged_copy_cost_measures_and_cleans_up(tmp_path):
    pytest.importorskip("torch", reason="staged_copy_cost.py needs torch (pip install torch)")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", "20000", "--gathers", "10,500", "--reps", "2",
         "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if " rows: median " in line]
    assert len(lines) == 2, done.stdout
    for line, n in zip(lines, ("10", "500"), strict=True):
        assert line.split()[0] == n, line
        assert re.search(r"median \d+\.\d+ ms .* at \d+% of its pace alone", line), line
    assert list(tmp_path.iterdir()) == []
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", "0", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "--rows" in bad.stderr
