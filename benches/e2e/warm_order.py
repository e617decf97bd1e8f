"""How the order of Prefetch hints changes a cold store's warm: a RAM tier of a quarter of the
tables, the rest on disk, hinted 40% of each table's rows (random ids) in random order (as a
warm in frequency order sends them) or sorted by id, in the offload harness's hint chunks. Prints
per trial and order the seconds until the server's prefetch queue is empty and the NVMe tier's
reads (the server reads a disk block once per request however many of its rows are asked).

    python benches/e2e/engram_offload.py --device cpu --engram-vocab 100000 --data DIR \\
        --prepare-only          # two V4.1-geometry tables of ~2.4M rows, 1.27 GB
    python benches/e2e/warm_order.py --data DIR [--trials 3] [--chunk IDS_PER_HINT] \\
        [--server-bin target/release/engram-store]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engram_offload  # noqa: E402, F401 (the client package from this checkout, torch settings)
from offload_warm import HINT_CHUNK, hint  # noqa: E402

from engram_store import Client  # noqa: E402
from engram_store.local_server import LocalServer  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a group written by the harness")
    p.add_argument("--server-bin", type=Path, default=Path("target/release/engram-store"))
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--share", type=float, default=0.4, help="fraction of each table hinted")
    p.add_argument("--chunk", type=int, default=HINT_CHUNK, help="ids per hint")
    args = p.parse_args()
    with LocalServer(args.server_bin, args.data) as server, Client(server.addr) as probe:
        tables = probe.list_tables()
    rng = np.random.default_rng(0)
    picks = {t.name: rng.choice(t.rows, size=int(t.rows * args.share), replace=False)
             for t in tables}  # fmt: skip
    total = sum(t.rows * t.row_bytes for t in tables)
    for trial in range(args.trials):
        for order in ("random", "sorted"):
            with LocalServer(args.server_bin, args.data, ram_cache=str(total // 4)) as server:
                with Client(server.addr) as client:
                    started = time.perf_counter()
                    for name, ids in picks.items():
                        ids = np.sort(ids) if order == "sorted" else ids
                        hint(client, name, ids.astype(np.uint64), started + 600, args.chunk)
                    while client.stats().prefetch_queued_rows:
                        time.sleep(0.05)
                    seconds = time.perf_counter() - started
                    nvme = client.stats().tiers.get("nvme", {})
                    print(f"trial {trial} {order:6s} {seconds:6.1f} s  rows "
                          f"{sum(x.size for x in picks.values()):,}  disk reads "
                          f"{nvme.get('reads', 0):,}", flush=True)  # fmt: skip
    return 0



if __name__ == "__main__":
    sys.exit(main())
