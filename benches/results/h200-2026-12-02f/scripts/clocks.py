"""Lines up the GPU's sampled clocks and power (session18.sh's `clocked`) with the harness's rounds.

`python3 clocks.py DIR` reads every NAME.clocks.csv in DIR beside NAME.main.log (the harness's
log: "[ t s] arm (x) phase N: R tok/s" closes a round that began at the log line before it,
and "started at E s since the epoch" gives the wall clock of 0.0 s) and prints, per arm and
phase, the median over its rounds of: the round's median SM clock (MHz), its mean power (W),
the share of its samples with a slowdown reason other than idle set, and tok/s; then, per
round, the arm's tok/s beside its SM clock, so that a swing of the rounds can be read against
the clocks.
"""

import re
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

ROUND = re.compile(r"^\[\s*([\d.]+)s\] arm \(([^)]+)\) (\w+) (\d+): ([\d,.]+) tok/s")
STAMP = re.compile(r"^\[\s*([\d.]+)s\]")
STARTED = re.compile(r"started at ([\d.]+) s since the epoch")
IDLE = 0x1  # clocks_event_reasons: GPU idle


def local_seconds(text: str) -> float:
    """A timestamp nvidia-smi wrote (its local time), as seconds on a naive UTC scale."""
    text = text.strip()
    if "." in text:  # date's %N gives nanoseconds, strptime's %f at most microseconds
        whole, frac = text.rsplit(".", 1)
        text = f"{whole}.{frac[:6]}"
    for fmt in ("%Y/%m/%d %H:%M:%S.%f", "%Y/%m/%d %H:%M:%S"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
    raise ValueError(f"not an nvidia-smi timestamp: {text!r}")


def read_samples(path: Path) -> list[tuple[float, float, float, int]]:
    """(epoch s, SM MHz, W, slowdown reasons) per sample."""
    lines = path.read_text().splitlines()
    header = lines[0].split()
    epoch, local = float(header[2]), local_seconds(f"{header[4]} {header[5]}")
    shift = epoch - local
    samples = []
    for line in lines[1:]:
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 6:
            continue
        try:
            t = local_seconds(cells[0]) + shift
            reasons = int(cells[6], 16) if len(cells) > 6 else 0
            samples.append((t, float(cells[1]), float(cells[3]), reasons))
        except ValueError:
            continue
    return samples


def read_rounds(path: Path) -> list[tuple[str, str, float, float, float]]:
    """(arm, phase and batch, start epoch s, end epoch s, tok/s) per round."""
    started, previous, rounds = None, None, []
    for line in path.read_text().splitlines():
        if started is None and (m := STARTED.search(line)):
            started = float(m.group(1))
        stamp = STAMP.match(line)
        if stamp is None or started is None:
            continue
        t = started + float(stamp.group(1))
        if (m := ROUND.match(line)) and previous is not None:
            rate = float(m.group(5).replace(",", ""))
            rounds.append((m.group(2), f"{m.group(3)} {m.group(4)}", previous, t, rate))
        previous = t
    return rounds


def main() -> None:
    folder = Path(sys.argv[1])
    for clocks in sorted(folder.rglob("*.clocks.csv")):
        name = clocks.name.removesuffix(".clocks.csv")
        logs = list(folder.rglob(f"{name}.main.log"))
        if not logs:
            print(f"{name}: no {name}.main.log beside {clocks}")
            continue
        samples, rounds = read_samples(clocks), read_rounds(logs[0])
        print(f"## {name}: {len(samples)} samples, {len(rounds)} rounds")
        per_arm: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
        for arm, phase, start, end, rate in rounds:
            inside = [s for s in samples if start <= s[0] <= end]
            if not inside:
                continue
            mhz = statistics.median(s[1] for s in inside)
            watts = statistics.fmean(s[2] for s in inside)
            slowed = sum(1 for s in inside if s[3] & ~IDLE) / len(inside)
            per_arm.setdefault((phase, arm), []).append((mhz, watts, slowed, rate))
            print(f"  {phase:>10} ({arm:>4}) {rate:10,.1f} tok/s  SM {mhz:6.0f} MHz  "
                  f"{watts:5.0f} W  slowed {slowed:4.0%}  ({len(inside)} samples)")
        print(f"  {'phase':>10} {'arm':>6} {'tok/s':>10} {'SM MHz':>7} {'W':>5} {'slowed':>7}")
        for (phase, arm), rows in sorted(per_arm.items()):
            med = [statistics.median(r[i] for r in rows) for i in range(4)]
            print(f"  {phase:>10} {arm:>6} {med[3]:10,.1f} {med[0]:7.0f} {med[1]:5.0f} "
                  f"{med[2]:7.0%}")


if __name__ == "__main__":
    main()
