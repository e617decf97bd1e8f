"""Baselines for the VRAM tier on the same GPU, in the same session as `engram-bench gpu`:
torch.index_select of random 160-byte rows from a 32 GiB table (batch 1M and 64K), pinned and
pageable host-to-device bandwidth, and a CPU gather into pinned memory plus H2D copy.
Prints one JSON object. Usage: python3 benches/gpu/torch_baselines.py [--table-gib 32]"""

import argparse
import json
import time

import torch


def timed(fn, iters):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / iters


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--table-gib", type=float, default=32.0)
    ap.add_argument("--row-bytes", type=int, default=160)
    ap.add_argument("--iters", type=int, default=50)
    a = ap.parse_args()
    dev = torch.device("cuda")
    rows = int(a.table_gib * (1 << 30)) // a.row_bytes
    table = torch.empty((rows, a.row_bytes // 2), dtype=torch.bfloat16, device=dev)
    out = {"gpu": torch.cuda.get_device_name(0), "table_rows": rows, "row_bytes": a.row_bytes}
    for n in (1 << 16, 1 << 20):
        idx = torch.randint(0, rows, (n,), device=dev)
        s = timed(lambda: torch.index_select(table, 0, idx), a.iters)
        out[f"index_select_rows_per_s_{n}"] = n / s
    nbytes = 1 << 30
    src = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    dst = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    out["device_copy_bytes_per_s"] = 2 * nbytes / timed(lambda: dst.copy_(src), 20)
    pinned = torch.empty(nbytes, dtype=torch.uint8).pin_memory()
    out["pinned_h2d_bytes_per_s"] = nbytes / timed(lambda: dst.copy_(pinned, non_blocking=True), 10)
    pageable = torch.empty(nbytes, dtype=torch.uint8)
    out["pageable_h2d_bytes_per_s"] = nbytes / timed(lambda: dst.copy_(pageable), 5)
    # CPU gather of 64K random rows of a host table into pinned memory, then H2D.
    host_rows = 1 << 24
    host = torch.empty((host_rows, a.row_bytes), dtype=torch.uint8)
    n = 1 << 16
    hidx = torch.randint(0, host_rows, (n,))
    pin = torch.empty((n, a.row_bytes), dtype=torch.uint8).pin_memory()
    gout = torch.empty((n, a.row_bytes), dtype=torch.uint8, device=dev)
    torch.set_num_threads(16)

    def cpu_path():
        torch.index_select(host, 0, hidx, out=pin)
        gout.copy_(pin, non_blocking=True)

    out["cpu_gather_pinned_h2d_rows_per_s_65536"] = n / timed(cpu_path, 20)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
