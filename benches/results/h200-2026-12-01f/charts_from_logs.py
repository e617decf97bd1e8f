"""Charts of call 3/4's every-arm runs, drawn from their logs (the runs hit their time limit
before writing JSON): per arm its median round's tok/s; arm (e) its first round's (later rounds
re-read the same tokens, see 10f)."""
import re, sys, statistics as st
from collections import defaultdict
sys.path.insert(0, "benches/e2e")
import offload_report as report
D = "benches/results/h200-2026-12-01f"
for log, shape, extra in [(f"{D}/call3/full4b.main.log", "dense-4b", None),
                          (f"{D}/call4/full8b.main.log", "dense-8b", None)]:
    runs = defaultdict(list)
    for line in open(log):
        m = re.search(r"arm \((\w)\) (decode|prefill) (\d+): ([\d,\.]+) tok/s", line)
        if m:
            runs[(m[2], int(m[3]), m[1])].append(float(m[4].replace(",", "")))
    details = []
    for (ph, b, arm), xs in runs.items():
        tok = xs[0] if arm == "e" else st.median(xs)
        details.append({"arm": arm, "phase": ph, "batch": b, "tok_per_s": tok})
    details.sort(key=lambda d: (d["phase"] != "decode", d["batch"], d["arm"]))
    title = f"Engram offload, {shape} on NVIDIA H200 (10f; (e): first round)"
    name = log.split("/")[-1].replace(".main.log", ".svg")
    open(f"{D}/{log.split('/')[-2]}/{name}", "w").write(report.svg_chart(details, title, shape))
    print(name, len(details))
