"""What arm (e)'s tiers of call 1 (BENCHMARKS.md 10i, item 5) could hit, offline: the harness's
own phases of that run (4 rounds, 96 decode steps, 6 prefill chunks, the whole English trace),
its warm (every held-out token) and its tier sizes (the VRAM tier's rows per table as the store
sizes a quarter of the tables; the RAM band's 11,317,005 rows, as call 1's log reports), each
tier holding exactly the warm's rows it was given. Per phase kind: the share of the rows looked
up that the VRAM tier's top rows hold, that the RAM band holds, and the rest (the disk's), and
of the rest, the share the warm never saw.

    target/test-venv/bin/python benches/results/h200-2026-12-02/scripts/tier_estimate.py \
        /work/shared/traces/en.tokens.u32
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "benches" / "e2e"))
import engram_offload as eo  # noqa: E402

RAM_BAND_ROWS = 11_317_005


def main(trace_path: str) -> None:
    args = eo.parse_args(["--rounds", "4", "--decode-steps", "96", "--prefill-chunks", "6",
                          "--engram-vocab", "1000000", "--trace", trace_path])  # fmt: skip
    trace = np.fromfile(args.trace, dtype="<u4").astype(np.int64)
    cmap = np.load(args.compress, allow_pickle=False)
    hasher = eo.NgramHasher(eo.v41_layout(args.engram_vocab, cmap), cmap)
    by_round, _ = eo.round_phases(trace, args, args.rounds)
    phases = [p for rounds in by_round for p in rounds]
    warm = eo.warm_rows(trace, phases, hasher, 5_000_000)
    rows = list(hasher.table_rows)
    budget = sum(rows) * 264 // 4
    vram = [eo.vram_tier_rows(budget * n // sum(rows), 264) for n in rows]
    for kind in ("decode", "prefill"):
        in_vram = in_band = unseen = looked = 0
        for p in (p for p in phases if p.kind == kind):
            ids = eo.position_row_ids(trace, p.positions.reshape(-1), hasher)
            for layer, (ranked, n, k) in enumerate(zip(warm.rows, rows, vram, strict=True)):
                tier = np.zeros(n, bool)
                tier[ranked[:k]] = True
                band = np.zeros(n, bool)
                band[ranked[k : k + RAM_BAND_ROWS * n // sum(rows)]] = True
                seen = np.zeros(n, bool)
                seen[ranked] = True
                x = ids[:, layer].reshape(-1)
                in_vram += int(tier[x].sum())
                in_band += int(band[x].sum())
                unseen += int((~seen[x]).sum())
                looked += x.size
        rest = looked - in_vram - in_band
        print(f"{kind}: {looked:,} rows; VRAM tier {in_vram / looked:.1%}, RAM band "
              f"{in_band / looked:.1%}, neither (disk) {rest / looked:.1%}, of which the warm "
              f"never saw {unseen / rest:.1%}")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
