#!/usr/bin/env python3
"""Rebuilds testdata/ from the project's full shared Engram data and traces (see testdata/README.md).

    python3 scripts/cut_testdata.py /path/to/shared
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

CASE_TOKENS = 300
SAMPLE_TOKENS = 16_000


def main(shared: Path) -> None:
    out = Path(__file__).resolve().parents[1] / "testdata"
    (out / "engram").mkdir(parents=True, exist_ok=True)
    (out / "traces").mkdir(parents=True, exist_ok=True)
    for name in ["dsv3-compress.npy", "vectors-engram27b.json"]:
        shutil.copyfile(shared / "engram" / name, out / "engram" / name)
    demo = json.loads((shared / "engram" / "vectors-demo.json").read_text(encoding="utf-8"))
    for case in demo["cases"]:
        if case["text"] is None and len(case["raw_ids"]) > CASE_TOKENS:
            case["raw_ids"] = case["raw_ids"][:CASE_TOKENS]
            case["compressed_ids"] = case["compressed_ids"][:CASE_TOKENS]
            for layer in case["layers"].values():
                layer["hash"] = layer["hash"][:CASE_TOKENS]
                layer["row_ids"] = layer["row_ids"][:CASE_TOKENS]
    (out / "engram" / "vectors-demo.json").write_text(
        json.dumps(demo, separators=(",", ":")), encoding="utf-8"
    )
    tokens = np.fromfile(shared / "traces" / "en.tokens.u32", dtype="<u4")
    docs = np.fromfile(shared / "traces" / "en.docs.u64", dtype="<u8")
    last = max(int(np.searchsorted(docs, SAMPLE_TOKENS, side="right")) - 1, 1)
    tokens[: int(docs[last])].tofile(out / "traces" / "en-sample.tokens.u32")
    docs[: last + 1].tofile(out / "traces" / "en-sample.docs.u64")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
