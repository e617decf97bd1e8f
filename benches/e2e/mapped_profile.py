"""Where a decode step's Engram lookup spends its time with the mapped transport, against arm (c)'s
pinned-table gather, on the same tables and ids as ``engram_offload.py`` (GPU only).

Per batch size and path, over the steps of a decode phase: the kernels' device time for both
layers (events around them, nothing else on the device), the host time of queueing them (what
delays the model's next launch), and the backend's ``prefetch`` and ``rows`` host time; plus the
share of rows the store's VRAM tier holds. Paths: (c) ``gather_dequantize`` over the pinned
tables; (d) ``MappedTransport.gather`` (probe, VRAM or host, dequantize).

    python benches/e2e/mapped_profile.py --data /tmp/eo --server-bin target/release/engram-store \\
        --trace shared/traces/en.tokens.u32 --engram-vocab 1000000
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engram_offload  # noqa: E402, F401 (the client package from this checkout, torch settings)
from offload_cli import parse_args  # noqa: E402
from offload_phases import Phase, decode_phase, prefill_phase  # noqa: E402
from offload_tables import HostTables, Tables, prepare_tables  # noqa: E402
from offload_warm import warm_vram  # noqa: E402

from engram_store import Client  # noqa: E402
from engram_store.local_server import LocalServer  # noqa: E402
from engram_store.torch import (  # noqa: E402
    V41_ROWS,
    EngramLayer,
    EngramRowBackend,
    MappedTransport,
    cuda_view,
    gather_dequantize,
    tiered_gather_dequantize,
)


def median_us(xs: list[float]) -> float:
    return float(np.median(xs)) * 1e6


def main() -> int:
    args = parse_args(sys.argv[1:])
    if args.store_warm_tokens is None:
        args.store_warm_tokens = 1 << 20
    device = torch.device("cuda", 0)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", flush=True)

    tables = prepare_tables(args, device, log)
    trace = np.fromfile(args.trace, dtype="<u4").astype(np.int64)
    batches = args.decode_batches
    phases = [decode_phase(trace, b, args.decode_steps, args.decode_warmup) for b in batches]
    prefill = prefill_phase(trace, args.prefill_chunk, args.prefill_chunks, 0)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    programs = sms // 2
    host = HostTables(tables, device)
    views = [cuda_view(t) for t in host.get()]
    ram = int(tables.nbytes * 1.25) + (8 << 20)
    flags = ("--share-memory", args.share_dir, "--gpu-budget", str(tables.nbytes // 4),
             "--gpu-device", "0", "--io-engine", args.io_engine)  # fmt: skip
    with LocalServer(args.server_bin, tables.data_dir, ram_cache=str(ram), args=flags) as server:
        client = Client(server.addr)
        transport = MappedTransport(client, record_every=0, max_programs=programs)
        t = time.perf_counter()
        mapped = [transport.table(name, device) for name in tables.names]
        log(f"shared and mapped in {time.perf_counter() - t:.1f}s")
        ctx = {"args": args, "tables": tables, "log": log, "trace": trace,
               "phases": [*phases, prefill], "device": device}  # fmt: skip
        warm_vram(client, "d", ctx)
        tags = [set(m.rows_view.tags.cpu().numpy().tolist()) - {-1} for m in mapped]
        for phase in phases:
            ids = row_ids(phase, tables, device)
            in_vram = np.mean([
                np.isin(i[:, j].cpu().numpy(), np.fromiter(tags[j], np.int64)).mean()
                for i in ids[:20] for j in range(2)
            ])  # fmt: skip
            out = [torch.zeros(phase.tokens_per_step, 24, 256, dtype=torch.bfloat16, device=device)
                   for _ in range(2)]  # fmt: skip

            def c_path(i, out=out):
                for j in range(2):
                    gather_dequantize(views[j], i[:, j], out[j], max_programs=programs)

            def d_path(i, out=out):
                for j in range(2):
                    transport.gather(tables.names[j], i[:, j], out[j], V41_ROWS)

            for name, fn in (("c", c_path), ("d", d_path), ("c", c_path), ("d", d_path)):
                device_s, host_s = [], []
                for i in ids:
                    torch.cuda.synchronize()
                    a = torch.cuda.Event(enable_timing=True)
                    b = torch.cuda.Event(enable_timing=True)
                    a.record()
                    t = time.perf_counter()
                    fn(i)
                    host_s.append(time.perf_counter() - t)
                    b.record()
                    torch.cuda.synchronize()
                    device_s.append(a.elapsed_time(b) / 1e3)
                print(f"batch {phase.batch:4} ({name}): kernels {median_us(device_s):7.1f} us "
                      f"(p90 {np.percentile(device_s, 90) * 1e6:7.1f}), queueing them "
                      f"{median_us(host_s):6.1f} us on the host")  # fmt: skip
            pairs = zip(tables.hasher.layer_ids, tables.names, strict=True)
            layers = [EngramLayer(lid, n) for lid, n in pairs]
            static = torch.empty_like(ids[0])  # an engine's ids buffer: the same every step
            for graphs, stagger in ((False, False), (True, False), (True, True)):
                backend = EngramRowBackend(transport, layers, max_tokens=phase.tokens_per_step,
                                           device=device, stagger_gathers=stagger)  # fmt: skip
                backend.graph_gathers = graphs
                pre, rows = [], []
                for i in ids:
                    static.copy_(i)
                    torch.cuda.synchronize()
                    t = time.perf_counter()
                    backend.prefetch(hash_ids=static, out=out)
                    pre.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    for j, lid in enumerate(tables.hasher.layer_ids):
                        backend.rows(lid, out=out[j])
                    rows.append(time.perf_counter() - t)
                if graphs and not stagger:  # where a replayed prefetch's host time goes
                    host_breakdown(backend, static, ids, out)
                torch.cuda.synchronize()
                backend.close()
                print(f"batch {phase.batch:4}: backend (graphs {graphs}, stagger {stagger}) "
                      f"prefetch "
                      f"{median_us(pre[4:]):6.1f} us, rows (2 layers) {median_us(rows[4:]):6.1f} "
                      f"us on the host")  # fmt: skip
            print(f"batch {phase.batch:4}: {in_vram:.1%} of rows in the VRAM tier")
        prefill_sweep(prefill, tables, device, views, mapped, programs)
        transport.close()
        client.close()
    host.drop()
    return 0


def host_breakdown(backend, static: torch.Tensor, ids: list[torch.Tensor], out, top: int = 14):
    """The backend's ``prefetch`` (gathers replayed as graphs) under cProfile: the functions
    taking its host time, heaviest first, per call (what delays the model's next launch)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    calls = 0
    for i in ids:
        static.copy_(i)
        torch.cuda.synchronize()
        profiler.enable()
        backend.prefetch(hash_ids=static, out=out)
        profiler.disable()
        calls += 1
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]  # by own (tottime)
    print(f"  host time per prefetch by function (own time, {calls} calls):")
    for (file, line, name), (_, ncalls, tottime, cumtime, _) in rows:
        where = f"{Path(file).name}:{line}" if line else file
        print(f"    {tottime / calls * 1e6:7.1f} us own, {cumtime / calls * 1e6:7.1f} us with "
              f"callees, {ncalls / calls:4.1f} calls  {name} ({where})")  # fmt: skip


def row_ids(phase: Phase, tables: Tables, device: torch.device) -> list[torch.Tensor]:
    """Per step of ``phase``: its row ids ``[tokens, layers, columns]`` on ``device``."""
    return [
        torch.from_numpy(
            tables.hasher.row_ids(phase.tokens[s], phase.context[s]).reshape(
                phase.tokens_per_step, 2, -1
            )
        ).to(device)
        for s in range(phase.warmup, phase.steps)
    ]


#: Kernel shapes the prefill sweep tries: (programs per half the SMs, rows per block, warps).
PREFILL_SHAPES = ((1, 16, 4), (2, 16, 4), (4, 16, 4), (1, 32, 4), (2, 32, 8), (4, 32, 4),
                  (1, 64, 8), (2, 64, 8), (4, 64, 8), (8, 16, 4))  # fmt: skip


def prefill_sweep(phase, tables, device, views, mapped, programs: int) -> None:
    """A prefill chunk's gathers (both layers, the chunk's rows) alone on the device, per path
    and kernel shape: (c) at the harness's grid, (d) at each of ``PREFILL_SHAPES``."""
    ids = row_ids(phase, tables, device)
    out = [torch.zeros(phase.tokens_per_step, 24, 256, dtype=torch.bfloat16, device=device)
           for _ in range(2)]  # fmt: skip
    in_vram = np.mean([
        np.isin(i[:, j].cpu().numpy(), m.rows_view.tags.cpu().numpy()).mean()
        for i in ids for j, m in enumerate(mapped)
    ])  # fmt: skip

    def timed(fn) -> float:
        times = []
        for _ in range(3):
            for i in ids:
                torch.cuda.synchronize()
                a = torch.cuda.Event(enable_timing=True)
                b = torch.cuda.Event(enable_timing=True)
                a.record()
                fn(i)
                b.record()
                torch.cuda.synchronize()
                times.append(a.elapsed_time(b) / 1e3)
        return median_us(times)

    def c_path(i):
        for j in range(2):
            gather_dequantize(views[j], i[:, j], out[j], max_programs=programs)

    print(f"prefill chunk of {phase.tokens_per_step} tokens ({ids[0].numel():,} rows, "
          f"{in_vram:.1%} in the VRAM tier): (c) {timed(c_path):7.1f} us, {programs} programs")
    for per, block_rows, warps in PREFILL_SHAPES:
        def d_path(i, per=per, block_rows=block_rows, warps=warps):
            for j in range(2):
                tiered_gather_dequantize(mapped[j].rows_view, i[:, j], out[j],
                                         max_programs=programs * per, block_rows=block_rows,
                                         num_warps=warps)  # fmt: skip
        print(f"prefill (d) {programs * per:4} programs, {block_rows:3} rows a block, "
              f"{warps} warps: {timed(d_path):7.1f} us")


if __name__ == "__main__":
    sys.exit(main())
