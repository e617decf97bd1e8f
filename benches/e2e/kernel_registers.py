#!/usr/bin/env python3
"""Every Triton gather kernel of engram_store.torch compiled for a CUDA GPU on this machine (no GPU
needed: Triton's whole pipeline, IR to PTX to ptxas' cubin), in each launch configuration the
package uses and specialized as the JIT would for a decode-256 layer, with the registers a
thread and the spills ptxas reports (``ptxas -v``) and its global loads and stores (a static
count in the PTX: fewer for the same rows means wider, vectorized ones). Registers
set how many programs share an SM, so how many rows a latency-bound gather has in flight.

    python benches/e2e/kernel_registers.py [--arch 90] [--warps 4]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "client" / "python"))

#: Each kernel (module.attribute), with the constexpr values of each way the package launches it.
CONFIGS: dict[str, list[dict[str, object]]] = {
    "rows._gather_dequantize_kernel": [{"HAS_IDS": True}, {"HAS_IDS": False}],
    "tiered._tiered_kernel": [
        {"PROBE": 8, "STAGED": False, "CHECKED": False, "REPORT": False},
        {"PROBE": 8, "STAGED": True, "CHECKED": True, "REPORT": True},
    ],
    "tiered._split_hits_kernel": [{"PROBE": 8, "CHECKED": True}],
    "tiered._split_misses_kernel": [{}],
    "tiered._misses_kernel": [
        {"PROBE": 8, "LIST": False, "BLOCK_ROWS": 64},
        {"PROBE": 8, "LIST": True},
    ],
    "tiered._fetch_rows_kernel": [{"SCALES": 8}],
    "tiered._fetched_fill_kernel": [{"CHECKED": True}, {"CHECKED": False}],
}

#: Argument types by name, as the package passes them (sizes as 64-bit integers).
POINTERS = {
    "src": "*u8", "host": "*u8", "arena": "*u8", "staged": "*u8", "hits": "*u8",
    "keys": "*i64", "tags": "*i64", "ids": "*i64", "errors": "*i64", "misses": "*i64",
    "listed": "*i64", "slots": "*i32", "control": "*i32", "stage_index": "*i32",
    "miss_list": "*i32", "miss_count": "*i32", "count": "*i32", "out": "*bf16",
}  # fmt: skip
#: V4.1's row format and the default block of rows.
ROW = {"ROW_BYTES": 264, "DIM": 256, "BLOCK": 32, "BLOCK_ROWS": 16}
#: The integer arguments of one layer's gather at decode batch 256 in the offload harness (two
#: Engram layers' ids side by side, heads contiguous in the output, the tier and table sizes of
#: its dense-4b run), which Triton's JIT specializes as it would there: a 1 becomes a constant,
#: a multiple of 16 is known to be one. (Every pointer is taken as 16-byte aligned, as torch's
#: allocations and the page-locked table are.)
DECODE_256 = {
    "ids_token_stride": 48, "n_rows": 6144, "n_blocks": 384, "heads": 24, "out_head_rows": 1,
    "out_token_rows": 24, "buckets": 1 << 23, "capacity": 4_887_590, "table_rows": 24_003_916,
    "staged_offset": 1 << 30, "host_offset": -(1 << 40),
}  # fmt: skip


def compile_all(arch: int = 90, warps: int = 4):
    """``(name, config, compiled kernel)`` for every entry of :data:`CONFIGS`, compiled for
    ``sm_<arch>``; raises Triton's compilation error for a kernel that does not build."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from engram_store.torch import rows, tiered

    modules = {"rows": rows, "tiered": tiered}
    target = GPUTarget("cuda", arch, 32)
    for name, configs in CONFIGS.items():
        module, attr = name.split(".")
        fn = getattr(modules[module], attr)
        for config in configs:
            constexprs, signature, attrs = {}, {}, {}
            for i, param in enumerate(fn.params):
                typical = DECODE_256.get(param.name)
                if param.is_constexpr or typical == 1:
                    constexprs[param.name] = config.get(param.name, ROW.get(param.name, typical))
                    signature[param.name] = "constexpr"
                    continue
                signature[param.name] = POINTERS.get(param.name, "i64")
                if param.name in POINTERS or (typical is not None and typical % 16 == 0):
                    attrs[(i,)] = [["tt.divisibility", 16]]
            source = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
            yield name, config, triton.compile(source, target=target, options={"num_warps": warps})


def registers(ptx: str, arch: int) -> tuple[int, int]:
    """Registers a thread and spill stores (bytes) ptxas reports for ``ptx`` on ``sm_<arch>``."""
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
        done = subprocess.run(
            [get_ptxas(arch).path, "-v", "--gpu-name", gpu, f.name, "-o", "/dev/null"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    regs = re.findall(r"Used (\d+) registers", done.stderr)
    spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
    return int(regs[-1]), int(spills[-1]) if spills else 0


def memory_instructions(ptx: str) -> tuple[int, int]:
    """Global loads and stores in ``ptx`` (static count: fewer, wider ones are vectorized)."""
    return len(re.findall(r"\bld\.global", ptx)), len(re.findall(r"\bst\.global", ptx))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability x10 (H200: 90)")
    p.add_argument("--warps", type=int, default=4, help="warps a program (the package's: 4)")
    args = p.parse_args()
    print(f"{'kernel':32s} {'config':58s} {'regs':>5} {'spills':>6} {'loads':>5} {'stores':>6}")
    for name, config, kernel in compile_all(args.arch, args.warps):
        ptx = kernel.asm["ptx"]
        regs, spills = registers(ptx, args.arch)
        loads, stores = memory_instructions(ptx)
        shown = ",".join(f"{k}={v}" for k, v in config.items()) or "-"
        print(f"{name:32s} {shown:58s} {regs:5d} {spills:6d} {loads:5d} {stores:6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
