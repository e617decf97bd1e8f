#!/usr/bin/env python3
"""Is a VRAM tier slower to read when another process shares it over CUDA IPC (BENCHMARKS.md 10n)?

In the offload harness the worker's tiered gather took 274 us for a layer's 6,144 rows with
every row in the store's VRAM tier, where the same kernel over a tier built in its own process
took 15.5 us (``tiered_kernel_cost.py``, its ids replayed). This script times, with fresh ids
each launch (as a decode step reads new rows), the plain gather of a table in VRAM (arm (b)'s)
and the tiered gather with all hits over a tier of ``--hot`` rows, three ways:

- ``torch``: the table and the tier in torch's allocations of this process;
- ``raw``: copies of them in ``cuMemAlloc`` buffers of this process (how the store allocates);
- ``ipc``: those buffers opened over CUDA IPC by a second process, as the worker opens the
  store's tier (``cuIpcOpenMemHandle``), timed there;
- ``vmm``: copies in ``cuMemCreate`` allocations of this process (exportable as file
  descriptors, :mod:`engram_store.torch.vmm`);
- ``vmm-imported``: those allocations imported and mapped by a second process, timed there.

A line per case and way: rows, case, way, device us per launch (CUDA-graph replays of
``--reps`` launches, median of ``--runs``). GPU only.

    python benches/e2e/ipc_tier_cost.py --rows 6144 --hot 24000000
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "client" / "python"))
from tiered_kernel_cost import build_tier, cycling, device_us  # noqa: E402

from engram_store.torch import V41_ROWS, gather_dequantize, tiered  # noqa: E402
from engram_store.torch.rows import _CudaArray  # noqa: E402
from engram_store.torch.tiered import TieredRows, tiered_gather_dequantize  # noqa: E402
from engram_store.torch.vmm import SharedDeviceMemory  # noqa: E402

#: The tier's arrays shared, with their numpy type strings.
TIER_PARTS = {"arena": "|u1", "keys": "<i8", "slots": "<i4", "tags": "<i8", "control": "<i4"}


class _Handle(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_char * 64)]


def libcuda() -> ctypes.CDLL:
    """The driver API calls this script makes, typed."""
    lib = ctypes.CDLL("libcuda.so.1")
    lib.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
    lib.cuMemcpyDtoD_v2.argtypes = [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_size_t]
    lib.cuIpcGetMemHandle.argtypes = [ctypes.POINTER(_Handle), ctypes.c_uint64]
    lib.cuIpcOpenMemHandle_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), _Handle, ctypes.c_uint]
    return lib


def check(rc: int, what: str) -> None:
    """RuntimeError naming ``what`` unless ``rc`` is CUDA_SUCCESS."""
    if rc != 0:
        raise RuntimeError(f"{what} failed with CUDA error {rc}")


def raw_copy(lib: ctypes.CDLL, t: torch.Tensor) -> tuple[int, bytes]:
    """A ``cuMemAlloc`` copy of ``t`` (contiguous, on the device): its address and IPC handle."""
    ptr = ctypes.c_uint64()
    nbytes = t.numel() * t.element_size()
    check(lib.cuMemAlloc_v2(ctypes.byref(ptr), max(1, nbytes)), "cuMemAlloc")
    torch.cuda.synchronize()
    check(lib.cuMemcpyDtoD_v2(ptr.value, t.data_ptr(), nbytes), "cuMemcpyDtoD")
    handle = _Handle()
    check(lib.cuIpcGetMemHandle(ctypes.byref(handle), ptr.value), "cuIpcGetMemHandle")
    return ptr.value, ctypes.string_at(ctypes.addressof(handle), 64)  # NULs included


def vmm_copy(lib: ctypes.CDLL, t: torch.Tensor, device: int) -> SharedDeviceMemory:
    """A ``cuMemCreate`` copy of ``t`` (contiguous, on the device), exportable."""
    nbytes = t.numel() * t.element_size()
    memory = SharedDeviceMemory.create(max(1, nbytes), device)
    torch.cuda.synchronize()
    check(lib.cuMemcpyDtoD_v2(memory.ptr, t.data_ptr(), nbytes), "cuMemcpyDtoD")
    return memory


def view(ptr: int, shape: tuple[int, ...], typestr: str, device: torch.device) -> torch.Tensor:
    """A tensor over device memory at ``ptr``."""
    return torch.as_tensor(_CudaArray(ptr, shape, typestr), device=device)


def fresh_ids(hot: np.ndarray, n: int, sets: int, device: torch.device) -> list[torch.Tensor]:
    """``sets`` id sets of ``n`` rows drawn from ``hot`` (seeded: both processes draw alike)."""
    rng = np.random.default_rng(11)
    return [torch.from_numpy(rng.choice(hot, size=n)).view(-1, 24).to(device) for _ in range(sets)]


def cases(table: torch.Tensor, tier: TieredRows, ids: list[torch.Tensor], out: torch.Tensor):
    """(name, launch) of each case timed over ``table`` and ``tier`` with id sets ``ids``."""
    return [
        ("plain gather, table in VRAM, fresh ids",
         cycling(lambda i: gather_dequantize(table, i, out), ids)),
        ("tiered all hits, fresh ids",
         cycling(lambda i: tiered_gather_dequantize(tier, i, out), ids)),
        ("tiered all hits, one set replayed",
         lambda: tiered_gather_dequantize(tier, ids[0], out)),
    ]  # fmt: skip


def time_cases(way: str, table: torch.Tensor, tier: TieredRows, hot: np.ndarray, args) -> None:
    """Prints each case's device us per launch over ``table`` and ``tier``, ``way`` named."""
    device = table.device
    for n in args.rows:
        ids = fresh_ids(hot, n, args.reps, device)
        out = torch.empty(n // 24, 24, V41_ROWS.head_dim, dtype=torch.bfloat16, device=device)
        for name, launch in cases(table, tier, ids, out):
            us = device_us(launch, args.reps, args.runs)
            print(f"{n:6d} {name:40s} {way:6s} {us:8.1f}", flush=True)


def child(spec_path: Path, args) -> int:
    """The second process: opens the shared buffers and times the cases over them."""
    spec = json.loads(spec_path.read_text())
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    torch.zeros(1, device=device)  # the device's primary context, current on this thread
    lib = libcuda()

    def open_part(name: str, shape: tuple[int, ...], typestr: str) -> torch.Tensor:
        handle = _Handle()
        ctypes.memmove(ctypes.addressof(handle), bytes.fromhex(spec["handles"][name]), 64)
        ptr = ctypes.c_uint64()
        check(lib.cuIpcOpenMemHandle_v2(ctypes.byref(ptr), handle, 1), "cuIpcOpenMemHandle")
        return view(ptr.value, shape, typestr, device)

    imported: list[SharedDeviceMemory] = []

    def import_part(name: str, shape: tuple[int, ...], typestr: str) -> torch.Tensor:
        fd, size = spec["fds"][name]
        imported.append(SharedDeviceMemory.import_fd(fd, size, 0))
        return view(imported[-1].ptr, shape, typestr, device)

    row_bytes, rows, capacity, buckets = (spec[k] for k in ("row_bytes", "rows", "capacity",
                                                             "buckets"))  # fmt: skip
    hot = np.load(spec["hot"])
    for way, part in (("ipc", open_part), ("vmm-imported", import_part)):
        table = part("table", (rows, row_bytes), "|u1")
        tier = TieredRows(
            host=table,
            arena=part("arena", (capacity, row_bytes), "|u1"),
            keys=part("keys", (2 * buckets,), "<i8"),
            slots=part("slots", (2 * buckets,), "<i4"),
            tags=part("tags", (capacity,), "<i8"),
            control=part("control", (2,), "<i4"),
            buckets=buckets,
        )
        time_cases(way, table, tier, hot, args)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="6144", help="rows per gather, comma-separated")
    p.add_argument("--table-rows", type=int, default=24_003_916)
    p.add_argument("--hot", type=int, default=24_000_000, help="rows in the VRAM tier")
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.rows = [int(x) for x in args.rows.split(",")]
    if any(n <= 0 or n % 24 for n in args.rows):
        p.error(f"--rows must be positive multiples of 24 (a token's rows), got {args.rows}")
    if not torch.cuda.is_available() or tiered.triton is None:
        print("ipc_tier_cost.py needs a CUDA device and Triton", file=sys.stderr)
        return 2
    if args.child is not None:
        return child(args.child, args)
    device = torch.device("cuda", 0)
    rng = np.random.default_rng(7)
    table = torch.randint(0, 256, (args.table_rows, V41_ROWS.row_bytes), dtype=torch.uint8,
                          device=device)  # fmt: skip
    hot = rng.choice(args.table_rows, size=args.hot, replace=False).astype(np.int64)
    tier = build_tier(table, hot, device)
    print(f"table {args.table_rows:,} rows x {V41_ROWS.row_bytes} B; tier {hot.size:,} rows in "
          f"{tier.buckets:,} buckets; {torch.cuda.get_device_name(device)}")  # fmt: skip
    print(f"{'rows':>6} {'case':40s} {'way':6s} {'us':>8}")
    time_cases("torch", table, tier, hot, args)
    lib = libcuda()
    raw, handles = {}, {}
    for name, t in [("table", table)] + [(k, getattr(tier, k)) for k in TIER_PARTS]:
        raw[name], handles[name] = raw_copy(lib, t.contiguous())
    raw_tier = TieredRows(
        host=view(raw["table"], tuple(table.shape), "|u1", device),
        **{k: view(raw[k], tuple(getattr(tier, k).shape), TIER_PARTS[k], device)
           for k in TIER_PARTS},
        buckets=tier.buckets,
    )  # fmt: skip
    time_cases("raw", raw_tier.host, raw_tier, hot, args)
    shared = {name: vmm_copy(lib, t.contiguous(), device.index or 0)
              for name, t in [("table", table)] + [(k, getattr(tier, k)) for k in TIER_PARTS]}
    vmm_tier = TieredRows(
        host=view(shared["table"].ptr, tuple(table.shape), "|u1", device),
        **{k: view(shared[k].ptr, tuple(getattr(tier, k).shape), TIER_PARTS[k], device)
           for k in TIER_PARTS},
        buckets=tier.buckets,
    )  # fmt: skip
    time_cases("vmm", vmm_tier.host, vmm_tier, hot, args)
    fds = {name: (m.export_fd(), m.size) for name, m in shared.items()}
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "hot.npy", hot)
        spec = {
            "handles": {k: h.hex() for k, h in handles.items()},
            "row_bytes": V41_ROWS.row_bytes, "rows": args.table_rows,
            "capacity": int(tier.arena.shape[0]), "buckets": tier.buckets,
            "hot": str(Path(tmp) / "hot.npy"), "fds": fds,
        }  # fmt: skip
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        argv = [sys.executable, __file__, "--child", str(Path(tmp) / "spec.json"),
                "--rows", ",".join(map(str, args.rows)), "--reps", str(args.reps),
                "--runs", str(args.runs)]  # fmt: skip
        done = subprocess.run(argv, timeout=600, pass_fds=[fd for fd, _ in fds.values()])
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
