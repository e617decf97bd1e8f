"""Session 10's dense-8b chart (BENCHMARKS.md 10g), from two runs: decode from call 3's every-arm
run (its log: the time limit stopped it in prefill, before it wrote JSON), prefill from call 4's
prefill-alone run (its JSON). Per arm its median round's tok/s. Run from the repository root."""

import json
import re
import statistics as st
import sys
from collections import defaultdict

sys.path.insert(0, "benches/e2e")
import offload_report as report  # noqa: E402

D = "benches/results/h200-2026-12-01g"
runs = defaultdict(list)
for line in open(f"{D}/call3/full8b.main.log"):
    m = re.search(r"arm \((\w)\) (decode) (\d+): ([\d,\.]+) tok/s", line)
    if m:
        runs[(m[2], int(m[3]), m[1])].append(float(m[4].replace(",", "")))
details = [
    {"arm": arm, "phase": ph, "batch": b, "tok_per_s": st.median(xs)}
    for (ph, b, arm), xs in runs.items()
]
prefill = json.load(open(f"{D}/call4/pre8b-offload-dense-8b.json"))
details += [{k: d[k] for k in ("arm", "phase", "batch", "tok_per_s")} for d in prefill["arms"]]
details.sort(key=lambda d: (d["phase"] != "decode", d["batch"], d["arm"]))
title = "Engram offload, dense-8b on NVIDIA H200 (10g: decode call 3, prefill call 4)"
open(f"{D}/full8b.svg", "w").write(report.svg_chart(details, title, "dense-8b"))
print(len(details), "bars")
