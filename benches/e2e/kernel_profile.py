"""Where an arm's step spends device time, kernel by kernel: one extra, unmeasured run of a phase
under ``torch.profiler`` (CUDA kernels on a GPU, operators on the CPU), summed per kernel name
and written as CSV rows (``arm, phase, batch, kernel, calls, total_us, per_step_us, mean_us``).
``engram_offload.py`` runs it for every arm after a phase's rounds when
``ENGRAM_OFFLOAD_KERNEL_PROFILE=DIR`` is set (``DIR/kernels-SHAPE.csv``): what (d)'s gather kernel
takes in the model's company, beside (b)'s and (c)'s, which the timeline (when rows were in
place) cannot say.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch

COLUMNS = ["arm", "phase", "batch", "kernel", "calls", "total_us", "per_step_us", "mean_us"]
#: Kernels kept per arm and phase, the longest in total first.
TOP = 40


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
        for name, calls, total in kernel_times(prof, cuda)[:TOP]:
            writer.writerow([arm, phase.kind, phase.batch, name, calls, f"{total:.1f}",
                             f"{total / steps:.2f}", f"{total / max(1, calls):.2f}"])  # fmt: skip
    return path
