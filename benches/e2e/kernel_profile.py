"""Where an arm's step spends device time, kernel by kernel: one extra, unmeasured run of a phase
under ``torch.profiler`` (CUDA kernels on a GPU, operators on the CPU), summed per kernel name
and written as CSV rows (``arm, phase, batch, kernel, calls, total_us, per_step_us, mean_us``).
``engram_offload.py`` runs it for every arm after a phase's rounds when
``ENGRAM_OFFLOAD_KERNEL_PROFILE=DIR`` is set (``DIR/kernels-SHAPE.csv``): what (d)'s gather kernel
takes in the model's company, beside (b)'s and (c)'s, which the timeline (when rows were in
place) cannot say. On a GPU the CSV also has the arm's busiest host operators (CUDA API calls
among them: launches, event waits, copies), named ``host:NAME``: what its step costs the host,
which waits for the device at a step's end. ``ENGRAM_OFFLOAD_KERNEL_TRACE=ARMS`` (e.g. ``b,d``,
or ``all``) also writes those arms' profiles as Chrome traces, ``DIR/trace-SHAPE-ARM-PHASE-BATCH
.json.gz``: the step's timeline, host and device, gap by gap.
"""

from __future__ import annotations

import csv
import gzip
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

COLUMNS = ["arm", "phase", "batch", "kernel", "calls", "total_us", "per_step_us", "mean_us"]
#: Kernels kept per arm and phase, the longest in total first.
TOP = 40
#: Host operators kept per arm and phase on a GPU, the longest in total first.
TOP_HOST = 20


def traced_arms() -> set[str]:
    """The arms ``ENGRAM_OFFLOAD_KERNEL_TRACE`` names (``all``: every arm)."""
    return {a.strip() for a in os.environ.get("ENGRAM_OFFLOAD_KERNEL_TRACE", "").split(",")} - {""}


def write_trace(prof: Any, path: Path) -> None:
    """``prof`` as a gzipped Chrome trace at ``path``."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(raw))
        with raw.open("rb") as src, gzip.open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)


def kernel_times(prof: Any, cuda: bool) -> list[tuple[str, int, float]]:
    """``(name, calls, total us)`` per kernel or copy on the device (per operator on the CPU) of a
    finished profile, the longest in total first."""
    out = []
    for event in prof.key_averages():
        if cuda:  # the device's own events (kernels, copies), not the operators that queued them
            if getattr(event, "device_type", None) != torch.autograd.DeviceType.CUDA:
                continue
            total = event.self_device_time_total
        else:
            total = event.self_cpu_time_total
        if total > 0:
            out.append((event.key, int(event.count), float(total)))
    return sorted(out, key=lambda x: -x[2])


def profile_run(run, arm: str, source: Any, seed: int, out_dir: Path, shape: str) -> Path:
    """Runs ``run``'s phase (an ``offload_runner.Runner``) once more for ``source``'s ``arm``
    under the profiler and appends its :data:`TOP` kernels to ``out_dir/kernels-SHAPE.csv``
    (a header first when the file is new); returns the file."""
    cuda = bool(run.cuda)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    run.sync_device()
    with torch.profiler.profile(activities=activities) as prof:
        run.run(source, seed)
        run.sync_device()
    phase = run.phase
    steps = max(1, phase.steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"kernels-{shape}.csv"
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(COLUMNS)
        rows = kernel_times(prof, cuda)[:TOP]
        if cuda:
            rows += [(f"host:{n}", c, t) for n, c, t in kernel_times(prof, False)[:TOP_HOST]]
        for name, calls, total in rows:
            writer.writerow([arm, phase.kind, phase.batch, name, calls, f"{total:.1f}",
                             f"{total / steps:.2f}", f"{total / max(1, calls):.2f}"])  # fmt: skip
    traced = traced_arms()
    if arm in traced or "all" in traced:
        name = f"trace-{shape}-{arm.replace(':', '_')}-{phase.kind}-{phase.batch}.json.gz"
        write_trace(prof, out_dir / name)
    return path
