#!/usr/bin/env python3
"""The host side of a staged gather (``MappedTransport.gather_staged``): how long the transport's
thread takes to copy a gather's misses out of the shared table file with ``index_select``, and
whether a Python thread beside it keeps running (the GIL released) or waits.

A file of ``--rows`` random 264-B rows is written in ``--dir`` (a memory file system, as the
server's ``--share-memory``) and mapped read-only, its page tables filled at once
(``MAP_POPULATE``, as ``cudaHostRegister`` pins them in the worker) or, with ``--lazy``, on first
touch; then ``--reps`` copies of each ``--gathers`` count of random rows. No GPU needed.

    python benches/e2e/staged_copy_cost.py --rows 15000000 --gathers 1400,27500
"""

from __future__ import annotations

import argparse
import mmap
import os
import tempfile
import threading
import time
import warnings

import numpy as np
import torch

ROW_BYTES = 264


def write_table(path: str, rows: int) -> None:
    """``rows`` random rows of ``ROW_BYTES`` at ``path``, a million at a time."""
    block = 1_000_000
    chunk = np.random.default_rng(1).integers(0, 256, (block, ROW_BYTES), dtype=np.uint8)
    with open(path, "wb") as f:
        for first in range(0, rows, block):
            f.write(chunk[: min(block, rows - first)].tobytes())


def copy_ms(host: torch.Tensor, ids: torch.Tensor) -> float:
    out = torch.empty((ids.numel(), ROW_BYTES), dtype=torch.uint8)
    started = time.perf_counter()
    torch.index_select(host, 0, ids, out=out)
    return (time.perf_counter() - started) * 1e3


def beside_a_thread(host: torch.Tensor, ids: torch.Tensor) -> tuple[float, float]:
    """The copy's time while another Python thread counts, and how many counts per ms that
    thread made during the copy against its rate alone (1.0: the GIL was never held from it)."""
    counts = [0]
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            counts[0] += 1

    thread = threading.Thread(target=count)
    thread.start()
    time.sleep(0.05)
    c0, t0 = counts[0], time.perf_counter()
    time.sleep(0.02)  # the main thread idle: the counting thread's pace alone
    c1, t1 = counts[0], time.perf_counter()
    ms = copy_ms(host, ids)
    c2, t2 = counts[0], time.perf_counter()
    stop.set()
    thread.join()
    return ms, ((c2 - c1) / (t2 - t1)) / ((c1 - c0) / (t1 - t0))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=15_000_000, help="rows in the file (264 B each)")
    p.add_argument("--gathers", default="1400,27500", help="rows per copy, comma-separated")
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--dir", default="/dev/shm", help="where the file is written (and removed)")
    p.add_argument("--lazy", action="store_true", help="page tables filled on first touch")
    args = p.parse_args()
    try:
        gathers = [int(g) for g in args.gathers.split(",") if g]
    except ValueError:
        p.error(f"--gathers takes comma-separated row counts, got {args.gathers!r}")
    if args.rows < 1 or not gathers or min(gathers) < 1:
        p.error("--rows and every --gathers count must be at least 1")
    fd_path = tempfile.mkstemp(prefix="staged-copy-", dir=args.dir)
    os.close(fd_path[0])
    path = fd_path[1]
    try:
        write_table(path, args.rows)
        fd = os.open(path, os.O_RDONLY)
        flags = mmap.MAP_SHARED | (0 if args.lazy else mmap.MAP_POPULATE)
        try:
            mapping = mmap.mmap(fd, args.rows * ROW_BYTES, flags, mmap.PROT_READ)
        finally:
            os.close(fd)
        with warnings.catch_warnings():  # read-only memory: nothing writes through it
            warnings.simplefilter("ignore", UserWarning)
            host = torch.from_numpy(np.frombuffer(mapping, dtype=np.uint8)).view(-1, ROW_BYTES)
        rng = np.random.default_rng(2)
        print(f"{args.rows:,} rows of {ROW_BYTES} B in {args.dir}, page tables "
              f"{'on first touch' if args.lazy else 'filled'}, torch threads "
              f"{torch.get_num_threads()}, {os.cpu_count()} cores")  # fmt: skip
        for n in gathers:
            alone = [copy_ms(host, torch.from_numpy(rng.integers(0, args.rows, n)))
                     for _ in range(args.reps)]  # fmt: skip
            beside = [beside_a_thread(host, torch.from_numpy(rng.integers(0, args.rows, n)))
                      for _ in range(args.reps)]  # fmt: skip
            print(f"{n:>8,} rows: median {np.median(alone):.3f} ms "
                  f"({np.median(alone) * 1e3 / n:.3f} us a row); beside a counting Python "
                  f"thread {np.median([b[0] for b in beside]):.3f} ms, that thread at "
                  f"{np.median([b[1] for b in beside]):.0%} of its pace alone")  # fmt: skip
        del host
        mapping.close()
    finally:
        os.unlink(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
