"""benches/e2e/warm_order.py on a small group: hinting a cold store's rows sorted by id reads
fewer disk blocks than hinting them in random order over several hints (the server reads a
block once per hint, however many of its rows the hint asks). Skipped without torch (the
harness that writes the group needs it) or a built engram-store."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO
from test_e2e_offload import smoke_run_binary

HARNESS = REPO / "benches" / "e2e" / "engram_offload.py"
SCRIPT = REPO / "benches" / "e2e" / "warm_order.py"


def test_sorted_hints_read_fewer_disk_blocks(tmp_path):
    binary = smoke_run_binary()
    data = tmp_path / "group"
    prepared = subprocess.run(
        [sys.executable, str(HARNESS), "--device", "cpu", "--engram-vocab", "2000", "--data",
         str(data), "--prepare-only"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(data), "--trials", "1", "--chunk", "1000",
         "--server-bin", str(binary)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    found = re.findall(r"trial 0 (random|sorted) +[\d.]+ s +rows ([\d,]+) +disk reads ([\d,]+)",
                       done.stdout)  # fmt: skip
    assert [order for order, _, _ in found] == ["random", "sorted"], done.stdout
    rows = {order: int(n.replace(",", "")) for order, n, _ in found}
    reads = {order: int(n.replace(",", "")) for order, _, n in found}
    assert rows["random"] == rows["sorted"] > 10_000, rows
    # 40% of ~48,000 rows a table, 15 rows a 4-KiB block: ~3,200 blocks a table sorted; in
    # random order nearly a read per row.
    assert reads["sorted"] * 3 < reads["random"] <= rows["random"], reads
