"""Every Triton gather kernel of engram_store.torch compiled for the H200 (sm_90) on this machine,
no GPU needed: Triton's whole pipeline (IR, PTX, ptxas to a cubin) for each launch configuration
the package uses. The interpreter tests check what the kernels compute; this one that they build
for the GPU they run on (a kernel that only the interpreter accepts would otherwise first fail on
the GPU machine). Skipped without triton, or where Triton cannot compile for CUDA here."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch", reason="engram_store.torch needs torch (pip install torch)")
pytest.importorskip("triton", reason="the kernels need triton (comes with CUDA torch)")

# Each kernel, with the constexpr values of each way the package launches it.
CONFIGS = {
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


def test_every_gather_kernel_compiles_for_sm90():
    script = textwrap.dedent(
        f"""
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        from engram_store.torch import rows, tiered

        # Argument types by name, as the package passes them (sizes as 64-bit integers).
        POINTERS = {{
            "src": "*u8", "host": "*u8", "arena": "*u8", "staged": "*u8", "hits": "*u8",
            "keys": "*i64", "tags": "*i64", "ids": "*i64", "errors": "*i64", "misses": "*i64",
            "listed": "*i64", "slots": "*i32", "control": "*i32", "stage_index": "*i32",
            "miss_list": "*i32", "miss_count": "*i32", "count": "*i32", "out": "*bf16",
        }}
        ROW = {{"ROW_BYTES": 264, "DIM": 256, "BLOCK": 32, "BLOCK_ROWS": 16}}
        target = GPUTarget("cuda", 90, 32)
        built = []
        for name, configs in {CONFIGS!r}.items():
            module, attr = name.split(".")
            fn = getattr({{"rows": rows, "tiered": tiered}}[module], attr)
            for config in configs:
                constexprs, signature = {{}}, {{}}
                for param in fn.params:
                    if param.is_constexpr:
                        value = config.get(param.name, ROW.get(param.name))
                        assert value is not None, (name, param.name)
                        constexprs[param.name] = value
                        signature[param.name] = "constexpr"
                    else:
                        signature[param.name] = POINTERS.get(param.name, "i64")
                source = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
                kernel = triton.compile(source, target=target, options={{"num_warps": 4}})
                assert kernel.asm.get("cubin"), (name, config)
                built.append(name)
        print(len(built), "built")
        """
    )
    env = {**os.environ, "TRITON_DEFAULT_FP_FUSION": "1"}
    env.pop("TRITON_INTERPRET", None)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    if done.returncode != 0 and "ptxas" in done.stderr and "not found" in done.stderr:
        pytest.skip(f"Triton cannot compile for CUDA here: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr[-4000:]
    want = sum(len(c) for c in CONFIGS.values())
    assert done.stdout.strip().endswith(f"{want} built"), done.stdout
