"""Where each arm's decode step goes, from the harness's JSON (BENCHMARKS.md 10j): per run, arm
and batch, the step, the layers before layer 1 (``seg0``), when layer 1's rows were in place and
how late against that segment's end (``late1``, above 0: the layer waited), when layer 14's
were, the layers 1-13 (``mid``), the rest (``tail``), and seg0 + mid against arm (b)'s, in us
(the means over the measured steps the harness writes as ``needed_us`` and ``ready_us``).

    python3 benches/results/h200-2026-12-02b/scripts/timeline.py benches/results/h200-2026-12-02b
"""

import json
import sys
from pathlib import Path


def main(root: Path) -> None:
    for path in sorted(root.glob("call*/*-offload-*.json")):
        result = json.loads(path.read_text())
        entries = result["details"] + result.get("d_variants", {}).get("results", [])
        run = f"{path.parent.name}/{path.name.split('-offload')[0]}"
        for batch in sorted({e["batch"] for e in entries if e["phase"] == "decode"}):
            rows = [e for e in entries if e["phase"] == "decode" and e["batch"] == batch]
            b = next((e for e in rows if e["arm"] == "b"), None)
            print(f"{run} decode {batch}")
            print("  arm        step   seg0  ready1  late1  ready14    mid   tail  seg0+mid-(b)")
            for e in rows:
                step = e["step_ms"] * 1000
                needed, ready = e["needed_us"], e.get("ready_us") or [None, None]
                mid, tail = needed[1] - needed[0], step - needed[1]
                late = "" if ready[0] is None else f"{ready[0] - needed[0]:+.0f}"
                r1 = "" if ready[0] is None else f"{ready[0]:.0f}"
                r14 = "" if ready[1] is None else f"{ready[1]:.0f}"
                vs_b = "" if b is None else f"{needed[1] - b['needed_us'][1]:+.0f}"
                print(f"  {e['arm']:8s} {step:7.0f} {needed[0]:6.0f} {r1:>7s} {late:>6s} {r14:>8s} "
                      f"{mid:6.0f} {tail:6.0f} {vs_b:>13s}")  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]))
