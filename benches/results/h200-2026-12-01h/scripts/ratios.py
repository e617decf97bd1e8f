"""Per-round ratios of session 11's runs (BENCHMARKS.md 10h), from the harness's JSON: for each
run, phase and batch, the median (and mean, and lowest) over rounds of each arm's tok/s over
(b)'s (when the run has (b)) and over (c)'s in the same round, and of each variant of (d) over (d).

    python3 benches/results/h200-2026-12-01h/scripts/ratios.py benches/results/h200-2026-12-01h
"""

import json
import statistics
import sys
from pathlib import Path


def rounds(result: dict) -> dict[tuple[str, str, int], list[float]]:
    out = {}
    for entry in result["details"] + result.get("d_variants", {}).get("results", []):
        out[(entry["arm"], entry["phase"], entry["batch"])] = entry["rounds_tok_per_s"]
    return out


def summary(num: list[float], den: list[float]) -> str:
    ratios = [n / d for n, d in zip(num, den, strict=True)]
    return (
        f"{statistics.median(ratios):.3f} (mean {statistics.mean(ratios):.3f}, "
        f"low {min(ratios):.3f})"
    )


def main(root: Path) -> None:
    for path in sorted(root.glob("call*/*-offload-*.json")):
        by = rounds(json.loads(path.read_text()))
        run = f"{path.parent.name}/{path.name.split('-offload')[0]}"
        for phase, batch in sorted({(p, b) for _, p, b in by}):
            arms = sorted(a for a, p, b in by if (p, b) == (phase, batch))
            base = "b" if "b" in arms else "c"  # runs without (b) report against (c) alone
            print(f"{run} {phase} {batch} ({len(by[(base, phase, batch)])} rounds)")
            for arm in arms:
                if arm == base:
                    continue
                line = ""
                if base == "b":
                    line += f"  {arm}/b {summary(by[(arm, phase, batch)], by[('b', phase, batch)])}"
                if arm != "c":
                    line += f"  {arm}/c {summary(by[(arm, phase, batch)], by[('c', phase, batch)])}"
                if arm.startswith("d:"):
                    line += f"  {arm}/d {summary(by[(arm, phase, batch)], by[('d', phase, batch)])}"
                print(line)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]))
