"""End-to-end delivery of rows into GPU memory, against a running engram-store with a VRAM tier.

For one table and batches of ``--batch`` row ids (``--hot-fraction`` of them drawn from a hot set
of ``--hot-rows`` rows that fits the VRAM tier, the rest uniformly over the table), it measures
how fast the rows land in a torch CUDA tensor along three paths:

- ``cuda_ipc``: ``LookupInto`` a CUDA IPC region (the tensor itself): the server gathers VRAM hits
  into it on the GPU and copies the misses from host memory;
- ``inline``: ``Lookup``, the rows in the reply -> numpy -> a pinned torch buffer -> ``.cuda()``;
- ``shm``: ``LookupInto`` a host shared-memory region -> ``torch.from_numpy`` -> ``.cuda()``,
  non-blocking from the region itself when it can be page-locked (``cudaHostRegister``), else
  through a pinned buffer;
- ``channel``: the sidecar channel into the same CUDA IPC region: the request written into a slot
  of the shared-memory ring, the stream made to wait on the slot's completion word
  (``cuStreamWaitValue32``), an event recorded after the wait and synchronized: the time from
  submit to the moment work on the stream can see the rows (stream-visible completion).

Each timed call ends with the rows in the device tensor (streams synchronized). Timed runs
alternate between the paths, and every timed run draws batches of its own
(``--distinct-batches``, none repeated within a run), so the cold ids are fresh and have not been
counted into the VRAM tier by earlier calls. With ``--warm-ram`` the whole table is read once
first, so rows that miss VRAM are served from the RAM tier. Before timing it warms the VRAM tier
(prefetches and looks up the hot set, then waits for the background refresh
until the VRAM hit fraction of a batch stops rising), and it checks once that every path yields
the bytes of ``Lookup``. It prints one JSON object: rows/s, p50/p99 latency per path (and the
server's own p50/p99 per path, from ``Stats``), the VRAM hit fraction measured during the
``cuda_ipc`` runs, the ratio of ``cuda_ipc`` to the better host path, and what the client spends
encoding one batch's ids (a cost all paths share).

Needs torch (with CUDA), numpy, grpcio and this repository's ``engram_store`` package
(``pip install ./client/python``, or run from the repository root: the script finds it). The
server must run on this machine, on the GPU given by ``--device``, built with ``--features cuda``
and started with ``--gpu-budget``, over a table made by e.g.::

    engram-store synth --name hot --rows 10000000 --dim 80 --dtype bf16 --data DATA
    engram-store serve --data DATA --ram-cache 4GiB --gpu-budget 8GiB &
    python3 benches/gpu/lookup_into_bench.py --addr 127.0.0.1:50051 --table hot --warm-ram
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

try:
    import engram_store  # noqa: F401
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "client" / "python"))

from engram_store import Client
from engram_store.errors import EngramStoreError

#: Table dtype name -> torch dtype attribute (fp8 is moved as bytes).
TORCH_DTYPES = {
    "float32": "float32",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "int8": "int8",
    "uint8": "uint8",
    "float8_e4m3fn": "uint8",
}


def fail(message: str) -> NoReturn:
    print(json.dumps({"error": message}), flush=True)
    print(f"lookup_into_bench: {message}", file=sys.stderr)
    sys.exit(2)


def percentiles(seconds: list[float]) -> dict[str, float]:
    s = np.sort(np.asarray(seconds))
    return {
        "p50_us": float(np.percentile(s, 50) * 1e6),
        "p99_us": float(np.percentile(s, 99) * 1e6),
    }


def client_encode_us(ids: np.ndarray, reps: int = 20) -> dict[str, float]:
    """Median microseconds the client spends turning one batch of ids into request bytes, a
    cost every path pays before the server sees the request: as a list of Python ints in the
    varint field ``ids`` (``ids``), and as the bytes of the array in ``ids_le`` where this
    client's protocol has it (``ids_le``)."""
    from engram_store.v1 import store_pb2 as pb

    def median_us(fn) -> float:
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return float(np.median(times) * 1e6)

    def as_varints() -> bytes:
        return pb.LookupRequest(table="t", ids=ids.tolist()).SerializeToString()

    def as_le_bytes() -> bytes:
        return pb.LookupRequest(table="t", ids_le=ids.astype("<u8").tobytes()).SerializeToString()

    out = {"ids": median_us(as_varints)}
    if "ids_le" in pb.LookupRequest.DESCRIPTOR.fields_by_name:
        out["ids_le"] = median_us(as_le_bytes)
    return out


def make_batches(rows: int, args: argparse.Namespace) -> tuple[np.ndarray, list[np.ndarray]]:
    """The hot set and ``--distinct-batches`` batches drawn from it and from the whole table."""
    rng = np.random.default_rng(args.seed)
    hot_rows = min(args.hot_rows, rows)
    hot = np.unique(rng.integers(0, rows, size=int(hot_rows * 1.2) + 16, dtype=np.int64))
    hot = rng.permutation(hot)[:hot_rows]
    return hot, draw_batches(hot, rows, args, rng)


def draw_batches(
    hot: np.ndarray, rows: int, args: argparse.Namespace, rng: np.random.Generator
) -> list[np.ndarray]:
    """``--distinct-batches`` batches of ``--batch`` ids: ``--hot-fraction`` of them from ``hot``,
    the rest uniform over the table, shuffled."""
    batches = []
    n_hot = round(args.batch * args.hot_fraction)
    for _ in range(args.distinct_batches):
        ids = np.concatenate(
            [
                hot[rng.integers(0, hot.size, size=n_hot)],
                rng.integers(0, rows, size=args.batch - n_hot, dtype=np.int64),
            ]
        )
        batches.append(rng.permutation(ids).astype(np.uint64))
    return batches


def timed(fn, iters: int, batches: list[np.ndarray]) -> tuple[float, list[float], list[Any]]:
    """Runs ``fn(ids)`` ``iters`` times over the batches; returns rows/s, latencies, results."""
    lat, results = [], []
    start = time.perf_counter()
    rows = 0
    for i in range(iters):
        ids = batches[i % len(batches)]
        t = time.perf_counter()
        results.append(fn(ids))
        lat.append(time.perf_counter() - t)
        rows += ids.size
    return rows / (time.perf_counter() - start), lat, results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--addr", required=True, help="server host:port (on this machine)")
    ap.add_argument("--table", help="table to read [default: the first one listed]")
    ap.add_argument("--batch", type=int, default=65536, help="rows per request [65536]")
    ap.add_argument("--iters", type=int, default=50, help="timed calls per path [50]")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per path; medians [3]")
    ap.add_argument(
        "--hot-rows", type=int, default=1_000_000, help="hot set; must fit the VRAM tier [1000000]"
    )
    ap.add_argument("--hot-fraction", type=float, default=0.9, help="ids from the hot set [0.9]")
    ap.add_argument(
        "--distinct-batches",
        type=int,
        default=50,
        help="batches per timed run, drawn afresh for each run of each path [50]",
    )
    ap.add_argument(
        "--warm-ram",
        action="store_true",
        help="read the whole table once first (LookupInto shared memory), so that rows missing "
        "from VRAM are served from the RAM tier",
    )
    ap.add_argument("--device", type=int, default=0, help="CUDA device = the server's [0]")
    ap.add_argument(
        "--warmup-timeout", type=float, default=120.0, help="seconds to warm the VRAM tier [120]"
    )
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per call [60]")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if not 0.0 <= args.hot_fraction <= 1.0 or args.batch <= 0 or args.iters <= 0:
        fail("--hot-fraction must be in [0, 1]; --batch and --iters positive")

    try:
        import torch
    except ImportError:
        fail("torch is not installed")
    if not torch.cuda.is_available():
        fail("torch sees no CUDA device")
    device = torch.device("cuda", args.device)
    torch.cuda.set_device(device)

    client = Client(args.addr, timeout=args.timeout)
    try:
        tables = client.list_tables()
    except EngramStoreError as e:
        fail(f"cannot reach the server at {args.addr}: {e}")
    if not tables:
        fail(f"the server at {args.addr} serves no table")
    name = args.table or tables[0].name
    info = next((t for t in tables if t.name == name), None)
    if info is None:
        fail(f"no table {name!r}; served: {[t.name for t in tables]}")
    tdtype = getattr(torch, TORCH_DTYPES.get(info.dtype.name, "uint8"))
    row_dim = info.row_dim if tdtype != torch.uint8 else info.row_bytes
    hot, batches = make_batches(info.rows, args)
    out = torch.empty((args.batch, row_dim), dtype=tdtype, device=device)
    out_bytes = out.view(torch.uint8).view(-1)

    try:
        cuda_region = client.register_cuda_tensor(out)
    except (EngramStoreError, ValueError) as e:
        fail(
            f"RegisterRegion(cuda_ipc) failed: {e}. The server needs --features cuda, "
            f"--gpu-budget and --gpu-device {args.device}, on this machine"
        )
    try:
        shm = client.shm_region(args.batch * info.row_bytes)
    except (EngramStoreError, OSError) as e:
        cuda_region.close()
        fail(f"RegisterRegion(shm) failed: {e}")
    shm_u8 = shm.array(np.uint8)
    shm_t = torch.from_numpy(shm_u8)
    registered = False
    try:
        rc = torch.cuda.cudart().cudaHostRegister(shm_u8.ctypes.data, shm_u8.nbytes, 0)
        registered = int(rc) == 0
    except Exception:  # noqa: BLE001 - any failure means: stage through pinned memory
        registered = False
    pinned = torch.empty(args.batch * info.row_bytes, dtype=torch.uint8).pin_memory()
    pinned_np = pinned.numpy()
    stream = torch.cuda.current_stream(device)

    def via_cuda_ipc(ids):
        return client.lookup_into(cuda_region, name, ids)

    channel = client.open_channel(cuda_region, table=name, capacity=args.batch, slots=2)
    turn = [0]
    seen = torch.cuda.Event()

    def via_channel(ids):
        slot = turn[0]
        turn[0] ^= 1
        channel.submit(ids, slot)
        channel.stream_wait(slot, stream)
        seen.record(stream)
        seen.synchronize()
        return channel.wait(slot)

    def via_inline(ids):
        rows = client.lookup(name, ids)
        n = rows.nbytes
        pinned_np[:n] = rows.reshape(-1).view(np.uint8)
        out_bytes[:n].copy_(pinned[:n], non_blocking=True)
        stream.synchronize()
        return rows.shape[0]

    def via_shm(ids):
        stream.synchronize()  # the previous copy out of the region is done before it is rewritten
        w = client.lookup_into(shm, name, ids)
        n = w.bytes_written
        if registered:
            out_bytes[:n].copy_(shm_t[:n], non_blocking=True)
        else:
            pinned_np[:n] = shm_u8[:n]
            out_bytes[:n].copy_(pinned[:n], non_blocking=True)
        stream.synchronize()
        return int(w)

    report: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(device),
        "addr": args.addr,
        "table": name,
        "table_rows": info.rows,
        "row_bytes": info.row_bytes,
        "batch": args.batch,
        "hot_rows": int(hot.size),
        "hot_fraction_requested": args.hot_fraction,
        "shm_page_locked": registered,
    }
    try:
        # Correctness first: each path must deliver the bytes of Lookup.
        ids = batches[0]
        expected = client.lookup(name, ids).reshape(-1).view(np.uint8).tobytes()
        for label, fn in (
            ("cuda_ipc", via_cuda_ipc),
            ("inline", via_inline),
            ("shm", via_shm),
            ("channel", via_channel),
        ):
            out.zero_()
            fn(ids)
            torch.cuda.synchronize(device)
            if out_bytes.cpu().numpy().tobytes() != expected:
                fail(f"path {label} delivered rows that differ from Lookup")
        report["verified"] = True

        tier = client.stats().tiers.get("gpu")
        hot_bytes = hot.size * info.row_bytes
        if tier is not None and tier["capacity_bytes"] and hot_bytes > 0.7 * tier["capacity_bytes"]:
            fail(
                f"the hot set ({hot.size} rows, {hot_bytes} B) does not fit the VRAM tier "
                f"({tier['capacity_bytes']} device bytes): lower --hot-rows"
            )

        if args.warm_ram:
            ram = client.stats().tiers.get("ram")
            if ram is None or ram["capacity_bytes"] < 1.1 * info.rows * info.row_bytes:
                fail("--warm-ram: the RAM tier cannot hold the whole table")
            t = time.monotonic()
            chunk = min(info.rows, 1 << 20)
            with client.shm_region(chunk * info.row_bytes) as warm:
                for i in range(0, info.rows, chunk):
                    ids = np.arange(i, min(i + chunk, info.rows), dtype=np.uint64)
                    client.lookup_into(warm, name, ids)
            report["warm_ram_s"] = round(time.monotonic() - t, 1)
            report["ram_resident_rows"] = client.stats().tiers["ram"]["resident_rows"]

        # Warm the VRAM tier: bring the hot set to RAM, make it the most counted, wait for the
        # refresh, until a batch's VRAM hit fraction stops rising.
        client.prefetch(name, hot).result(timeout=args.timeout)
        deadline = time.monotonic() + args.warmup_timeout
        best, stalls, history = 0.0, 0, []
        while time.monotonic() < deadline:
            for chunk in np.array_split(hot, max(1, hot.size // args.batch)):
                client.lookup(name, chunk)
            time.sleep(1.5)
            w = via_cuda_ipc(batches[0])
            frac = w.gpu_hits / max(1, int(w))
            history.append(round(frac, 4))
            if frac >= args.hot_fraction * 0.98 or (frac <= best + 0.005 and frac > 0):
                stalls += 1
            else:
                stalls = 0
            best = max(best, frac)
            if stalls >= 2:
                break
        report["warmup_hit_fractions"] = history
        if best == 0.0:
            fail(
                f"no VRAM hit after {args.warmup_timeout:.0f} s of warm-up; hit fractions {history}"
            )

        gpu_tier = client.stats().tiers.get("gpu")
        if gpu_tier is not None:
            report["gpu_tier"] = {
                k: gpu_tier[k] for k in ("resident_rows", "resident_bytes", "capacity_bytes")
            }

        paths = {
            "cuda_ipc": via_cuda_ipc,
            "inline": via_inline,
            "shm": via_shm,
            "channel": via_channel,
        }
        for fn in paths.values():
            fn(batches[0])  # one untimed call each
        # Runs alternate between the paths (run 1 of each, then run 2 of each, ...) so a drift
        # of the machine's state weighs on all of them. Every run gets batches of its own: cold
        # ids drawn afresh, never counted into the VRAM tier by earlier runs.
        rng = np.random.default_rng(args.seed + 1)
        acc: dict[str, dict[str, list]] = {
            k: {"rates": [], "lats": [], "hits": [], "misses": [], "p50": [], "p99": [], "ram": []}
            for k in paths
        }
        gpu_hits = rows_ipc = 0
        for _ in range(args.runs):
            for label, fn in paths.items():
                run_batches = draw_batches(hot, info.rows, args, rng)
                client.stats(reset=True)
                rate, lat, res = timed(fn, args.iters, run_batches)
                stats = client.stats()
                a = acc[label]
                a["rates"].append(rate)
                a["lats"].extend(lat)
                tier = stats.tiers.get("gpu", {})
                a["hits"].append(tier.get("hits", 0))
                a["misses"].append(tier.get("misses", 0))
                a["p50"].append(stats.request_latency.get("p50_us"))
                a["p99"].append(stats.request_latency.get("p99_us"))
                a["ram"].append(stats.tiers.get("ram", {}).get("hit_rate"))
                if label == "cuda_ipc":
                    gpu_hits += sum(r.gpu_hits for r in res)
                    rows_ipc += sum(int(r) for r in res)
                if label == "channel":
                    a.setdefault("gpu_hits", []).append(sum(r.gpu_hits for r in res))
                    a.setdefault("rows", []).append(sum(int(r) for r in res))
        results: dict[str, dict[str, Any]] = {}
        for label, a in acc.items():
            looked = sum(a["hits"]) + sum(a["misses"])
            results[label] = {
                "rows_per_s": float(np.median(a["rates"])),
                "rows_per_s_runs": [round(r) for r in a["rates"]],
                **percentiles(a["lats"]),
                # The server's VRAM tier serves the host paths too (gathered to host memory):
                # the fraction of this path's rows it served.
                "server_gpu_hit_rate": sum(a["hits"]) / looked if looked else None,
                "server_ram_hit_rate": a["ram"],
                # Time inside the server's handler (after the request is decoded), median over
                # runs: the rest of a call's latency is the client, gRPC and, for host paths,
                # the copy to the GPU.
                "server_p50_us": float(np.median(a["p50"])),
                "server_p99_us": float(np.median(a["p99"])),
            }
        report["paths"] = results
        report["client_encode_us"] = client_encode_us(batches[0])
        report["vram_hit_fraction"] = gpu_hits / max(1, rows_ipc)
        best_host = max(("inline", "shm"), key=lambda k: results[k]["rows_per_s"])
        report["best_host_path"] = best_host
        report["cuda_ipc_over_best_host"] = (
            results["cuda_ipc"]["rows_per_s"] / results[best_host]["rows_per_s"]
        )
        ch = acc["channel"]
        results["channel"]["vram_hit_fraction"] = sum(ch.get("gpu_hits", [0])) / max(
            1, sum(ch.get("rows", [0]))
        )
        report["channel_over_cuda_ipc"] = (
            results["channel"]["rows_per_s"] / results["cuda_ipc"]["rows_per_s"]
        )
    except EngramStoreError as e:
        fail(f"server call failed: {e}")
    finally:
        if registered:
            torch.cuda.cudart().cudaHostUnregister(shm_u8.ctypes.data)
        channel.close()
        cuda_region.close()
        shm.close()
        client.close()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
